//! # tcmu-handler-zbc — an emulated zoned disk over a file
//!
//! Subtype `zbc`, tcmu-runner's format and defaults:
//! `dev_config=zbc/model-HM/zsize-64/conv-2@/var/lib/zbc.raw` serves a
//! host-managed zoned disk of 64 MiB zones, the first two conventional,
//! kept in `/var/lib/zbc.raw`; `zbc//var/lib/zbc.raw` takes the defaults
//! (host managed, 512-byte blocks, 256 MiB zones, 1% conventional zones,
//! 128 open zones) or whatever the file already holds. The options are
//! in [`config`].
//!
//! The kernel registers the disk as zoned: a host-managed disk has
//! peripheral device type 0x14, a host-aware one is a direct-access disk
//! whose VPD page 0xB1 says so; both report VPD page 0xB6 and READ
//! CAPACITY (16) with RC BASIS 01b, through the generic layer
//! ([`tcmu_scsi::ZonedParams`]). The handler keeps the zones
//! ([`zones`]): REPORT ZONES with every reporting option and PARTIAL;
//! OPEN, CLOSE, FINISH and RESET WRITE POINTER for one zone, ZONE COUNT
//! zones or ALL; the open-zone limit (implicit opens close the least
//! recently written implicitly opened zone; explicit opens past the limit
//! are refused); the ZBC sense codes for unaligned writes, writes to full
//! zones, zone boundaries, reads from conventional into sequential zones
//! (host managed) and exhausted zone resources; READ ONLY and OFFLINE
//! zones injected by the cfgstring.
//!
//! Reads and writes move data between the file and the ring's data area
//! with no copy of ours (`tcmu_handler_file::io`: inline copies on
//! memory-backed files and page-cache hits, io_uring otherwise); reads
//! past a write pointer are zeroes. RESET WRITE POINTER punches the
//! zone's data out of the file, FINISH ZONE zeroes what lies past the
//! write pointer. The device reports a volatile write cache: SYNCHRONIZE
//! CACHE is `fdatasync`.
//!
//! ## The backing file
//!
//! The file holds the metadata, then the data, the way tcmu-runner's
//! zbc handler lays it out, so that either daemon serves a file the other
//! made. All integers are little endian.
//!
//! | offset | bytes | field |
//! |---:|---:|---|
//! | 0 | 4 | magic `0x555A4243` (the bytes `CBZU`) |
//! | 4 | 4 | model: `0x14` host managed, `0x00` host aware |
//! | 8 | 8 | capacity in logical blocks |
//! | 16 | 4 | logical block size: 512 or 4096 |
//! | 20 | 4 | zone size in logical blocks, a power of two, at least 1 MiB |
//! | 24 | 4 | number of zones: capacity ÷ zone size, rounded up |
//! | 28 | 4 | number of conventional zones (the first ones), fewer than the zones |
//! | 32 | 4 | maximum (HM) or optimal (HA) number of open zones, 1 to the number of zones |
//! | 36 | 8 | zero (tcmu-runner's open zone counters, kept in memory only) |
//! | 44 | 1 | format version: 0 written by tcmu-runner, 1 by this handler |
//! | 45 | 3 | zero |
//! | 48 | 64 × zones | one zone record per zone, in order |
//!
//! A zone record:
//!
//! | offset | bytes | field |
//! |---:|---:|---|
//! | 0 | 8 | first LBA: zone number × zone size |
//! | 8 | 8 | length in blocks (the last zone may be shorter) |
//! | 16 | 8 | write pointer LBA; all ones for a conventional zone |
//! | 24 | 1 | zone type: 1 conventional, 2 sequential write required (HM), 3 sequential write preferred (HA) |
//! | 25 | 1 | condition: 0 not write pointer (conventional), 1 empty (write pointer at the start), 2 implicitly open, 3 explicitly open, 4 closed (written, not full), 14 full (write pointer at the end) |
//! | 26 | 1 | NON_SEQ: 1 if written out of order (HA) |
//! | 27 | 1 | RESET WRITE POINTER RECOMMENDED: 0 (never set) |
//! | 28 | 36 | zero |
//!
//! The data starts at the metadata's end rounded up to 4096 bytes: block
//! *n* is at that offset + *n* × block size. The file is exactly that
//! long plus the device size (sparse where nothing was written).
//!
//! Version 1 is version 0 with its rules enforced: the version byte set,
//! everything marked zero zero, every zone's place, type and condition
//! consistent with the header and its write pointer. Both are read; a
//! newer version is refused. A file of version 0 opened as it is gets
//! version 1 written into its header (tcmu-runner ignores that byte).
//!
//! ## Durability
//!
//! A zone record is written (into the page cache) as soon as its zone
//! changes: a write's record after its data, a FINISH after the zeroes
//! it needs. The daemon can die at any moment (kill -9) and the next one
//! finds every acknowledged write and zone change; SYNCHRONIZE CACHE
//! (`fdatasync`) makes data and records durable together, so after it a
//! power loss loses nothing either. Opened zones stay open across a
//! restart (a restart is invisible to the initiator); if the open-zone
//! limit went down, implicitly opened zones past it are closed.
//!
//! ## Opening a file
//!
//! - A new, empty or all-holes file is formatted as the options ask.
//! - A zbc file is used as it is when the options (those given; the rest
//!   are taken from the file) and the device size match it. A different
//!   `open-N` is changed in place. Any other difference reformats it if
//!   it holds no data (no sequential zone written, no data in the
//!   conventional zones), and says so in the log; if it holds data, the
//!   device is refused with what differs and what holds data.
//! - A file with data but no zbc metadata, and a zbc file whose metadata
//!   does not hold together, are refused with the reason, never formatted
//!   over. (tcmu-runner reformats whenever options are given, and
//!   whenever its check of the metadata fails.)
//!
//! Register [`ZbcFactory`] with a `tcmu_runtime::Registry`; a device opens
//! inside a tokio-uring runtime (its worker thread).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod factory;
pub mod geometry;
pub mod handler;
mod locks;
pub mod meta;
mod store;
pub mod zones;

pub use config::{ConfigError, ZbcConfig, ZbcOptions};
pub use factory::ZbcFactory;
pub use geometry::Geometry;
pub use handler::ZbcHandler;
