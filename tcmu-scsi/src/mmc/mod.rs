//! Multimedia devices (MMC-6): the wire side of an optical drive, with no
//! medium state of its own.
//!
//! What an optical drive answers like any other device (INQUIRY with
//! peripheral device type 5 and a removable medium, the VPD pages that
//! apply to it, MODE SENSE and MODE SELECT with the MMC pages) comes from
//! [`DeviceParams::mmc`](crate::DeviceParams::mmc) through the generic
//! emulation. The rest of the vocabulary a handler that keeps a medium
//! needs is here, as pure functions of a [`DriveState`] it owns:
//!
//! - GET CONFIGURATION: profiles and features ([`config`]);
//! - GET EVENT STATUS NOTIFICATION and the events a drive queues
//!   ([`events`]);
//! - READ TOC/PMA/ATIP, READ DISC INFORMATION, READ TRACK INFORMATION,
//!   READ FORMAT CAPACITIES, READ CAPACITY, MECHANISM STATUS ([`disc`]);
//! - READ DISC STRUCTURE for DVD media ([`structure`]);
//! - the MMC mode pages, page 2Ah (capabilities and mechanical status)
//!   included ([`mode`]);
//! - FORMAT UNIT's parameter list ([`format`](mod@format));
//! - the MMC sense codes (on [`Sense`]).
//!
//! [`decode`](crate::decode) turns the MMC CDBs into typed
//! [`Command`](crate::Command)s with their fields as sent; the checks of
//! those fields are the answer functions', so that a direct-access device
//! keeps answering them INVALID COMMAND OPERATION CODE. The medium (is it
//! in the drive, may it be removed, is it being formatted) is the
//! handler's: the generic emulation answers the MMC-only commands with
//! INVALID COMMAND OPERATION CODE when nothing else did.
//!
//! Blocks are 2048 bytes ([`BLOCK_SIZE`]); block counts and addresses are
//! 32-bit, as every MMC field that carries them.

use crate::sense::{Sense, SenseKey};

pub mod config;
pub mod disc;
pub mod events;
pub mod format;
pub mod mode;
pub mod structure;

/// PREVENT ALLOW MEDIUM REMOVAL.
pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1e;
/// READ FORMAT CAPACITIES.
pub const READ_FORMAT_CAPACITIES: u8 = 0x23;
/// READ TOC/PMA/ATIP.
pub const READ_TOC_PMA_ATIP: u8 = 0x43;
/// GET CONFIGURATION.
pub const GET_CONFIGURATION: u8 = 0x46;
/// GET EVENT STATUS NOTIFICATION.
pub const GET_EVENT_STATUS_NOTIFICATION: u8 = 0x4a;
/// READ DISC INFORMATION.
pub const READ_DISC_INFORMATION: u8 = 0x51;
/// READ TRACK INFORMATION.
pub const READ_TRACK_INFORMATION: u8 = 0x52;
/// READ DISC STRUCTURE (READ DVD STRUCTURE in MMC-4 and earlier).
pub const READ_DISC_STRUCTURE: u8 = 0xad;
/// MECHANISM STATUS.
pub const MECHANISM_STATUS: u8 = 0xbd;

/// Peripheral device type of a CD/DVD device.
pub const PERIPHERAL_MMC: u8 = 0x05;

/// The logical block size of CD and DVD data media.
pub const BLOCK_SIZE: u32 = 2048;

/// Blocks in an ECC block of DVD media (the BLOCKING of the random
/// readable and writable features, the packet size of READ TRACK
/// INFORMATION).
pub const DVD_BLOCKING: u16 = 16;

/// Version descriptor MMC-6 (no version claimed), in standard INQUIRY
/// data where an SBC device lists SBC-3.
pub const VERSION_MMC6: u16 = 0x04e0;

/// The drive a device emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drive {
    /// A DVD-RAM drive: reads DVD and CD media, writes and formats DVD-RAM
    /// (random writable, hardware defect management).
    DvdRam,
    /// A DVD-ROM drive: reads DVD and CD media, writes nothing. Linux marks
    /// such a drive's block device read-only from what GET CONFIGURATION
    /// and page 2Ah say it can write.
    DvdRom,
}

impl Drive {
    /// Whether the drive writes any medium.
    pub const fn writes(self) -> bool {
        matches!(self, Drive::DvdRam)
    }

    /// The profiles the drive supports, in the order the profile list
    /// feature reports them.
    pub const fn profiles(self) -> &'static [Profile] {
        match self {
            Drive::DvdRam => &[
                Profile::DvdRam,
                Profile::DvdRom,
                Profile::CdRw,
                Profile::CdRom,
            ],
            Drive::DvdRom => &[Profile::DvdRom, Profile::CdRom],
        }
    }
}

