//! GET EVENT STATUS NOTIFICATION (MMC-6 6.7), polled: the events a drive
//! queues ([`EventQueue`]) and the answer that reports, and consumes, one
//! of them.
//!
//! Three notification classes are supported: operational change (the
//! drive's features changed, e.g. when it starts), media (a disc was
//! loaded or removed: what Linux polls for) and device busy (a background
//! format started or ended). A request names the classes it wants; the
//! drive reports the lowest-numbered one with an event pending, or, with
//! none pending, the lowest-numbered requested class with "no change". An
//! event is consumed when its whole descriptor was transferred.

use crate::bytes::put16;
use crate::mmc::DriveState;
use crate::sense::Sense;

/// Notification class 1: operational change.
pub const CLASS_OPERATIONAL_CHANGE: u8 = 1;
/// Notification class 4: media.
pub const CLASS_MEDIA: u8 = 4;
/// Notification class 6: device busy.
pub const CLASS_DEVICE_BUSY: u8 = 6;

/// The classes this drive supports, as the SUPPORTED EVENT CLASSES byte
/// (and the NOTIFICATION CLASS REQUEST field) encode them.
pub const SUPPORTED_CLASSES: u8 =
    1 << CLASS_OPERATIONAL_CHANGE | 1 << CLASS_MEDIA | 1 << CLASS_DEVICE_BUSY;

/// Length of the event status notification header.
pub const HEADER_LEN: usize = 4;
/// Length of an event descriptor.
pub const DESCRIPTOR_LEN: usize = 4;

/// A media event (MEDIA EVENT CODE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaEvent {
    /// The user asked for the medium to be ejected (1).
    EjectRequest,
    /// A medium was loaded and is ready (2).
    NewMedia,
    /// The medium was removed (3).
    MediaRemoval,
    /// The medium was changed (4).
    MediaChanged,
}

impl MediaEvent {
    /// The event code.
    pub const fn code(self) -> u8 {
        match self {
            MediaEvent::EjectRequest => 1,
            MediaEvent::NewMedia => 2,
            MediaEvent::MediaRemoval => 3,
            MediaEvent::MediaChanged => 4,
        }
    }
}

/// An operational change event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OperationalEvent {
    /// OPERATIONAL EVENT: 1 change requested, 2 change notification.
    pub event: u8,
    /// OPERATIONAL CHANGE: 1 feature change, 2 feature added, 3 drive
    /// reset, 4 firmware changed, 5 inquiry change.
    pub change: u16,
}

impl OperationalEvent {
    /// The drive's features changed (what a drive reports once it is up,
    /// and when its medium comes or goes).
    pub const FEATURE_CHANGE: Self = Self {
        event: 2,
        change: 1,
    };
}

/// Events a drive has not reported yet: at most one a class (a newer one
/// replaces an older one of its class, as real drives keep them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventQueue {
    operational: Option<OperationalEvent>,
    media: Option<MediaEvent>,
    busy: bool,
}

impl EventQueue {
    /// Queues an operational change event.
    pub fn post_operational(&mut self, event: OperationalEvent) {
        self.operational = Some(event);
    }

    /// Queues a media event.
    pub fn post_media(&mut self, event: MediaEvent) {
        self.media = Some(event);
    }

    /// Queues a device busy event (the drive became busy, or idle again).
    pub fn post_busy(&mut self) {
        self.busy = true;
    }

    /// The media event pending, if any.
    pub fn media(&self) -> Option<MediaEvent> {
        self.media
    }

    /// Whether `class` has an event pending.
    fn pending(&self, class: u8) -> bool {
        match class {
            CLASS_OPERATIONAL_CHANGE => self.operational.is_some(),
            CLASS_MEDIA => self.media.is_some(),
            CLASS_DEVICE_BUSY => self.busy,
            _ => false,
        }
    }

