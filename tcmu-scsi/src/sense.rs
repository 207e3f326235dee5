//! Sense data (SPC-4 4.5): the key/ASC/ASCQ triple, the INFORMATION field and
//! the sense-key-specific field pointer, encoded in fixed (0x70) or
//! descriptor (0x72) format.

/// The sense key (SPC-4 table 45).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SenseKey {
    /// No specific sense key information.
    NoSense = 0x0,
    /// The command completed after recovery action.
    RecoveredError = 0x1,
    /// The logical unit is not accessible.
    NotReady = 0x2,
    /// An unrecovered error on the medium.
    MediumError = 0x3,
    /// A non-recoverable hardware failure.
    HardwareError = 0x4,
    /// An illegal parameter in the CDB or parameter list.
    IllegalRequest = 0x5,
    /// A unit attention condition was reported.
    UnitAttention = 0x6,
    /// A write to a protected block was attempted.
    DataProtect = 0x7,
    /// Blank medium or format-defined end-of-data.
    BlankCheck = 0x8,
    /// Vendor specific.
    VendorSpecific = 0x9,
    /// EXTENDED COPY aborted.
    CopyAborted = 0xA,
    /// The device server aborted the command.
    AbortedCommand = 0xB,
    /// A buffered device reached end-of-partition.
    VolumeOverflow = 0xD,
    /// Source data did not match the medium (COMPARE AND WRITE, VERIFY).
    Miscompare = 0xE,
    /// A command completed with sense data to report.
    Completed = 0xF,
}

impl SenseKey {
    /// The 4-bit code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The key for a 4-bit code (the high nibble is ignored); `None` for the
    /// reserved value 0xC.
    pub const fn from_code(code: u8) -> Option<Self> {
        Some(match code & 0x0f {
            0x0 => Self::NoSense,
            0x1 => Self::RecoveredError,
            0x2 => Self::NotReady,
            0x3 => Self::MediumError,
            0x4 => Self::HardwareError,
            0x5 => Self::IllegalRequest,
            0x6 => Self::UnitAttention,
            0x7 => Self::DataProtect,
            0x8 => Self::BlankCheck,
            0x9 => Self::VendorSpecific,
            0xA => Self::CopyAborted,
            0xB => Self::AbortedCommand,
            0xD => Self::VolumeOverflow,
            0xE => Self::Miscompare,
            0xF => Self::Completed,
            _ => return None,
        })
    }
}

/// The sense-key-specific field pointer (SPC-4 4.5.2.4.2): which byte (and
/// optionally which bit) of the CDB or parameter list is in error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldPointer {
    /// `true` when the byte is in the CDB (C/D = 1), `false` for the
    /// parameter list (data-out).
    pub in_cdb: bool,
    /// Byte offset of the field.
    pub byte: u16,
    /// The most significant bit of the field in error (0..=7), if meaningful.
    pub bit: Option<u8>,
}

impl FieldPointer {
    /// The three sense-key-specific bytes with SKSV set.
    pub fn to_bytes(self) -> [u8; 3] {
        let mut b0 = 0x80; // SKSV
        if self.in_cdb {
            b0 |= 0x40; // C/D
        }
        if let Some(bit) = self.bit {
            b0 |= 0x08 | (bit & 0x07); // BPV + BIT POINTER
        }
        let [hi, lo] = self.byte.to_be_bytes();
        [b0, hi, lo]
    }
}

/// Sense data for a CHECK CONDITION.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sense {
    /// Sense key.
    pub key: SenseKey,
    /// Additional sense code.
    pub asc: u8,
    /// Additional sense code qualifier.
    pub ascq: u8,
    /// The INFORMATION field (an LBA or a miscompare offset), if valid.
    pub information: Option<u64>,
    /// Sense-key-specific field pointer, for ILLEGAL REQUEST.
    pub field_pointer: Option<FieldPointer>,
    /// Sense-key-specific PROGRESS INDICATION (SPC-4 4.5.2.4.4), for NOT
    /// READY and NO SENSE: how far an operation (a FORMAT UNIT) has come,
    /// in 65536ths. Not sent when a field pointer is set.
    pub progress: Option<u16>,
}

/// Length of fixed-format sense data as produced by [`Sense::to_fixed`].
pub const FIXED_SENSE_LEN: usize = 18;

