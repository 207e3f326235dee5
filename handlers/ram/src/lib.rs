//! # tcmu-handler-ram — a RAM disk for tcmu-rs
//!
//! Subtype `ram`: `dev_config=ram/64M` backs the device with 64 MiB of
//! memory (`ram/` alone: as much as the device size), allocated in 1 MiB
//! chunks as data is written ([`store`]). The bytes live and die with the
//! handler; nothing is persisted. Unmap zeroes (and
//! advertises LBPRZ), WRITE SAME fills in place, a `dev_size` reconfig
//! grows or shrinks the memory.
//!
//! For tests, the cfgstring can also inject faults ([`faults`]):
//! `ram/64M;fail_read=100-199;delay_ms=10` fails reads of blocks 100 to
//! 199 with MEDIUM ERROR and delays every read and write by 10 ms; see
//! [`config`] for every option. A `dev_config` reconfiguration with the
//! same size replaces the faults and keeps the data.
//!
//! Register [`RamFactory`] with a `tcmu_runtime::Registry`:
//! `registry.register(Arc::new(RamFactory))`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod factory;
pub mod faults;
pub mod handler;
pub mod store;

pub use config::{ConfigError, RamConfig};
pub use factory::RamFactory;
pub use faults::FaultSet;
pub use handler::RamHandler;
