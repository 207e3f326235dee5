//! # tcmu-handler-fbo — a file-backed optical drive
//!
//! Subtype `fbo`, tcmu-runner's cfgstring: `dev_config=fbo//srv/iso/d.iso`
//! serves a DVD-RAM drive holding a writable DVD-RAM disc kept in the file
//! (created if missing); `dev_config=fbo/ro//srv/iso/d.iso` a DVD-ROM drive
//! serving an existing image (an ISO 9660 file) read-only. The disc has
//! `dev_size` ÷ 2048 blocks of 2048 bytes, whatever the backstore's
//! `hw_block_size`.
//!
//! The kernel's sr driver binds the LUN as `/dev/srN`: INQUIRY reports
//! peripheral device type 5 with a removable medium, and the MMC commands
//! are answered from [`tcmu_scsi::mmc`] with the drive's state, which this
//! handler keeps ([`FboHandler`]):
//!
//! - GET CONFIGURATION (profiles DVD-RAM, DVD-ROM, CD-RW, CD-ROM, or DVD-ROM
//!   and CD-ROM with `ro/`; the current profile is the disc's), GET EVENT
//!   STATUS NOTIFICATION (an operational change when the drive comes up,
//!   media events on load and eject, device busy while formatting), READ
//!   TOC/PMA/ATIP formats 0 and 1, READ DISC and TRACK INFORMATION, READ
//!   FORMAT CAPACITIES, READ CAPACITY, READ DISC STRUCTURE, MECHANISM
//!   STATUS, MODE SENSE with the MMC pages (page 2Ah's lock state follows
//!   PREVENT ALLOW MEDIUM REMOVAL);
//! - START STOP UNIT with LOEJ ejects (the tray opens; commands that need
//!   the disc are NOT READY, MEDIUM NOT PRESENT - TRAY OPEN) and loads the
//!   disc again; an eject while PREVENT ALLOW MEDIUM REMOVAL holds the
//!   disc is ILLEGAL REQUEST, MEDIUM REMOVAL PREVENTED;
//! - FORMAT UNIT (a full format of the whole disc) writes zeroes over it,
//!   in the background with IMMED: meanwhile every command but INQUIRY,
//!   REQUEST SENSE, REPORT LUNS, GET CONFIGURATION and GET EVENT STATUS
//!   NOTIFICATION is NOT READY, FORMAT IN PROGRESS, and REQUEST SENSE
//!   reports the progress in its sense-key-specific bytes;
//! - with `ro/`, every write (and FORMAT UNIT) is DATA PROTECT, WRITE
//!   PROTECTED, and the file is opened read-only.
//!
//! READ (6/10/12/16), WRITE (6/10/12/16), WRITE AND VERIFY, VERIFY and
//! SYNCHRONIZE CACHE are the runtime's, served by this handler's `read`,
//! `write` and `flush` with no copy of ours (`tcmu_handler_file::io`:
//! inline copies on memory-backed files and page-cache hits, io_uring
//! otherwise). The drive reports a volatile write cache, as tcmu-runner's
//! does: SYNCHRONIZE CACHE is `fdatasync`.
//!
//! Register [`FboFactory`] with a `tcmu_runtime::Registry`; a device opens
//! inside a tokio-uring runtime (its worker thread).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod config;
pub mod factory;
pub mod handler;

pub use config::{Backing, ConfigError, FboConfig};
pub use factory::{FboFactory, PRODUCT};
pub use handler::FboHandler;
