//! Registering this crate's descriptors with tokio's reactor (feature
//! `tokio`).
//!
//! Since tokio 1.54, `AsyncFd::register` is `unsafe`: the caller promises
//! that the wrapped value owns its descriptor and neither closes nor
//! replaces it while registered. The types of this crate that implement
//! [`OwnsFd`] keep that promise, so the `unsafe` stays here, audited once.

use std::os::fd::AsRawFd;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

mod sealed {
    pub trait Sealed {}
}

/// A type that owns the descriptor it exposes and never closes or replaces
/// it while alive. Implemented only inside this crate.
pub trait OwnsFd: AsRawFd + sealed::Sealed {}

impl sealed::Sealed for crate::doorbell::Doorbell {}
impl OwnsFd for crate::doorbell::Doorbell {}
impl sealed::Sealed for crate::netlink::EventSocket {}
impl OwnsFd for crate::netlink::EventSocket {}
impl sealed::Sealed for crate::master::Master {}
impl OwnsFd for crate::master::Master {}
impl sealed::Sealed for crate::device::Device {}
impl OwnsFd for crate::device::Device {}

/// Registers `inner` with the current tokio runtime for readability.
pub fn register_readable<T: OwnsFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `T: OwnsFd` owns its descriptor (an `OwnedFd` inside), and no
    // method of it closes or replaces that descriptor; it is closed only when
    // `inner` is dropped, which `AsyncFd` does after deregistering.
    unsafe { AsyncFd::register_with_interest(inner, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}