    /// Answers GET EVENT STATUS NOTIFICATION for the NOTIFICATION CLASS
    /// REQUEST `classes` (before allocation-length truncation), consuming
    /// the event reported when `alloc_len` takes its whole descriptor.
    /// Asynchronous operation (POLLED clear) is INVALID FIELD IN CDB; no
    /// supported class requested is a header with NEA set.
    pub fn answer(
        &mut self,
        state: &DriveState,
        polled: bool,
        classes: u8,
        alloc_len: u16,
    ) -> Result<Vec<u8>, Sense> {
        if !polled {
            return Err(Sense::invalid_field_in_cdb(1, Some(0)));
        }
        let requested = classes & SUPPORTED_CLASSES;
        let mut b = vec![0u8; HEADER_LEN];
        b[3] = SUPPORTED_CLASSES;
        if requested == 0 {
            b[2] = 0x80; // NEA
            return Ok(b);
        }
        let in_request = |c: &u8| requested & (1 << c) != 0;
        let classes = [CLASS_OPERATIONAL_CHANGE, CLASS_MEDIA, CLASS_DEVICE_BUSY];
        let class = classes
            .iter()
            .copied()
            .filter(in_request)
            .find(|&c| self.pending(c))
            .or_else(|| classes.iter().copied().find(in_request))
            .unwrap_or(CLASS_OPERATIONAL_CHANGE);
        let consume = usize::from(alloc_len) >= HEADER_LEN + DESCRIPTOR_LEN;
        let descriptor = match class {
            CLASS_OPERATIONAL_CHANGE => {
                let e = if consume {
                    self.operational.take()
                } else {
                    self.operational
                };
                let mut d = [0u8; DESCRIPTOR_LEN];
                if let Some(e) = e {
                    d[0] = e.event & 0x0f;
                    put16(&mut d, 2, e.change);
                }
                if state.prevent.persistent {
                    d[1] |= 0x80;
                }
                // OPERATIONAL STATUS: 2h busy while formatting, 0h available.
                if state.format_progress.is_some() {
                    d[1] |= 0x02;
                }
                d
            }
            CLASS_MEDIA => {
                let e = if consume {
                    self.media.take()
                } else {
                    self.media
                };
                let mut d = [0u8; DESCRIPTOR_LEN];
                d[0] = e.map_or(0, MediaEvent::code);
                d[1] = if state.loaded { 0x02 } else { 0x01 }; // MEDIA PRESENT / DOOR OPEN
                d
            }
            _ => {
                let e = if consume {
                    std::mem::take(&mut self.busy)
                } else {
                    self.busy
                };
                [u8::from(e), u8::from(state.format_progress.is_some()), 0, 0]
            }
        };
        b[2] = class;
        b.extend_from_slice(&descriptor);
        put16(&mut b, 0, DESCRIPTOR_LEN as u16);
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmc::{Drive, Medium};

    fn state() -> DriveState {
        DriveState::new(
            Drive::DvdRam,
            Medium {
                blocks: 10,
                writable: true,
            },
        )
    }

    #[test]
    fn media_events_are_reported_once() {
        let mut q = EventQueue::default();
        let mut s = state();
        // Nothing pending: media class, no change, medium present.
        assert_eq!(
            q.answer(&s, true, 0x10, 8).unwrap(),
            [0, 4, 4, SUPPORTED_CLASSES, 0, 0x02, 0, 0]
        );
        s.loaded = false;
        q.post_media(MediaEvent::MediaRemoval);
        // A header only does not consume it.
        assert_eq!(q.answer(&s, true, 0x10, 4).unwrap()[..4], [0, 4, 4, 0x52]);
        assert_eq!(q.media(), Some(MediaEvent::MediaRemoval));
        assert_eq!(
            q.answer(&s, true, 0x10, 8).unwrap(),
            [0, 4, 4, 0x52, 3, 0x01, 0, 0]
        );
        assert_eq!(q.answer(&s, true, 0x10, 8).unwrap()[4], 0);
    }

    #[test]
    fn the_lowest_class_with_an_event_wins() {
        let mut q = EventQueue::default();
        let s = state();
        q.post_operational(OperationalEvent::FEATURE_CHANGE);
        q.post_media(MediaEvent::NewMedia);
        q.post_busy();
        assert_eq!(
            q.answer(&s, true, 0x52, 8).unwrap(),
            [0, 4, 1, 0x52, 2, 0, 0, 1]
        );
        assert_eq!(q.answer(&s, true, 0x52, 8).unwrap()[2..5], [4, 0x52, 2]);
        assert_eq!(q.answer(&s, true, 0x52, 8).unwrap()[2..5], [6, 0x52, 1]);
        // None left: the lowest requested class, no change.
        assert_eq!(q.answer(&s, true, 0x50, 8).unwrap()[2..5], [4, 0x52, 0]);
        assert_eq!(q.answer(&s, true, 0x40, 8).unwrap()[2..6], [6, 0x52, 0, 0]);
    }

    #[test]
    fn unsupported_and_asynchronous_requests() {
        let mut q = EventQueue::default();
        let s = state();
        // Power management and external request only: no event available.
        assert_eq!(q.answer(&s, true, 0x0c, 8).unwrap(), [0, 0, 0x80, 0x52]);
        assert_eq!(q.answer(&s, true, 0, 8).unwrap(), [0, 0, 0x80, 0x52]);
        assert_eq!(
            q.answer(&s, false, 0x10, 8),
            Err(Sense::invalid_field_in_cdb(1, Some(0)))
        );
    }

    #[test]
    fn busy_while_formatting() {
        let mut q = EventQueue::default();
        let mut s = state();
        s.format_progress = Some(100);
        q.post_busy();
        assert_eq!(q.answer(&s, true, 0x40, 8).unwrap()[4..6], [1, 1]);
        assert_eq!(q.answer(&s, true, 0x02, 8).unwrap()[4..6], [0, 2]);
    }
}
