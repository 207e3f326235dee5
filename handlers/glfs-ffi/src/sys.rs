//! The C declarations — the subset of `glusterfs/api/glfs.h` (GlusterFS
//! 10.3 in Debian 12) the handler calls, written out by hand from that
//! header — and [`Api`], the table of those functions as found in
//! libgfapi by `dlopen` and `dlvsym`.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::OnceLock;

use libc::{iovec, mode_t, off_t, size_t, ssize_t};

use crate::error::Error;

/// The library's file name (Debian's `libgfapi0` package).
pub const LIBRARY: &str = "libgfapi.so.0";

/// The environment variable naming another library file to load instead of
/// [`LIBRARY`] (tests point it at a missing file to see the refusal).
pub const LIBRARY_ENV: &str = "TCMU_GLFS_LIBRARY";

/// `glfs_t`: a virtual mount (opaque).
pub type glfs_t = c_void;
/// `glfs_fd_t`: an open file (opaque).
pub type glfs_fd_t = c_void;
/// `struct glfs_stat` (never read: only passed as a null pointer or
/// received by callbacks).
pub type glfs_stat = c_void;

/// `glfs_io_cbk` of the `GFAPI_6.0` asynchronous calls.
pub type glfs_io_cbk = unsafe extern "C" fn(
    fd: *mut glfs_fd_t,
    ret: ssize_t,
    prestat: *mut glfs_stat,
    poststat: *mut glfs_stat,
    data: *mut c_void,
);

/// The libgfapi functions the handler calls. Resolved once, at the symbol
/// versions whose C signatures these types spell; the library stays loaded
/// for the life of the process.
#[derive(Debug)]
pub struct Api {
    pub(crate) new: unsafe extern "C" fn(volname: *const c_char) -> *mut glfs_t,
    pub(crate) set_volfile_server: unsafe extern "C" fn(
        fs: *mut glfs_t,
        transport: *const c_char,
        host: *const c_char,
        port: c_int,
    ) -> c_int,
    pub(crate) set_logging:
        unsafe extern "C" fn(fs: *mut glfs_t, logfile: *const c_char, loglevel: c_int) -> c_int,
    pub(crate) init: unsafe extern "C" fn(fs: *mut glfs_t) -> c_int,
    pub(crate) fini: unsafe extern "C" fn(fs: *mut glfs_t) -> c_int,
    pub(crate) creat: unsafe extern "C" fn(
        fs: *mut glfs_t,
        path: *const c_char,
        flags: c_int,
        mode: mode_t,
    ) -> *mut glfs_fd_t,
    pub(crate) open:
        unsafe extern "C" fn(fs: *mut glfs_t, path: *const c_char, flags: c_int) -> *mut glfs_fd_t,
    pub(crate) close: unsafe extern "C" fn(fd: *mut glfs_fd_t) -> c_int,
    pub(crate) fstat: unsafe extern "C" fn(fd: *mut glfs_fd_t, buf: *mut libc::stat) -> c_int,
    pub(crate) ftruncate: unsafe extern "C" fn(
        fd: *mut glfs_fd_t,
        length: off_t,
        prestat: *mut glfs_stat,
        poststat: *mut glfs_stat,
    ) -> c_int,
    pub(crate) preadv_async: unsafe extern "C" fn(
        fd: *mut glfs_fd_t,
        iov: *const iovec,
        count: c_int,
        offset: off_t,
        flags: c_int,
        cbk: glfs_io_cbk,
        data: *mut c_void,
    ) -> c_int,
    pub(crate) pwritev_async: unsafe extern "C" fn(
        fd: *mut glfs_fd_t,
        iov: *const iovec,
        count: c_int,
        offset: off_t,
        flags: c_int,
        cbk: glfs_io_cbk,
        data: *mut c_void,
    ) -> c_int,
    pub(crate) fdatasync_async:
        unsafe extern "C" fn(fd: *mut glfs_fd_t, cbk: glfs_io_cbk, data: *mut c_void) -> c_int,
    pub(crate) discard_async: unsafe extern "C" fn(
        fd: *mut glfs_fd_t,
        offset: off_t,
        len: size_t,
        cbk: glfs_io_cbk,
        data: *mut c_void,
    ) -> c_int,
    pub(crate) zerofill_async: unsafe extern "C" fn(
        fd: *mut glfs_fd_t,
        offset: off_t,
        len: off_t,
        cbk: glfs_io_cbk,
        data: *mut c_void,
    ) -> c_int,
}

/// The library file [`api`] loads: [`LIBRARY_ENV`] if set, else
/// [`LIBRARY`].
pub fn library_name() -> String {
    std::env::var(LIBRARY_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| LIBRARY.to_owned())
}

/// libgfapi, loaded at the first call ([`library_name`]); the outcome,
/// success or not, is kept for the life of the process.
pub fn api() -> Result<&'static Api, Error> {
    static API: OnceLock<Result<Api, Error>> = OnceLock::new();
    API.get_or_init(|| Api::load(&library_name()))
        .as_ref()
        .map_err(Clone::clone)
}

/// The dynamic loader's last error message.
fn dlerror() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated message owned by
    // the loader, valid until the next dl* call on this thread; it is
    // copied out at once.
    let msg = unsafe { libc::dlerror() };
    if msg.is_null() {
        return "unknown error".into();
    }
    // SAFETY: non-null, NUL-terminated (see above).
    unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned()
}