impl Sense {
    /// Sense data with the given key, ASC and ASCQ and nothing else.
    pub const fn new(key: SenseKey, asc: u8, ascq: u8) -> Self {
        Self {
            key,
            asc,
            ascq,
            information: None,
            field_pointer: None,
            progress: None,
        }
    }

    /// The same sense with the INFORMATION field set.
    pub const fn with_information(mut self, information: u64) -> Self {
        self.information = Some(information);
        self
    }

    /// The same sense with a field pointer.
    pub const fn with_field_pointer(mut self, field_pointer: FieldPointer) -> Self {
        self.field_pointer = Some(field_pointer);
        self
    }

    /// The same sense with a PROGRESS INDICATION (`done` of 65536).
    pub const fn with_progress(mut self, done: u16) -> Self {
        self.progress = Some(done);
        self
    }

    /// The three sense-key-specific bytes (SKSV set), if any: the field
    /// pointer, else the progress indication.
    fn key_specific(&self) -> Option<[u8; 3]> {
        match (self.field_pointer, self.progress) {
            (Some(fp), _) => Some(fp.to_bytes()),
            (None, Some(p)) => {
                let [hi, lo] = p.to_be_bytes();
                Some([0x80, hi, lo])
            }
            (None, None) => None,
        }
    }

    /// NO SENSE (00/00/00): what REQUEST SENSE returns when nothing is pending.
    pub const fn no_sense() -> Self {
        Self::new(SenseKey::NoSense, 0x00, 0x00)
    }

