//! Can a TCMU device's data area be an io_uring fixed buffer?
//!
//! Issue 6 asks whether the daemon could register the ring's data area with
//! `IORING_REGISTER_BUFFERS` and then use `READ_FIXED`/`WRITE_FIXED`. This
//! probe asks the running kernel directly: it opens `/dev/uioN`, maps map0
//! exactly as the daemon does ([`Doorbell::open_uio`] +
//! [`Mapping::map_shared`]), reads the mailbox to find the data area
//! (`cmdr_off + cmdr_size` up to the end of the map) and tries to register,
//! each time on a fresh ring:
//!
//! - `data-area-whole`: the whole data area;
//! - `data-area-page0`: its first page (present once a command has used it);
//! - `mailbox-page`: the first page of the map (the mailbox, vmalloc'ed by
//!   the kernel, always present): the same VMA, with a page that surely
//!   faults in, so a refusal here is about the mapping, not a missing page;
//! - `anon-private-whole`, `anon-private-page`: private anonymous memory
//!   (a `Vec`) of the same sizes, which must work;
//! - `anon-shared-whole`: shared anonymous memory (shmem), as
//!   [`Mapping::anonymous`] gives the simulator.
//!
//! It never reads or writes the data area itself (a page the kernel has not
//! allocated raises SIGBUS). The UIO device is exclusive: stop the daemon
//! first, or the open fails with EBUSY (reported, exit status 3).
//!
//! Usage: `fixed_buffers_probe /dev/uioN`. One `case=… result=…` line per
//! attempt; exit status 0 when every attempt ran, whatever its result.
//! Rerun in the test VM with `cargo xtask vm-run tests/vm/probe-fixed-buffers.sh`.

use std::io;
use std::mem::offset_of;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use io_uring::IoUring;
use tcmu_core::layout::Mailbox;
use tcmu_core::uio::UioDevice;
use tcmu_core::{Doorbell, Mapping};

/// The page size of the machines this runs on (x86-64, the test VM).
const PAGE: usize = 4096;

/// The name of an errno value the registration may return.
fn errno_name(code: i32) -> &'static str {
    match code {
        libc::EFAULT => "EFAULT",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EINVAL => "EINVAL",
        libc::ENOMEM => "ENOMEM",
        libc::EBUSY => "EBUSY",
        libc::EPERM => "EPERM",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ENXIO => "ENXIO",
        _ => "?",
    }
}

fn describe(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(code) => format!("errno={code} ({}) {err}", errno_name(code)),
        None => err.to_string(),
    }
}

/// Tries to register `[addr, addr + len)` as the only fixed buffer of a
/// fresh ring and prints the outcome. Returns whether it was accepted.
fn attempt(case: &str, addr: *mut u8, len: usize, page: usize) -> io::Result<bool> {
    let ring = IoUring::new(4)?;
    let iov = libc::iovec {
        iov_base: addr.cast(),
        iov_len: len,
    };
    let pages = len.div_ceil(page);
    let head = format!("case={case} addr={addr:p} len={len:#x} pages={pages}");
    // SAFETY: `iov` describes memory mapped by the caller for the whole call,
    // and the registration is dropped again below (explicitly, or with
    // `ring`) before the caller unmaps it. The kernel only pins the pages;
    // nothing is read or written through the buffer.
    match unsafe { ring.submitter().register_buffers(&[iov]) } {
        Ok(()) => {
            println!("{head} result=ok");
            ring.submitter().unregister_buffers()?;
            Ok(true)
        }
        Err(err) => {
            println!("{head} result=err {}", describe(&err));
            Ok(false)
        }
    }
}

fn uio_index(path: &Path) -> Option<&str> {
    path.file_name()?.to_str()?.strip_prefix("uio")
}

fn run(dev: &Path) -> Result<(), String> {
    let index =
        uio_index(dev).ok_or_else(|| format!("{} is not a /dev/uioN path", dev.display()))?;
    let sysfs = PathBuf::from(format!("/sys/class/uio/uio{index}"));
    let uio = UioDevice::from_sysfs(&sysfs).map_err(|e| e.to_string())?;
    let map_len = usize::try_from(uio.map_size).map_err(|e| e.to_string())?;
    println!(
        "device={} name={} map0_size={map_len:#x}",
        dev.display(),
        uio.raw_name
    );

    let doorbell =
        Doorbell::open_uio(dev).map_err(|e| format!("open {}: {}", dev.display(), describe(&e)))?;
    let map = Mapping::map_shared(doorbell.fd(), map_len)
        .map_err(|e| format!("mmap {}: {}", dev.display(), describe(&e)))?;
    let rd32 = |off| map.read_u32(off).map_err(|e| e.to_string());
    let version = map
        .read_u16(offset_of!(Mailbox, version))
        .map_err(|e| e.to_string())?;
    let flags = map
        .read_u16(offset_of!(Mailbox, flags))
        .map_err(|e| e.to_string())?;
    let cmdr_off = rd32(offset_of!(Mailbox, cmdr_off))? as usize;
    let cmdr_size = rd32(offset_of!(Mailbox, cmdr_size))? as usize;
    let data_off = cmdr_off + cmdr_size;
    let data_len = map_len
        .checked_sub(data_off)
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            format!("no data area: cmdr_off + cmdr_size = {data_off:#x} >= map size {map_len:#x}")
        })?;
    println!(
        "mailbox version={version} flags={flags:#x} cmdr_off={cmdr_off:#x} cmdr_size={cmdr_size:#x} \
         data_off={data_off:#x} data_len={data_len:#x} ({} MiB)",
        data_len >> 20
    );
    let page = PAGE;
    let base = map.as_ptr();
    // `data_off < map_len`, checked above, keeps the pointer in the mapping.
    let data = base.wrapping_add(data_off);

    let mut accepted = Vec::new();
    let mut try_case = |case: &'static str, addr: *mut u8, len: usize| -> Result<(), String> {
        if attempt(case, addr, len, page).map_err(|e| format!("{case}: io_uring: {e}"))? {
            accepted.push(case);
        }
        Ok(())
    };
    try_case("data-area-whole", data, data_len)?;
    try_case("data-area-page0", data, page)?;
    try_case("mailbox-page", base, page)?;

    let mut private = vec![0u8; data_len];
    try_case("anon-private-whole", private.as_mut_ptr(), data_len)?;
    try_case("anon-private-page", private.as_mut_ptr(), page)?;
    drop(private);
    let shared = Mapping::anonymous(data_len).map_err(|e| format!("anonymous mmap: {e}"))?;
    try_case("anon-shared-whole", shared.as_ptr(), data_len)?;
    drop(shared);

    let tcmu: Vec<_> = accepted
        .iter()
        .filter(|c| !c.starts_with("anon-"))
        .collect();
    if tcmu.is_empty() {
        println!("summary: the kernel refused every TCMU ring range as a fixed buffer");
    } else {
        println!(
            "summary: UNEXPECTED: the kernel ACCEPTED TCMU ring memory as a fixed buffer: {tcmu:?}"
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dev] = args.as_slice() else {
        eprintln!("usage: fixed_buffers_probe /dev/uioN");
        return ExitCode::from(2);
    };
    match run(Path::new(dev)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("fixed_buffers_probe: {msg}");
            ExitCode::from(if msg.starts_with("open ") { 3 } else { 1 })
        }
    }
}
