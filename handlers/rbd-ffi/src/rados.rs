//! [`Cluster`] (a librados client, `rados_t`) and [`IoCtx`] (a pool,
//! `rados_ioctx_t`).
//!
//! Every call here may block: on the network (connecting, monitor
//! commands) or on librados' own locks. Callers on an async runtime run
//! them on a blocking thread. Both types are `Send + Sync`: librados'
//! handles may be used from any thread at once.

use std::ffi::{CStr, CString};
use std::path::Path;
use std::ptr;
use std::sync::Arc;

use libc::c_char;

use crate::error::{check, Error};
use crate::sys;

/// A C string from a Rust one, refusing interior NUL bytes.
pub(crate) fn cstring(what: &str, s: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::invalid(format!("{what}: '{s}' contains a NUL byte")))
}

/// Pairs as librados' "dict" strings want them: `key\0value\0…\0`.
fn dict(pairs: &[(&str, &str)]) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        for s in [k, v] {
            if s.as_bytes().contains(&0) {
                return Err(Error::invalid(format!("'{s}' contains a NUL byte")));
            }
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
    }
    out.push(0);
    Ok(out)
}

/// A librados client: one connection to a cluster, with its own address
/// (what a blocklist entry names). Shut down when dropped, after every
/// [`IoCtx`] made from it (they hold it).
#[derive(Debug)]
pub struct Cluster {
    handle: sys::rados_t,
}

// SAFETY: a `rados_t` may be used from any thread, also concurrently
// (librados is thread-safe); this type owns it and frees it once, in Drop.
unsafe impl Send for Cluster {}
// SAFETY: as above: every method takes `&self` and librados serialises
// what needs serialising itself.
unsafe impl Sync for Cluster {}

impl Cluster {
    /// A client handle for user `id` (`client.<id>`; `None`: librados'
    /// default, `admin`), not yet configured or connected.
    pub fn create(id: Option<&str>) -> Result<Self, Error> {
        let id = id.map(|s| cstring("rados id", s)).transpose()?;
        let mut handle: sys::rados_t = ptr::null_mut();
        // SAFETY: `handle` is a valid out-pointer; `id` is NULL or a C
        // string that outlives the call (librados copies it).
        let ret = unsafe {
            sys::rados_create(&mut handle, id.as_ref().map_or(ptr::null(), |s| s.as_ptr()))
        };
        check(|| "rados_create".into(), ret.into())?;
        Ok(Self { handle })
    }

    /// Reads a configuration file; `None` reads librados' default search
    /// path (`$CEPH_CONF`, `/etc/ceph/ceph.conf`, …).
    pub fn read_conf(&self, path: Option<&Path>) -> Result<(), Error> {
        let path = path
            .map(|p| cstring("configuration path", &p.to_string_lossy()))
            .transpose()?;
        // SAFETY: the handle is live; the path is NULL or a C string
        // outliving the call.
        let ret = unsafe {
            sys::rados_conf_read_file(
                self.handle,
                path.as_ref().map_or(ptr::null(), |s| s.as_ptr()),
            )
        };
        check(|| "cannot read the Ceph configuration".into(), ret.into()).map(drop)
    }

    /// Sets a configuration option.
    pub fn conf_set(&self, option: &str, value: &str) -> Result<(), Error> {
        let (o, v) = (cstring("option", option)?, cstring("value", value)?);
        // SAFETY: live handle; both strings outlive the call.
        let ret = unsafe { sys::rados_conf_set(self.handle, o.as_ptr(), v.as_ptr()) };
        check(|| format!("cannot set {option}={value}"), ret.into()).map(drop)
    }

