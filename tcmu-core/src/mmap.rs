//! The mapping of a TCMU device's map0 (mailbox, command ring, data area).
//!
//! [`Mapping`] owns the `mmap` and unmaps it on drop. The kernel writes the
//! same memory concurrently, so this type never hands out a reference into
//! it: every accessor copies bytes in or out, bounds-checked against the
//! mapping's length, and the two indexes the kernel and the daemon exchange
//! (`cmd_head`, `cmd_tail`) are accessed as atomics with Acquire/Release.

use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use rustix::mm::{MapFlags, ProtFlags};

/// An access outside the mapping, or a misaligned atomic access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("access of {len} bytes at offset {offset:#x} is outside the {size:#x}-byte mapping or misaligned")]
pub struct OutOfBounds {
    /// Requested offset.
    pub offset: usize,
    /// Requested length.
    pub len: usize,
    /// Size of the mapping.
    pub size: usize,
}

/// Checks that `[offset, offset + len)` lies inside `size` bytes.
pub(crate) fn check_range(offset: usize, len: usize, size: usize) -> Result<(), OutOfBounds> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(OutOfBounds { offset, len, size }),
    }
}

/// A shared, read-write memory mapping of a device's ring memory.
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
    /// Whether a command ring (or a buffer it handed out) uses the mapping:
    /// one at a time, so that one ring sees every buffer over it.
    ring: AtomicBool,
}

/// A command ring's exclusive hold on a [`Mapping`], released when the
/// ring and every lease of its buffers are gone.
#[derive(Debug)]
pub(crate) struct RingClaim {
    map: Arc<Mapping>,
}

impl RingClaim {
    /// The hold on `map`, or `None` while another ring has it.
    pub(crate) fn new(map: &Arc<Mapping>) -> Option<Self> {
        map.ring
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Self { map: map.clone() })
    }
}

impl Drop for RingClaim {
    fn drop(&mut self) {
        self.map.ring.store(false, Ordering::Release);
    }
}