    /// LOGICAL BLOCK ADDRESS OUT OF RANGE (05/21/00).
    pub const fn lba_out_of_range() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x21, 0x00)
    }

    /// INVALID COMMAND OPERATION CODE (05/20/00), without a field pointer
    /// (the whole opcode, or opcode and service action, is unsupported),
    /// as the kernel sends it.
    pub const fn invalid_command_opcode() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x20, 0x00)
    }

    /// INVALID FIELD IN COMMAND INFORMATION UNIT (05/0E/03): the data-out
    /// buffer does not have the length the CDB implies (the kernel's answer
    /// to an underflow or overflow of a data CDB).
    pub const fn invalid_field_in_command_iu() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x0e, 0x03)
    }

    /// INVALID FIELD IN CDB (05/24/00) pointing at `byte` (and `bit`).
    pub const fn invalid_field_in_cdb(byte: u16, bit: Option<u8>) -> Self {
        Self::new(SenseKey::IllegalRequest, 0x24, 0x00).with_field_pointer(FieldPointer {
            in_cdb: true,
            byte,
            bit,
        })
    }

    /// INVALID FIELD IN PARAMETER LIST (05/26/00) pointing at `byte` (and
    /// `bit`) of the data-out buffer.
    pub const fn invalid_field_in_parameter_list(byte: u16, bit: Option<u8>) -> Self {
        Self::new(SenseKey::IllegalRequest, 0x26, 0x00).with_field_pointer(FieldPointer {
            in_cdb: false,
            byte,
            bit,
        })
    }

    /// PARAMETER LIST LENGTH ERROR (05/1A/00).
    pub const fn parameter_list_length_error() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x1a, 0x00)
    }

    /// SAVING PARAMETERS NOT SUPPORTED (05/39/00).
    pub const fn saving_parameters_not_supported() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x39, 0x00)
    }

    /// LOGICAL UNIT NOT SUPPORTED (05/25/00).
    pub const fn invalid_lun() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x25, 0x00)
    }

    /// UNRECOVERED READ ERROR (03/11/00).
    pub const fn medium_error_read() -> Self {
        Self::new(SenseKey::MediumError, 0x11, 0x00)
    }

    /// WRITE ERROR (03/0C/00).
    pub const fn medium_error_write() -> Self {
        Self::new(SenseKey::MediumError, 0x0c, 0x00)
    }

    /// LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE (02/04/00).
    pub const fn not_ready() -> Self {
        Self::new(SenseKey::NotReady, 0x04, 0x00)
    }

    /// LOGICAL UNIT IS IN PROCESS OF BECOMING READY (02/04/01).
    pub const fn becoming_ready() -> Self {
        Self::new(SenseKey::NotReady, 0x04, 0x01)
    }

    /// HARDWARE ERROR with no further detail (04/00/00).
    pub const fn hardware_error() -> Self {
        Self::new(SenseKey::HardwareError, 0x00, 0x00)
    }

    /// INTERNAL TARGET FAILURE (04/44/00).
    pub const fn internal_target_failure() -> Self {
        Self::new(SenseKey::HardwareError, 0x44, 0x00)
    }

    /// MISCOMPARE DURING VERIFY OPERATION (0E/1D/00); `offset` is the byte
    /// offset of the first difference, reported in INFORMATION.
    pub const fn miscompare(offset: u64) -> Self {
        Self::new(SenseKey::Miscompare, 0x1d, 0x00).with_information(offset)
    }

    /// SET TARGET PORT GROUPS COMMAND FAILED (04/67/0A).
    pub const fn set_target_port_groups_failed() -> Self {
        Self::new(SenseKey::HardwareError, 0x67, 0x0a)
    }

    /// ABORTED COMMAND with no further detail (0B/00/00).
    pub const fn aborted_command() -> Self {
        Self::new(SenseKey::AbortedCommand, 0x00, 0x00)
    }

    /// WRITE PROTECTED (07/27/00).
    pub const fn write_protected() -> Self {
        Self::new(SenseKey::DataProtect, 0x27, 0x00)
    }

    /// UNIT ATTENTION: POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (06/29/00).
    pub const fn unit_attention_reset() -> Self {
        Self::new(SenseKey::UnitAttention, 0x29, 0x00)
    }

    /// UNIT ATTENTION: MODE PARAMETERS CHANGED (06/2A/01).
    pub const fn unit_attention_mode_parameters_changed() -> Self {
        Self::new(SenseKey::UnitAttention, 0x2a, 0x01)
    }

    /// UNIT ATTENTION: ASYMMETRIC ACCESS STATE CHANGED (06/2A/06).
    pub const fn unit_attention_asymmetric_access_state_changed() -> Self {
        Self::new(SenseKey::UnitAttention, 0x2a, 0x06)
    }

    /// UNIT ATTENTION: CAPACITY DATA HAS CHANGED (06/2A/09).
    pub const fn unit_attention_capacity_changed() -> Self {
        Self::new(SenseKey::UnitAttention, 0x2a, 0x09)
    }

    /// UNIT ATTENTION: INQUIRY DATA HAS CHANGED (06/3F/03).
    pub const fn unit_attention_inquiry_data_changed() -> Self {
        Self::new(SenseKey::UnitAttention, 0x3f, 0x03)
    }

    /// UNIT ATTENTION: REPORTED LUNS DATA HAS CHANGED (06/3F/0E).
    pub const fn unit_attention_luns_changed() -> Self {
        Self::new(SenseKey::UnitAttention, 0x3f, 0x0e)
    }

    /// Fixed-format sense data (response code 0x70, 18 bytes).
    ///
    /// VALID and INFORMATION are set when `information` is `Some` and fits in
    /// the 4-byte field (otherwise VALID stays 0, as SPC-4 requires; use
    /// [`Sense::to_descriptor`] for 64-bit values). The field pointer goes in
    /// bytes 15..18 with SKSV set.
    pub fn to_fixed(&self) -> [u8; FIXED_SENSE_LEN] {
        let mut b = [0u8; FIXED_SENSE_LEN];
        b[0] = 0x70;
        b[2] = self.key.code();
        if let Some(info) = self.information.and_then(|i| u32::try_from(i).ok()) {
            b[0] |= 0x80;
            crate::bytes::put32(&mut b, 3, info);
        }
        b[7] = (FIXED_SENSE_LEN - 8) as u8;
        b[12] = self.asc;
        b[13] = self.ascq;
        if let Some([s0, s1, s2]) = self.key_specific() {
            b[15] = s0;
            b[16] = s1;
            b[17] = s2;
        }
        b
    }

    /// Descriptor-format sense data (response code 0x72) with an information
    /// descriptor (type 0) and a sense-key-specific descriptor (type 2) when
    /// those are present.
    pub fn to_descriptor(&self) -> Vec<u8> {
        let mut b = vec![0x72, self.key.code(), self.asc, self.ascq, 0, 0, 0, 0];
        if let Some(info) = self.information {
            b.extend_from_slice(&[0x00, 0x0a, 0x80, 0x00]);
            b.extend_from_slice(&info.to_be_bytes());
        }
        if let Some(sks) = self.key_specific() {
            b.extend_from_slice(&[0x02, 0x06, 0x00, 0x00]);
            b.extend_from_slice(&sks);
            b.push(0);
        }
        let additional = b.len().saturating_sub(8);
        if let Some(len) = b.get_mut(7) {
            *len = additional as u8;
        }
        b
    }

    /// Sets the sense-key-specific field from its three bytes: a progress
    /// indication for NOT READY and NO SENSE, a field pointer otherwise.
    fn set_key_specific(&mut self, s: [u8; 3]) {
        if s[0] & 0x80 == 0 {
            return;
        }
        let value = u16::from_be_bytes([s[1], s[2]]);
        match self.key {
            SenseKey::NotReady | SenseKey::NoSense => self.progress = Some(value),
            _ => {
                self.field_pointer = Some(FieldPointer {
                    in_cdb: s[0] & 0x40 != 0,
                    byte: value,
                    bit: (s[0] & 0x08 != 0).then_some(s[0] & 0x07),
                })
            }
        }
    }

    /// Parse fixed (0x70/0x71) or descriptor (0x72/0x73) sense data, e.g.
    /// from a handler that produced raw sense bytes. `None` if the bytes are
    /// not sense data this crate understands. The sense-key-specific bytes
    /// are a progress indication under NOT READY and NO SENSE, a field
    /// pointer under the other keys.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        use crate::bytes::{be16, be32, be64, u8_at};
        match u8_at(bytes, 0) & 0x7f {
            0x70 | 0x71 if bytes.len() >= 14 => {
                let key = SenseKey::from_code(u8_at(bytes, 2))?;
                let mut s = Self::new(key, u8_at(bytes, 12), u8_at(bytes, 13));
                if u8_at(bytes, 0) & 0x80 != 0 {
                    s.information = Some(u64::from(be32(bytes, 3)));
                }
                if bytes.len() >= 18 {
                    s.set_key_specific([u8_at(bytes, 15), u8_at(bytes, 16), u8_at(bytes, 17)]);
                }
                Some(s)
            }
            0x72 | 0x73 if bytes.len() >= 8 => {
                let key = SenseKey::from_code(u8_at(bytes, 1))?;
                let mut s = Self::new(key, u8_at(bytes, 2), u8_at(bytes, 3));
                let end = bytes.len().min(8 + usize::from(u8_at(bytes, 7)));
                let mut off = 8;
                while off + 2 <= end {
                    let kind = u8_at(bytes, off);
                    let len = usize::from(u8_at(bytes, off + 1));
                    if off + 2 + len > end {
                        break;
                    }
                    match kind {
                        0x00 if len >= 0x0a && u8_at(bytes, off + 2) & 0x80 != 0 => {
                            s.information = Some(be64(bytes, off + 4));
                        }
                        0x02 if len >= 6 => {
                            let b = be16(bytes, off + 5).to_be_bytes();
                            s.set_key_specific([u8_at(bytes, off + 4), b[0], b[1]]);
                        }
                        _ => {}
                    }
                    off += 2 + len;
                }
                Some(s)
            }
            _ => None,
        }
    }
}

