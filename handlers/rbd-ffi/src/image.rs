//! [`Image`]: an open RBD image (`rbd_image_t`).
//!
//! Opening, closing, stat and the exclusive-lock calls block (they talk to
//! the OSDs); the `aio_*` methods ([`crate::aio`]) only submit. `Image` is
//! `Send + Sync`: librbd's image handles are thread-safe.

use std::ffi::CStr;
use std::ptr;
use std::sync::Arc;

use libc::{c_char, c_int};

use crate::error::{check, Error};
use crate::rados::{cstring, IoCtx};
use crate::sys;

/// What `rbd_stat` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    /// Size in bytes.
    pub size: u64,
    /// Size of the image's objects in bytes (`1 << order`).
    pub obj_size: u64,
}

/// An open image; closed when dropped (`rbd_close`, which waits for the
/// image's operations in flight and releases its exclusive lock).
#[derive(Debug)]
pub struct Image {
    handle: sys::rbd_image_t,
    ioctx: Arc<IoCtx>,
    name: String,
}

// SAFETY: librbd's image handles may be used from any thread, also
// concurrently; this type owns the handle and closes it once.
unsafe impl Send for Image {}
// SAFETY: as above.
unsafe impl Sync for Image {}

/// Exclusive lock owners (`rbd_lock_get_owners` returns at most this many
/// for an exclusive lock: one).
const MAX_OWNERS: usize = 8;

impl Image {
    /// Opens image `name` of the pool `ioctx`, read-write (or read-only:
    /// no watch, no lock, for a look).
    pub fn open(ioctx: Arc<IoCtx>, name: &str, read_only: bool) -> Result<Self, Error> {
        let n = cstring("image", name)?;
        let mut handle: sys::rbd_image_t = ptr::null_mut();
        // SAFETY: the pool handle is live (we keep the Arc); `n` outlives
        // the call; `handle` is a valid out-pointer; no snapshot (NULL).
        let ret = unsafe {
            if read_only {
                sys::rbd_open_read_only(ioctx.raw(), n.as_ptr(), &mut handle, ptr::null())
            } else {
                sys::rbd_open(ioctx.raw(), n.as_ptr(), &mut handle, ptr::null())
            }
        };
        check(|| format!("cannot open image '{name}'"), ret.into())?;
        Ok(Self {
            handle,
            ioctx,
            name: name.to_owned(),
        })
    }

    /// The image's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool the image lives in.
    pub fn ioctx(&self) -> &Arc<IoCtx> {
        &self.ioctx
    }

    pub(crate) fn raw(&self) -> sys::rbd_image_t {
        self.handle
    }

    /// Size and object size.
    pub fn stat(&self) -> Result<ImageInfo, Error> {
        // SAFETY: an all-zero `rbd_image_info_t` is valid (integers and
        // char arrays).
        let mut info: sys::rbd_image_info_t = unsafe { std::mem::zeroed() };
        // SAFETY: live handle; `info` is writable and as large as we say.
        let ret = unsafe {
            sys::rbd_stat(
                self.handle,
                &mut info,
                std::mem::size_of::<sys::rbd_image_info_t>(),
            )
        };
        check(|| format!("cannot stat image '{}'", self.name), ret.into())?;
        Ok(ImageInfo {
            size: info.size,
            obj_size: info.obj_size,
        })
    }

    /// Size in bytes (refreshed: a resize by another client shows).
    pub fn size(&self) -> Result<u64, Error> {
        let mut size = 0u64;
        // SAFETY: live handle; valid out-pointer.
        let ret = unsafe { sys::rbd_get_size(self.handle, &mut size) };
        check(
            || format!("cannot read the size of image '{}'", self.name),
            ret.into(),
        )?;
        Ok(size)
    }

    /// Whether the image has the exclusive-lock feature.
    pub fn has_exclusive_lock(&self) -> Result<bool, Error> {
        let mut features = 0u64;
        // SAFETY: live handle; valid out-pointer.
        let ret = unsafe { sys::rbd_get_features(self.handle, &mut features) };
        check(
            || format!("cannot read the features of image '{}'", self.name),
            ret.into(),
        )?;
        Ok(features & sys::RBD_FEATURE_EXCLUSIVE_LOCK != 0)
    }