/// Resolves `name` at `version` in `lib` as a function pointer of type
/// `$ty` (the declared C signature of that version).
macro_rules! resolve {
    ($lib:expr, $name:literal, $version:literal, $ty:ty) => {{
        let sym = c_name($name);
        let ver = c_name($version);
        // SAFETY: `lib` is a handle dlopen returned and never closed; the
        // names are NUL-terminated.
        let p = unsafe { libc::dlvsym($lib, sym.as_ptr(), ver.as_ptr()) };
        if p.is_null() {
            return Err(Error::Missing {
                why: format!("{} has no {}@{}: {}", $name, $name, $version, dlerror()),
            });
        }
        // SAFETY: `p` is the address of libgfapi's function `$name` at
        // symbol version `$version`, whose C signature is the one `$ty`
        // spells (checked against glfs.h of GlusterFS 10.3); function and
        // data pointers have the same size on Linux.
        unsafe { std::mem::transmute::<*mut c_void, $ty>(p) }
    }};
}

fn c_name(s: &str) -> CString {
    // Literals of this file: no NUL inside.
    CString::new(s).unwrap_or_default()
}

impl Api {
    /// Opens library file `file` and resolves every function.
    pub fn load(file: &str) -> Result<Self, Error> {
        let name = CString::new(file).map_err(|_| Error::Missing {
            why: format!("{file:?}: a NUL byte in the name"),
        })?;
        // SAFETY: a NUL-terminated name; libgfapi's initialisers only set
        // up its own state. The handle is never closed (function pointers
        // into it live in a process-wide table).
        let lib = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if lib.is_null() {
            return Err(Error::Missing { why: dlerror() });
        }
        Ok(Self {
            new: resolve!(
                lib,
                "glfs_new",
                "GFAPI_3.4.0",
                unsafe extern "C" fn(*const c_char) -> *mut glfs_t
            ),
            set_volfile_server: resolve!(
                lib,
                "glfs_set_volfile_server",
                "GFAPI_3.4.0",
                unsafe extern "C" fn(*mut glfs_t, *const c_char, *const c_char, c_int) -> c_int
            ),
            set_logging: resolve!(
                lib,
                "glfs_set_logging",
                "GFAPI_3.4.0",
                unsafe extern "C" fn(*mut glfs_t, *const c_char, c_int) -> c_int
            ),
            init: resolve!(
                lib,
                "glfs_init",
                "GFAPI_3.4.0",
                unsafe extern "C" fn(*mut glfs_t) -> c_int
            ),
            fini: resolve!(
                lib,
                "glfs_fini",
                "GFAPI_3.4.0",
                unsafe extern "C" fn(*mut glfs_t) -> c_int
            ),
            creat: resolve!(
                lib,
                "glfs_creat",
                "GFAPI_3.4.0",
                unsafe extern "C" fn(*mut glfs_t, *const c_char, c_int, mode_t) -> *mut glfs_fd_t
            ),
            open: resolve!(
                lib,
                "glfs_open",
                "GFAPI_3.4.0",
                unsafe extern "C" fn(*mut glfs_t, *const c_char, c_int) -> *mut glfs_fd_t
            ),
            close: resolve!(
                lib,
                "glfs_close",
                "GFAPI_3.4.0",
                unsafe extern "C" fn(*mut glfs_fd_t) -> c_int
            ),
            fstat: resolve!(
                lib,
                "glfs_fstat",
                "GFAPI_3.4.0",
                unsafe extern "C" fn(*mut glfs_fd_t, *mut libc::stat) -> c_int
            ),
            ftruncate: resolve!(
                lib,
                "glfs_ftruncate",
                "GFAPI_6.0",
                unsafe extern "C" fn(
                    *mut glfs_fd_t,
                    off_t,
                    *mut glfs_stat,
                    *mut glfs_stat,
                ) -> c_int
            ),
            preadv_async: resolve!(
                lib,
                "glfs_preadv_async",
                "GFAPI_6.0",
                unsafe extern "C" fn(
                    *mut glfs_fd_t,
                    *const iovec,
                    c_int,
                    off_t,
                    c_int,
                    glfs_io_cbk,
                    *mut c_void,
                ) -> c_int
            ),
            pwritev_async: resolve!(
                lib,
                "glfs_pwritev_async",
                "GFAPI_6.0",
                unsafe extern "C" fn(
                    *mut glfs_fd_t,
                    *const iovec,
                    c_int,
                    off_t,
                    c_int,
                    glfs_io_cbk,
                    *mut c_void,
                ) -> c_int
            ),
            fdatasync_async: resolve!(
                lib,
                "glfs_fdatasync_async",
                "GFAPI_6.0",
                unsafe extern "C" fn(*mut glfs_fd_t, glfs_io_cbk, *mut c_void) -> c_int
            ),
            discard_async: resolve!(
                lib,
                "glfs_discard_async",
                "GFAPI_6.0",
                unsafe extern "C" fn(
                    *mut glfs_fd_t,
                    off_t,
                    size_t,
                    glfs_io_cbk,
                    *mut c_void,
                ) -> c_int
            ),
            zerofill_async: resolve!(
                lib,
                "glfs_zerofill_async",
                "GFAPI_6.0",
                unsafe extern "C" fn(
                    *mut glfs_fd_t,
                    off_t,
                    off_t,
                    glfs_io_cbk,
                    *mut c_void,
                ) -> c_int
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_named_with_what_to_install() {
        let e = Api::load("libgfapi-not-here.so.0").err();
        let msg = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("libgfapi-not-here.so.0"), "{msg}");
        assert!(msg.contains("libgfapi0"), "{msg}");
    }

    #[test]
    fn every_function_resolves_in_debians_library() {
        let api = Api::load(LIBRARY);
        assert!(api.is_ok(), "{:?}", api.err());
    }
}