/// An MMC profile: what kind of medium the drive is working with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// CD-ROM (0008h).
    CdRom,
    /// CD-RW (000Ah).
    CdRw,
    /// DVD-ROM (0010h).
    DvdRom,
    /// DVD-RAM (0012h).
    DvdRam,
}

impl Profile {
    /// The profile number.
    pub const fn code(self) -> u16 {
        match self {
            Profile::CdRom => 0x0008,
            Profile::CdRw => 0x000a,
            Profile::DvdRom => 0x0010,
            Profile::DvdRam => 0x0012,
        }
    }
}

/// What the generic emulation needs to answer for an optical drive
/// ([`DeviceParams::mmc`](crate::DeviceParams::mmc)): INQUIRY with
/// peripheral device type 5 and RMB, the SPC VPD pages only, the MMC mode
/// pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmcParams {
    /// The drive.
    pub drive: Drive,
}

/// A disc: its size, and whether it takes writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Medium {
    /// Logical blocks of [`BLOCK_SIZE`] bytes.
    pub blocks: u32,
    /// A DVD-RAM disc (written and formatted in place) rather than a
    /// DVD-ROM one.
    pub writable: bool,
}

impl Medium {
    /// The profile the drive works with for this disc.
    pub const fn profile(&self) -> Profile {
        if self.writable {
            Profile::DvdRam
        } else {
            Profile::DvdRom
        }
    }

    /// The last LBA (0 for an empty disc).
    pub const fn last_lba(&self) -> u32 {
        self.blocks.saturating_sub(1)
    }
}

/// PREVENT ALLOW MEDIUM REMOVAL's PREVENT field (byte 4, bits 1-0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prevent {
    /// Bit 0: removal prevented for the initiator.
    pub prevent: bool,
    /// Bit 1: persistent prevent (removal prevented across resets).
    pub persistent: bool,
}

impl Prevent {
    /// From the field's two bits.
    pub const fn from_bits(bits: u8) -> Self {
        Self {
            prevent: bits & 0x01 != 0,
            persistent: bits & 0x02 != 0,
        }
    }

    /// Whether either kind of prevent holds the medium in.
    pub const fn locked(&self) -> bool {
        self.prevent || self.persistent
    }
}

/// A drive and its medium as the answers of this module see them. The
/// handler owns it and changes it (loads, ejects, locks, formats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveState {
    /// The drive.
    pub drive: Drive,
    /// The disc the drive serves, whether it is loaded or out on the tray.
    pub medium: Medium,
    /// The disc is loaded (tray closed); `false`: the tray is open and
    /// empty.
    pub loaded: bool,
    /// The removal lock.
    pub prevent: Prevent,
    /// A FORMAT UNIT is running: how far it has come, in 65536ths.
    pub format_progress: Option<u16>,
    /// The LBA of a read or write in flight, if any (MECHANISM STATUS).
    pub active_lba: Option<u32>,
}

impl DriveState {
    /// A drive with `medium` loaded, unlocked and idle.
    pub const fn new(drive: Drive, medium: Medium) -> Self {
        Self {
            drive,
            medium,
            loaded: true,
            prevent: Prevent {
                prevent: false,
                persistent: false,
            },
            format_progress: None,
            active_lba: None,
        }
    }

    /// The medium, if one is loaded.
    pub const fn present(&self) -> Option<&Medium> {
        if self.loaded {
            Some(&self.medium)
        } else {
            None
        }
    }

    /// The current profile: the loaded medium's, or none.
    pub const fn current_profile(&self) -> Option<Profile> {
        match self.present() {
            Some(m) => Some(m.profile()),
            None => None,
        }
    }

    /// The loaded medium, or the NOT READY answer of a command that needs
    /// one (MEDIUM NOT PRESENT - TRAY OPEN: an ejected drive's tray stays
    /// open until a load closes it).
    pub fn medium_or_not_ready(&self) -> Result<&Medium, Sense> {
        self.present()
            .ok_or_else(Sense::medium_not_present_tray_open)
    }
}

/// Converts an LBA to the MSF address of CD addressing (minutes, seconds,
/// frames of 75 a second, 150 frames before LBA 0), clamped to the
/// largest representable address, FFh:3Bh:4Ah, as MMC asks.
pub fn lba_to_msf(lba: u32) -> [u8; 3] {
    const FRAMES: u64 = 75;
    const SECONDS: u64 = 60;
    let frames = u64::from(lba) + 150;
    let minutes = frames / (FRAMES * SECONDS);
    if minutes > 0xff {
        return [0xff, 59, 74];
    }
    [
        minutes as u8,
        ((frames / FRAMES) % SECONDS) as u8,
        (frames % FRAMES) as u8,
    ]
}