    /// The image's id (`rbd_data.<id>.*` objects).
    pub fn id(&self) -> Result<String, Error> {
        let mut buf = [0 as c_char; 64];
        // SAFETY: live handle; `buf` is writable for its length.
        let ret = unsafe { sys::rbd_get_id(self.handle, buf.as_mut_ptr(), buf.len()) };
        check(
            || format!("cannot read the id of image '{}'", self.name),
            ret.into(),
        )?;
        // SAFETY: librbd NUL-terminated the id within `buf` (it returns
        // -ERANGE otherwise), and `buf` lives through the read.
        Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    }

    /// Whether this client holds the image's exclusive lock.
    pub fn is_lock_owner(&self) -> Result<bool, Error> {
        let mut owner: c_int = 0;
        // SAFETY: live handle; valid out-pointer.
        let ret = unsafe { sys::rbd_is_exclusive_lock_owner(self.handle, &mut owner) };
        check(|| "cannot check the exclusive lock".into(), ret.into())?;
        Ok(owner != 0)
    }

    /// Takes the exclusive lock and keeps it: librbd no longer hands it to
    /// a client that asks for it (only breaking it takes it away).
    pub fn lock_acquire(&self) -> Result<(), Error> {
        // SAFETY: live handle.
        let ret = unsafe { sys::rbd_lock_acquire(self.handle, sys::RBD_LOCK_MODE_EXCLUSIVE) };
        check(|| "cannot acquire the exclusive lock".into(), ret.into()).map(drop)
    }

    /// Releases the exclusive lock.
    pub fn lock_release(&self) -> Result<(), Error> {
        // SAFETY: live handle.
        let ret = unsafe { sys::rbd_lock_release(self.handle) };
        check(|| "cannot release the exclusive lock".into(), ret.into()).map(drop)
    }

    /// The clients holding the exclusive lock (`client.<gid>` names);
    /// empty when nobody does.
    pub fn lock_owners(&self) -> Result<Vec<String>, Error> {
        let mut owners: [*mut c_char; MAX_OWNERS] = [ptr::null_mut(); MAX_OWNERS];
        let mut count: usize = MAX_OWNERS;
        let mut mode: c_int = 0;
        // SAFETY: live handle; `owners` has room for `count` pointers.
        let ret = unsafe {
            sys::rbd_lock_get_owners(self.handle, &mut mode, owners.as_mut_ptr(), &mut count)
        };
        if ret == -libc::ENOENT {
            return Ok(Vec::new());
        }
        check(
            || "cannot list the exclusive lock's owners".into(),
            ret.into(),
        )?;
        let count = count.min(MAX_OWNERS);
        let names = owners[..count]
            .iter()
            .filter(|p| !p.is_null())
            // SAFETY: librbd filled `count` NUL-terminated strings.
            .map(|&p| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
            .collect();
        // SAFETY: frees exactly the `count` strings librbd allocated.
        unsafe { sys::rbd_lock_get_owners_cleanup(owners.as_mut_ptr(), count) };
        Ok(names)
    }

    /// Breaks `owner`'s exclusive lock; librbd blocklists the owner's
    /// address first (`rbd_blocklist_on_break_lock`), so it can write no
    /// more.
    pub fn lock_break(&self, owner: &str) -> Result<(), Error> {
        let o = cstring("lock owner", owner)?;
        // SAFETY: live handle; `o` outlives the call.
        let ret =
            unsafe { sys::rbd_lock_break(self.handle, sys::RBD_LOCK_MODE_EXCLUSIVE, o.as_ptr()) };
        check(|| format!("cannot break the lock of {owner}"), ret.into()).map(drop)
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        // SAFETY: opened by rbd_open, closed once. rbd_close waits for the
        // operations in flight, whose completions then run (and free their
        // state) before it returns; the pool is still alive (we hold it).
        unsafe { sys::rbd_close(self.handle) };
    }
}