/// Senses of EXTENDED COPY and the ALUA commands, as LIO sends them (no
/// sense-key-specific field pointer: the kernel never adds one to these).
impl Sense {
    /// INVALID FIELD IN PARAMETER LIST (05/26/00) without a field pointer,
    /// byte for byte what LIO sends for `TCM_INVALID_PARAMETER_LIST`.
    pub const fn invalid_parameter_list() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x26, 0x00)
    }

    /// INVALID FIELD IN CDB (05/24/00) without a field pointer, byte for
    /// byte what LIO sends for `TCM_INVALID_CDB_FIELD`.
    pub const fn invalid_cdb_field() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x24, 0x00)
    }

    /// TOO MANY TARGET DESCRIPTORS (05/26/06): an EXTENDED COPY CSCD
    /// descriptor list longer than the copy manager allows.
    pub const fn too_many_target_descriptors() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x26, 0x06)
    }

    /// UNSUPPORTED TARGET DESCRIPTOR TYPE CODE (05/26/07).
    pub const fn unsupported_target_descriptor_type() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x26, 0x07)
    }

    /// TOO MANY SEGMENT DESCRIPTORS (05/26/08).
    pub const fn too_many_segment_descriptors() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x26, 0x08)
    }

    /// UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE (05/26/09).
    pub const fn unsupported_segment_descriptor_type() -> Self {
        Self::new(SenseKey::IllegalRequest, 0x26, 0x09)
    }

    /// COPY ABORTED: COPY TARGET DEVICE NOT REACHABLE (0A/0D/02): an
    /// EXTENDED COPY names a device the copy manager cannot reach, or its
    /// I/O failed part way (LIO answers every mid-copy failure this way).
    pub const fn copy_target_device_not_reachable() -> Self {
        Self::new(SenseKey::CopyAborted, 0x0d, 0x02)
    }

    /// LOGICAL UNIT COMMUNICATION FAILURE (02/08/00), with the NOT READY key
    /// LIO uses for it (so that initiators retry).
    pub const fn logical_unit_communication_failure() -> Self {
        Self::new(SenseKey::NotReady, 0x08, 0x00)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kaq(s: Sense) -> (u8, u8, u8) {
        (s.key.code(), s.asc, s.ascq)
    }

    #[test]
    fn constructor_codes() {
        assert_eq!(kaq(Sense::no_sense()), (0x0, 0x00, 0x00));
        assert_eq!(kaq(Sense::lba_out_of_range()), (0x5, 0x21, 0x00));
        assert_eq!(kaq(Sense::invalid_command_opcode()), (0x5, 0x20, 0x00));
        assert_eq!(kaq(Sense::invalid_field_in_cdb(2, None)), (0x5, 0x24, 0x00));
        assert_eq!(
            kaq(Sense::invalid_field_in_parameter_list(2, None)),
            (0x5, 0x26, 0x00)
        );
        assert_eq!(kaq(Sense::parameter_list_length_error()), (0x5, 0x1a, 0x00));
        assert_eq!(
            kaq(Sense::saving_parameters_not_supported()),
            (0x5, 0x39, 0x00)
        );
        assert_eq!(kaq(Sense::invalid_lun()), (0x5, 0x25, 0x00));
        assert_eq!(kaq(Sense::medium_error_read()), (0x3, 0x11, 0x00));
        assert_eq!(kaq(Sense::medium_error_write()), (0x3, 0x0c, 0x00));
        assert_eq!(kaq(Sense::not_ready()), (0x2, 0x04, 0x00));
        assert_eq!(kaq(Sense::becoming_ready()), (0x2, 0x04, 0x01));
        assert_eq!(kaq(Sense::hardware_error()), (0x4, 0x00, 0x00));
        assert_eq!(kaq(Sense::internal_target_failure()), (0x4, 0x44, 0x00));
        assert_eq!(kaq(Sense::miscompare(7)), (0xe, 0x1d, 0x00));
        assert_eq!(kaq(Sense::aborted_command()), (0xb, 0x00, 0x00));
        assert_eq!(kaq(Sense::write_protected()), (0x7, 0x27, 0x00));
        assert_eq!(kaq(Sense::unit_attention_reset()), (0x6, 0x29, 0x00));
        assert_eq!(
            kaq(Sense::unit_attention_asymmetric_access_state_changed()),
            (0x6, 0x2a, 0x06)
        );
        assert_eq!(
            kaq(Sense::unit_attention_mode_parameters_changed()),
            (0x6, 0x2a, 0x01)
        );
        assert_eq!(
            kaq(Sense::unit_attention_capacity_changed()),
            (0x6, 0x2a, 0x09)
        );
        assert_eq!(
            kaq(Sense::unit_attention_inquiry_data_changed()),
            (0x6, 0x3f, 0x03)
        );
        assert_eq!(kaq(Sense::unit_attention_luns_changed()), (0x6, 0x3f, 0x0e));
    }

    #[test]
    fn copy_and_alua_constructor_codes() {
        assert_eq!(kaq(Sense::invalid_parameter_list()), (0x5, 0x26, 0x00));
        assert_eq!(kaq(Sense::invalid_cdb_field()), (0x5, 0x24, 0x00));
        assert_eq!(kaq(Sense::too_many_target_descriptors()), (0x5, 0x26, 0x06));
        assert_eq!(
            kaq(Sense::unsupported_target_descriptor_type()),
            (0x5, 0x26, 0x07)
        );
        assert_eq!(
            kaq(Sense::too_many_segment_descriptors()),
            (0x5, 0x26, 0x08)
        );
        assert_eq!(
            kaq(Sense::unsupported_segment_descriptor_type()),
            (0x5, 0x26, 0x09)
        );
        assert_eq!(
            kaq(Sense::copy_target_device_not_reachable()),
            (0xa, 0x0d, 0x02)
        );
        assert_eq!(
            kaq(Sense::logical_unit_communication_failure()),
            (0x2, 0x08, 0x00)
        );
        assert_eq!(Sense::invalid_parameter_list().field_pointer, None);
        assert_eq!(Sense::invalid_cdb_field().field_pointer, None);
    }

    #[test]
    fn fixed_plain() {
        let b = Sense::lba_out_of_range().to_fixed();
        assert_eq!(
            b,
            [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn fixed_information() {
        let b = Sense::miscompare(0x1234).to_fixed();
        assert_eq!(b[0], 0xf0);
        assert_eq!(b[2], 0x0e);
        assert_eq!(&b[3..7], &[0, 0, 0x12, 0x34]);
        assert_eq!((b[12], b[13]), (0x1d, 0));
        // Too large for the fixed field: VALID stays clear.
        let b = Sense::medium_error_read()
            .with_information(1 << 40)
            .to_fixed();
        assert_eq!(b[0], 0x70);
        assert_eq!(&b[3..7], &[0, 0, 0, 0]);
    }

    #[test]
    fn fixed_field_pointer() {
        let b = Sense::invalid_field_in_cdb(2, None).to_fixed();
        assert_eq!(&b[15..18], &[0xc0, 0x00, 0x02]);
        let b = Sense::invalid_field_in_cdb(1, Some(4)).to_fixed();
        assert_eq!(&b[15..18], &[0xcc, 0x00, 0x01]);
        let b = Sense::invalid_field_in_parameter_list(0x123, Some(2)).to_fixed();
        assert_eq!(&b[15..18], &[0x8a, 0x01, 0x23]);
        let b = Sense::invalid_command_opcode().to_fixed();
        assert_eq!(&b[15..18], &[0, 0, 0]);
    }

    #[test]
    fn progress_indication() {
        let s = Sense::not_ready().with_progress(0x8000);
        assert_eq!(&s.to_fixed()[15..18], &[0x80, 0x80, 0x00]);
        let d = s.to_descriptor();
        assert_eq!(&d[8..16], &[0x02, 0x06, 0, 0, 0x80, 0x80, 0x00, 0]);
        assert_eq!(Sense::parse(&s.to_fixed()), Some(s));
        assert_eq!(Sense::parse(&d), Some(s));
        let none = Sense::no_sense().with_progress(0);
        assert_eq!(Sense::parse(&none.to_fixed()), Some(none));
        // A field pointer wins over progress on the wire.
        let both = Sense::invalid_field_in_cdb(2, None).with_progress(7);
        assert_eq!(&both.to_fixed()[15..18], &[0xc0, 0x00, 0x02]);
    }

    #[test]
    fn descriptor_format() {
        let s = Sense::invalid_field_in_cdb(7, Some(3)).with_information(1 << 40);
        let b = s.to_descriptor();
        assert_eq!(&b[..8], &[0x72, 0x05, 0x24, 0x00, 0, 0, 0, 20]);
        assert_eq!(&b[8..12], &[0x00, 0x0a, 0x80, 0x00]);
        assert_eq!(&b[12..20], &(1u64 << 40).to_be_bytes());
        assert_eq!(&b[20..28], &[0x02, 0x06, 0, 0, 0xcb, 0x00, 0x07, 0]);
        assert_eq!(Sense::parse(&b), Some(s));
        assert_eq!(
            Sense::no_sense().to_descriptor(),
            vec![0x72, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn parse_round_trip() {
        for s in [
            Sense::invalid_field_in_parameter_list(9, Some(6)),
            Sense::miscompare(77),
            Sense::not_ready(),
        ] {
            assert_eq!(Sense::parse(&s.to_fixed()), Some(s));
            assert_eq!(Sense::parse(&s.to_descriptor()), Some(s));
        }
        assert_eq!(Sense::parse(&[]), None);
        assert_eq!(Sense::parse(&[0x70, 0, 0x0c]), None);
    }
}