    /// A configuration option's value.
    pub fn conf_get(&self, option: &str) -> Result<String, Error> {
        let o = cstring("option", option)?;
        let mut buf = vec![0u8; 256];
        // SAFETY: live handle; `buf` is writable for its whole length,
        // which is what we pass; librados NUL-terminates within it.
        let ret = unsafe {
            sys::rados_conf_get(self.handle, o.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
        };
        check(|| format!("cannot read option {option}"), ret.into())?;
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Ok(String::from_utf8_lossy(&buf[..end]).into_owned())
    }

    /// Connects to the monitors (waits up to `client_mount_timeout`).
    pub fn connect(&self) -> Result<(), Error> {
        // SAFETY: live handle, configured or not.
        let ret = unsafe { sys::rados_connect(self.handle) };
        check(|| "cannot connect to the Ceph cluster".into(), ret.into()).map(drop)
    }

    /// The client's global id (`client.<id>` in lock owner names).
    pub fn instance_id(&self) -> u64 {
        // SAFETY: live, connected handle (0 otherwise).
        unsafe { sys::rados_get_instance_id(self.handle) }
    }

    /// The client's addresses, as blocklist entries name them
    /// (`127.0.0.1:0/3158423917`, or a `[v2:…,v1:…]` list).
    pub fn addrs(&self) -> Result<String, Error> {
        let mut out: *mut c_char = ptr::null_mut();
        // SAFETY: live handle; `out` is a valid out-pointer.
        let ret = unsafe { sys::rados_getaddrs(self.handle, &mut out) };
        check(|| "cannot read the client's address".into(), ret.into())?;
        if out.is_null() {
            return Ok(String::new());
        }
        // SAFETY: librados returned a NUL-terminated string it allocated
        // with malloc (strdup) for us to free.
        let s = unsafe { CStr::from_ptr(out) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: freed once, with the allocator that made it.
        unsafe { libc::free(out.cast()) };
        Ok(s)
    }

    /// Sends a monitor command (JSON) and returns its output buffer and
    /// status string.
    pub fn mon_command(&self, json: &str) -> Result<(String, String), Error> {
        let cmd = cstring("monitor command", json)?;
        let cmds = [cmd.as_ptr()];
        let (mut outbuf, mut outbuf_len) = (ptr::null_mut::<c_char>(), 0usize);
        let (mut outs, mut outs_len) = (ptr::null_mut::<c_char>(), 0usize);
        // SAFETY: live handle; `cmds` holds one C string outliving the
        // call; no input buffer; the out-pointers are valid.
        let ret = unsafe {
            sys::rados_mon_command(
                self.handle,
                cmds.as_ptr(),
                1,
                ptr::null(),
                0,
                &mut outbuf,
                &mut outbuf_len,
                &mut outs,
                &mut outs_len,
            )
        };
        let take = |p: *mut c_char, len: usize| -> String {
            if p.is_null() {
                return String::new();
            }
            // SAFETY: librados returned `len` readable bytes at `p`.
            let s =
                String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
                    .into_owned();
            // SAFETY: freed once, with librados' own function.
            unsafe { sys::rados_buffer_free(p) };
            s
        };
        let out = take(outbuf, outbuf_len);
        let status = take(outs, outs_len);
        if ret < 0 {
            let what = if status.is_empty() {
                format!("monitor command {json} failed")
            } else {
                format!("monitor command {json} failed: {status}")
            };
            return Err(Error::from_ret(what, ret.into()));
        }
        Ok((out, status))
    }

    /// Registers this client in the cluster's service map as `daemon` of
    /// `service`, with static `metadata`.
    pub fn service_register(
        &self,
        service: &str,
        daemon: &str,
        metadata: &[(&str, &str)],
    ) -> Result<(), Error> {
        let (s, d) = (cstring("service", service)?, cstring("daemon", daemon)?);
        let m = dict(metadata)?;
        // SAFETY: live handle; the strings and the NUL-separated dict
        // (ending in an empty key) outlive the call.
        let ret = unsafe {
            sys::rados_service_register(self.handle, s.as_ptr(), d.as_ptr(), m.as_ptr().cast())
        };
        check(
            || format!("cannot register {service} {daemon} in the service map"),
            ret.into(),
        )
        .map(drop)
    }

    /// Replaces this client's status in the service map.
    pub fn service_update_status(&self, status: &[(&str, &str)]) -> Result<(), Error> {
        let m = dict(status)?;
        // SAFETY: live handle; the dict outlives the call.
        let ret = unsafe { sys::rados_service_update_status(self.handle, m.as_ptr().cast()) };
        check(|| "cannot update the service status".into(), ret.into()).map(drop)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: the handle came from rados_create and is shut down once;
        // every IoCtx (and so every Image) made from it holds an Arc of
        // this Cluster, so none is left.
        unsafe { sys::rados_shutdown(self.handle) };
    }
}

/// A pool of a connected [`Cluster`]; destroyed when dropped, after every
/// image opened in it (they hold it).
#[derive(Debug)]
pub struct IoCtx {
    handle: sys::rados_ioctx_t,
    cluster: Arc<Cluster>,
}

// SAFETY: a `rados_ioctx_t` may be used from any thread (librados is
// thread-safe); owned here and destroyed once.
unsafe impl Send for IoCtx {}
// SAFETY: as above.
unsafe impl Sync for IoCtx {}

impl IoCtx {
    /// Opens pool `pool` of `cluster`.
    pub fn create(cluster: Arc<Cluster>, pool: &str) -> Result<Self, Error> {
        let p = cstring("pool", pool)?;
        let mut handle: sys::rados_ioctx_t = ptr::null_mut();
        // SAFETY: live, connected cluster; `p` outlives the call; `handle`
        // is a valid out-pointer.
        let ret = unsafe { sys::rados_ioctx_create(cluster.handle, p.as_ptr(), &mut handle) };
        check(|| format!("cannot open pool '{pool}'"), ret.into())?;
        Ok(Self { handle, cluster })
    }

    /// The cluster this pool belongs to.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub(crate) fn raw(&self) -> sys::rados_ioctx_t {
        self.handle
    }
}

impl Drop for IoCtx {
    fn drop(&mut self) {
        // SAFETY: made by rados_ioctx_create, destroyed once; images opened
        // in it hold an Arc of it, so none is left; the cluster is still
        // alive (we hold it).
        unsafe { sys::rados_ioctx_destroy(self.handle) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dicts_are_nul_separated_and_end_in_an_empty_key() {
        assert_eq!(
            dict(&[("a", "1"), ("bc", "")]).ok(),
            Some(b"a\x001\x00bc\x00\x00\x00".to_vec())
        );
        assert!(dict(&[("a\0", "1")]).is_err());
    }
}