/// The sense codes of optical drives.
impl Sense {
    /// MEDIUM NOT PRESENT (02/3A/00).
    pub const fn medium_not_present() -> Self {
        Self::new(SenseKey::NotReady, 0x3a, 0x00)
    }

    /// MEDIUM NOT PRESENT - TRAY CLOSED (02/3A/01).
    pub const fn medium_not_present_tray_closed() -> Self {
        Self::new(SenseKey::NotReady, 0x3a, 0x01)
    }

    /// MEDIUM NOT PRESENT - TRAY OPEN (02/3A/02).
    pub const fn medium_not_present_tray_open() -> Self {
        Self::new(SenseKey::NotReady, 0x3a, 0x02)
    }

    /// LOGICAL UNIT NOT READY, FORMAT IN PROGRESS (02/04/04), with how far
    /// the format has come (in 65536ths) as PROGRESS INDICATION.
    pub const fn format_in_progress(progress: u16) -> Self {
        Self::new(SenseKey::NotReady, 0x04, 0x04).with_progress(progress)
    }

    /// UNIT ATTENTION: NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED
    /// (06/28/00), after a medium is loaded.
    pub const fn medium_may_have_changed() -> Self {
        Self::new(SenseKey::UnitAttention, 0x28, 0x00)
    }

    /// MEDIUM REMOVAL PREVENTED (05/53/02): an eject while PREVENT ALLOW
    /// MEDIUM REMOVAL holds the medium.
    pub const fn medium_removal_prevented() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x53, 0x02)
    }

    /// CANNOT WRITE MEDIUM - INCOMPATIBLE FORMAT (05/30/05).
    pub const fn cannot_write_incompatible_format() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x30, 0x05)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msf() {
        assert_eq!(lba_to_msf(0), [0, 2, 0]);
        assert_eq!(lba_to_msf(74), [0, 2, 74]);
        assert_eq!(lba_to_msf(75), [0, 3, 0]);
        assert_eq!(lba_to_msf(60 * 75 - 150), [1, 0, 0]);
        // 255:59:74 is the last address; past it the address stays there.
        let last = (256 * 60 * 75 - 1 - 150) as u32;
        assert_eq!(lba_to_msf(last), [255, 59, 74]);
        assert_eq!(lba_to_msf(last + 1), [255, 59, 74]);
        assert_eq!(lba_to_msf(u32::MAX), [255, 59, 74]);
    }

    #[test]
    fn drives_and_media() {
        assert!(Drive::DvdRam.writes());
        assert!(!Drive::DvdRom.writes());
        assert_eq!(Drive::DvdRom.profiles(), &[Profile::DvdRom, Profile::CdRom]);
        let m = Medium {
            blocks: 100,
            writable: true,
        };
        assert_eq!(m.profile().code(), 0x12);
        assert_eq!(m.last_lba(), 99);
        let mut s = DriveState::new(Drive::DvdRam, m);
        assert_eq!(s.current_profile(), Some(Profile::DvdRam));
        s.loaded = false;
        assert_eq!(s.current_profile(), None);
        assert_eq!(
            s.medium_or_not_ready(),
            Err(Sense::medium_not_present_tray_open())
        );
        assert!(Prevent::from_bits(2).locked());
        assert!(!Prevent::from_bits(0).locked());
    }

    #[test]
    fn sense_codes() {
        let kaq = |s: Sense| (s.key.code(), s.asc, s.ascq);
        assert_eq!(kaq(Sense::medium_not_present()), (2, 0x3a, 0));
        assert_eq!(kaq(Sense::medium_not_present_tray_closed()), (2, 0x3a, 1));
        assert_eq!(kaq(Sense::medium_not_present_tray_open()), (2, 0x3a, 2));
        assert_eq!(kaq(Sense::medium_may_have_changed()), (6, 0x28, 0));
        assert_eq!(kaq(Sense::medium_removal_prevented()), (5, 0x53, 2));
        assert_eq!(kaq(Sense::cannot_write_incompatible_format()), (5, 0x30, 5));
        let f = Sense::format_in_progress(0x4000);
        assert_eq!(kaq(f), (2, 4, 4));
        assert_eq!(&f.to_fixed()[15..18], &[0x80, 0x40, 0x00]);
    }
}