// SAFETY: the mapping is plain shared memory with no thread affinity; all
// access goes through copies and atomics that are sound from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only allows copying bytes and atomic access.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` (a `/dev/uioN` device: map 0 is at offset 0)
    /// shared and read-write.
    pub fn map_shared(fd: impl AsFd, len: usize) -> std::io::Result<Self> {
        if len == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "cannot map zero bytes",
            ));
        }
        // SAFETY: a fresh mapping chosen by the kernel (null hint) aliases no
        // Rust object; we own it until `Drop` unmaps it.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                0,
            )?
        };
        Self::from_raw(ptr, len)
    }

    /// Maps `len` bytes of anonymous shared memory, zero-filled (used by the
    /// simulator, which plays the kernel's part).
    pub fn anonymous(len: usize) -> std::io::Result<Self> {
        if len == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "cannot map zero bytes",
            ));
        }
        // SAFETY: as in `map_shared`; anonymous memory has no backing object.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
            )?
        };
        Self::from_raw(ptr, len)
    }

    fn from_raw(ptr: *mut std::ffi::c_void, len: usize) -> std::io::Result<Self> {
        let base = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| std::io::Error::other("mmap returned a null pointer"))?;
        Ok(Self {
            base,
            len,
            ring: AtomicBool::new(false),
        })
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never true for a constructed mapping).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The address of the first mapped byte, for handing ring memory to the
    /// kernel by address (e.g. an io_uring buffer registration attempt, see
    /// `examples/fixed_buffers_probe.rs`). Getting it is safe; reading or
    /// writing through it is the caller's `unsafe` business, and it dangles
    /// once `self` is dropped.
    pub fn as_ptr(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Checks that `[offset, offset + len)` lies inside the mapping.
    pub fn check(&self, offset: usize, len: usize) -> Result<(), OutOfBounds> {
        check_range(offset, len, self.len)
    }

    /// Pointer to `offset`, after checking `[offset, offset + len)`.
    pub(crate) fn ptr_at(&self, offset: usize, len: usize) -> Result<*mut u8, OutOfBounds> {
        self.check(offset, len)?;
        // SAFETY: `offset + len <= self.len`, so the result stays inside (or
        // one past the end of) the mapped allocation.
        Ok(unsafe { self.base.as_ptr().add(offset) })
    }

    fn atomic_at(&self, offset: usize) -> Result<&AtomicU32, OutOfBounds> {
        let ptr = self.ptr_at(offset, 4)?;
        if ptr.align_offset(std::mem::align_of::<AtomicU32>()) != 0 {
            return Err(OutOfBounds {
                offset,
                len: 4,
                size: self.len,
            });
        }
        // SAFETY: the pointer is in bounds and aligned, the memory lives as
        // long as `self`, and `AtomicU32` tolerates concurrent writers (the
        // kernel writes these words with WRITE_ONCE/smp_store_release).
        Ok(unsafe { &*ptr.cast::<AtomicU32>() })
    }

    /// Reads a 32-bit word with Acquire ordering (the kernel's `cmd_head`).
    pub fn load_u32_acquire(&self, offset: usize) -> Result<u32, OutOfBounds> {
        Ok(self.atomic_at(offset)?.load(Ordering::Acquire))
    }

    /// Writes a 32-bit word with Release ordering (the daemon's `cmd_tail`),
    /// publishing every write made before it.
    pub fn store_u32_release(&self, offset: usize, value: u32) -> Result<(), OutOfBounds> {
        self.atomic_at(offset)?.store(value, Ordering::Release);
        Ok(())
    }

    /// Copies `out.len()` bytes at `offset` out of the mapping.
    pub fn read(&self, offset: usize, out: &mut [u8]) -> Result<(), OutOfBounds> {
        let src = self.ptr_at(offset, out.len())?;
        // SAFETY: `src..src+len` is inside the mapping (checked) and `out` is
        // a distinct Rust buffer; bytes have no validity invariants.
        unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) };
        Ok(())
    }

    /// Copies `data` into the mapping at `offset`.
    pub fn write(&self, offset: usize, data: &[u8]) -> Result<(), OutOfBounds> {
        let dst = self.ptr_at(offset, data.len())?;
        // SAFETY: `dst..dst+len` is inside the mapping (checked), which is
        // writable, and `data` is a distinct Rust buffer.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        Ok(())
    }

    /// Sets `len` bytes at `offset` to `byte`.
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> Result<(), OutOfBounds> {
        let dst = self.ptr_at(offset, len)?;
        // SAFETY: `dst..dst+len` is inside the writable mapping (checked).
        unsafe { std::ptr::write_bytes(dst, byte, len) };
        Ok(())
    }

    /// Reads a native-endian `u16` at `offset`.
    pub fn read_u16(&self, offset: usize) -> Result<u16, OutOfBounds> {
        let mut b = [0u8; 2];
        self.read(offset, &mut b)?;
        Ok(u16::from_ne_bytes(b))
    }

    /// Reads a native-endian `u32` at `offset`.
    pub fn read_u32(&self, offset: usize) -> Result<u32, OutOfBounds> {
        let mut b = [0u8; 4];
        self.read(offset, &mut b)?;
        Ok(u32::from_ne_bytes(b))
    }

    /// Reads a native-endian `u64` at `offset`.
    pub fn read_u64(&self, offset: usize) -> Result<u64, OutOfBounds> {
        let mut b = [0u8; 8];
        self.read(offset, &mut b)?;
        Ok(u64::from_ne_bytes(b))
    }

    /// Writes a native-endian `u16` at `offset`.
    pub fn write_u16(&self, offset: usize, v: u16) -> Result<(), OutOfBounds> {
        self.write(offset, &v.to_ne_bytes())
    }

    /// Writes a native-endian `u32` at `offset`.
    pub fn write_u32(&self, offset: usize, v: u32) -> Result<(), OutOfBounds> {
        self.write(offset, &v.to_ne_bytes())
    }

    /// Writes a native-endian `u64` at `offset`.
    pub fn write_u64(&self, offset: usize, v: u64) -> Result<(), OutOfBounds> {
        self.write(offset, &v.to_ne_bytes())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` describe exactly the mapping created in the
        // constructor, and no pointer into it outlives `self` (buffers hold
        // an `Arc<Mapping>`).
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        let m = Mapping::anonymous(4096).unwrap();
        assert!(m.write(4090, &[0; 6]).is_ok());
        assert!(m.write(4090, &[0; 7]).is_err());
        assert!(m.read(usize::MAX, &mut [0; 2]).is_err());
        assert!(m.load_u32_acquire(4094).is_err());
        assert!(m.load_u32_acquire(2).is_err(), "misaligned");
    }

    #[test]
    fn round_trip() {
        let m = Mapping::anonymous(8192).unwrap();
        m.write_u64(100, 0x1122_3344_5566_7788).unwrap();
        assert_eq!(m.read_u64(100).unwrap(), 0x1122_3344_5566_7788);
        m.store_u32_release(64, 7).unwrap();
        assert_eq!(m.load_u32_acquire(64).unwrap(), 7);
        m.fill(10, 5, 0xab).unwrap();
        let mut b = [0u8; 7];
        m.read(9, &mut b).unwrap();
        assert_eq!(b, [0, 0xab, 0xab, 0xab, 0xab, 0xab, 0]);
    }
}
