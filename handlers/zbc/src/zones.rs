//! [`Zones`]: the zone state machine of one emulated disk, with no I/O.
//!
//! It decides every answer that depends on zone state — whether a read or
//! a write may proceed and with which sense data if not, what REPORT ZONES
//! lists, what each ZBC OUT action does — and keeps write pointers, zone
//! conditions and the open-zone accounting. The handler asks it before
//! moving data, tells it when a write has landed, and writes the records
//! it reports changed ([`Zones::take_changed`]) to the backing file.
//!
//! Open zones follow ZBC: a write to an EMPTY or CLOSED zone opens it
//! implicitly; when as many zones are open as the device allows, the least
//! recently written implicitly opened zone is closed to make room, and
//! when all of them are explicitly opened a host-managed disk refuses the
//! write (INSUFFICIENT ZONE RESOURCES), as it refuses an OPEN ZONE past the
//! limit. A host-aware disk's limit is only the optimal number: it closes
//! implicitly opened zones the same way but never refuses.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;

use tcmu_scsi::zbc::{self, ReportingOptions, ZoneAction, ZoneCondition, ZoneDescriptor, ZoneType};
use tcmu_scsi::{Sense, ZonedModel};

use crate::geometry::Geometry;
use crate::meta::ZoneRecord;

/// A condition the cfgstring imposes on a zone (not kept in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// READ ONLY: read, never written.
    ReadOnly,
    /// OFFLINE: neither read nor written.
    Offline,
}

/// One zone: its record as the file keeps it, and what is only in memory.
#[derive(Debug, Clone)]
struct Zone {
    rec: ZoneRecord,
    fault: Option<Fault>,
    /// When it was last written (opened), for the least recently used
    /// choice among implicitly opened zones.
    used: u64,
}

/// A run of blocks of a read: from the file, or zeroes (past a write
/// pointer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRun {
    /// Number of blocks.
    pub blocks: u64,
    /// Read from the file (else zeroes).
    pub from_file: bool,
}

/// The zone state of one disk.
#[derive(Debug)]
pub struct Zones {
    geo: Geometry,
    zones: Vec<Zone>,
    /// Implicitly opened zones by (last use, zone).
    implicit: BTreeSet<(u64, u32)>,
    /// Number of explicitly opened zones.
    explicit: u32,
    /// The use counter.
    clock: u64,
    /// Zones whose record changed since [`Zones::take_changed`].
    changed: BTreeSet<u32>,
}

fn invalid_field(byte: u16) -> Sense {
    Sense::invalid_field_in_cdb(byte, None)
}

impl Zones {
    /// The state of a disk laid out as `geo`, from its zone records (one
    /// per zone, checked), with the cfgstring's faults. Opened zones stay
    /// open; if more are open than `geo` allows now, the implicitly opened
    /// ones past the limit are closed.
    pub fn new(
        geo: Geometry,
        mut records: Vec<ZoneRecord>,
        faults: &[(RangeInclusive<u32>, Fault)],
    ) -> Self {
        // One record per zone, always (the disk has at least two zones).
        let n = geo.nr_zones.max(1);
        records.truncate(n as usize);
        for i in records.len() as u32..n {
            records.push(ZoneRecord::fresh(&geo, i));
        }
        let zones = records
            .into_iter()
            .enumerate()
            .map(|(i, rec)| Zone {
                rec,
                fault: None,
                used: i as u64,
            })
            .collect::<Vec<_>>();
        let mut z = Self {
            clock: zones.len() as u64,
            geo,
            zones,
            implicit: BTreeSet::new(),
            explicit: 0,
            changed: BTreeSet::new(),
        };
        for (i, zone) in z.zones.iter().enumerate() {
            match zone.rec.cond {
                ZoneCondition::ImplicitlyOpen => {
                    z.implicit.insert((zone.used, i as u32));
                }
                ZoneCondition::ExplicitlyOpen => z.explicit += 1,
                _ => {}
            }
        }
        while z.open_count() > z.geo.max_open && z.close_least_recent() {}
        z.set_faults(faults);
        z
    }

    /// Makes the zones of `faults` READ ONLY or OFFLINE (the last entry
    /// naming a zone wins) and every other zone what its record says.
    /// Conventional zones are left alone. A faulty zone is closed.
    pub fn set_faults(&mut self, faults: &[(RangeInclusive<u32>, Fault)]) {
        for i in 0..self.geo.nr_zones {
            let fault = faults
                .iter()
                .rev()
                .find(|(r, _)| r.contains(&i))
                .map(|(_, f)| *f)
                .filter(|_| self.zone(i).rec.zone_type.has_write_pointer());
            if fault.is_some() {
                self.close(i);
            }
            if let Some(z) = self.zones.get_mut(i as usize) {
                z.fault = fault;
            }
        }
    }

    /// A freshly formatted disk.
    pub fn fresh(geo: Geometry) -> Self {
        let records = (0..geo.nr_zones)
            .map(|i| ZoneRecord::fresh(&geo, i))
            .collect();
        Self::new(geo, records, &[])
    }

    /// The layout.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    /// The record of zone `i`, as the file keeps it.
    pub fn record(&self, i: u32) -> Option<ZoneRecord> {
        self.zones.get(i as usize).map(|z| z.rec)
    }

    /// Implicitly and explicitly opened zones.
    pub fn open_count(&self) -> u32 {
        self.implicit.len() as u32 + self.explicit
    }

    /// The zones whose record changed since the last call, in order.
    pub fn take_changed(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.changed).into_iter().collect()
    }

    /// Whether any sequential zone holds data.
    pub fn any_data(&self) -> bool {
        self.zones.iter().any(|z| z.rec.has_data())
    }

    /// The number of sequential zones holding data.
    pub fn zones_with_data(&self) -> usize {
        self.zones.iter().filter(|z| z.rec.has_data()).count()
    }

    fn zone(&self, i: u32) -> &Zone {
        // Callers index zones of LBAs below the capacity.
        &self.zones[(i as usize).min(self.zones.len().saturating_sub(1))]
    }

    fn zone_mut(&mut self, i: u32) -> &mut Zone {
        let n = self.zones.len().saturating_sub(1);
        self.changed.insert(i);
        &mut self.zones[(i as usize).min(n)]
    }

    fn end(&self, i: u32) -> u64 {
        let r = &self.zone(i).rec;
        r.start + r.len
    }

    /// The zones a range of blocks touches (`blocks` > 0, within the
    /// capacity).
    fn touched(&self, lba: u64, blocks: u64) -> RangeInclusive<u32> {
        let last = lba + blocks.max(1) - 1;
        self.geo.zone_of(lba)..=self.geo.zone_of(last)
    }

    /// Zone `i` as REPORT ZONES describes it.
    pub fn descriptor(&self, i: u32) -> ZoneDescriptor {
        let z = self.zone(i);
        let (condition, write_pointer) = match z.fault {
            Some(Fault::ReadOnly) => (ZoneCondition::ReadOnly, z.rec.wp),
            Some(Fault::Offline) => (ZoneCondition::Offline, u64::MAX),
            None => (z.rec.cond, z.rec.wp),
        };
        ZoneDescriptor {
            zone_type: z.rec.zone_type,
            condition,
            reset_recommended: z.rec.reset,
            non_sequential: z.rec.non_seq,
            length: z.rec.len,
            start: z.rec.start,
            write_pointer,
        }
    }

    /// REPORT ZONES from the zone holding `lba`; LOGICAL BLOCK ADDRESS OUT
    /// OF RANGE past the capacity.
    pub fn report(
        &self,
        lba: u64,
        options: ReportingOptions,
        partial: bool,
        alloc_len: u32,
    ) -> Result<Vec<u8>, Sense> {
        if lba >= self.geo.capacity {
            return Err(Sense::lba_out_of_range());
        }
        let first = self.geo.zone_of(lba);
        Ok(zbc::report_zones(
            self.geo.capacity - 1,
            (first..self.geo.nr_zones).map(|i| self.descriptor(i)),
            options,
            partial,
            alloc_len,
        ))
    }

    /// What a read of `blocks` (> 0) blocks at `lba` returns: runs of file
    /// data and of zeroes (past a write pointer: unwritten blocks read as
    /// zeroes, URSWRZ), or why it is refused: an OFFLINE zone, or on a
    /// host-managed disk a read from a conventional into a sequential zone.
    pub fn read(&self, lba: u64, blocks: u64) -> Result<Vec<ReadRun>, Sense> {
        let zones = self.touched(lba, blocks);
        let first_type = self.zone(*zones.start()).rec.zone_type;
        let mut runs: Vec<ReadRun> = Vec::with_capacity(1);
        let mut push = |blocks: u64, from_file: bool| {
            if blocks == 0 {
                return;
            }
            match runs.last_mut() {
                Some(r) if r.from_file == from_file => r.blocks += blocks,
                _ => runs.push(ReadRun { blocks, from_file }),
            }
        };
        let end = lba + blocks;
        let mut at = lba;
        for i in zones {
            let z = self.zone(i);
            if z.fault == Some(Fault::Offline) {
                return Err(Sense::zone_is_offline());
            }
            if self.geo.model == ZonedModel::HostManaged && z.rec.zone_type != first_type {
                return Err(Sense::attempt_to_read_invalid_data());
            }
            let stop = end.min(z.rec.start + z.rec.len);
            let written = if z.rec.zone_type.has_write_pointer() {
                z.rec.wp.clamp(at, stop)
            } else {
                stop
            };
            push(written - at, true);
            push(stop - written, false);
            at = stop;
        }
        Ok(runs)
    }

    /// Whether a write of `blocks` (> 0) blocks at `lba` may proceed, with
    /// the sense data of the first rule it breaks (in tcmu-runner's
    /// order): a zone that is offline or read only, a boundary between
    /// zone types, a FULL sequential write required zone, a write not at
    /// the write pointer, a write past the zone's end, and on a
    /// host-managed disk one more zone to open when every open zone was
    /// opened explicitly.
    pub fn check_write(&self, lba: u64, blocks: u64) -> Result<(), Sense> {
        let zones = self.touched(lba, blocks);
        let first_type = self.zone(*zones.start()).rec.zone_type;
        let end = lba + blocks;
        for i in zones {
            let z = self.zone(i);
            match z.fault {
                Some(Fault::Offline) => return Err(Sense::zone_is_offline()),
                Some(Fault::ReadOnly) => return Err(Sense::zone_is_read_only()),
                None => {}
            }
            if z.rec.zone_type != first_type {
                return Err(Sense::write_boundary_violation());
            }
            if z.rec.zone_type == ZoneType::SequentialWriteRequired {
                if z.rec.cond == ZoneCondition::Full {
                    return Err(Sense::invalid_cdb_field());
                }
                if lba != z.rec.wp {
                    return Err(Sense::unaligned_write_command());
                }
                if end > self.end(i) {
                    return Err(Sense::write_boundary_violation());
                }
                if self.geo.model == ZonedModel::HostManaged
                    && !z.rec.cond.is_open()
                    && self.explicit >= self.geo.max_open
                {
                    return Err(Sense::insufficient_zone_resources());
                }
            }
        }
        Ok(())
    }

    /// Admits a write ([`check_write`](Self::check_write)) and opens the
    /// sequential zones it touches implicitly. Call
    /// [`end_write`](Self::end_write) once the data has landed.
    pub fn begin_write(&mut self, lba: u64, blocks: u64) -> Result<(), Sense> {
        self.check_write(lba, blocks)?;
        for i in self.touched(lba, blocks) {
            let z = self.zone(i);
            if !z.rec.zone_type.has_write_pointer() {
                continue;
            }
            match z.rec.cond {
                ZoneCondition::Empty | ZoneCondition::Closed => self.open_implicitly(i),
                ZoneCondition::ImplicitlyOpen => self.touch(i),
                _ => {}
            }
        }
        Ok(())
    }

    /// Records a write of `blocks` blocks at `lba` that has landed: write
    /// pointers move, zones written to their end become FULL, and on a
    /// host-aware disk a write away from the write pointer sets NON_SEQ.
    pub fn end_write(&mut self, lba: u64, blocks: u64) {
        let end = lba + blocks;
        for i in self.touched(lba, blocks) {
            if !self.zone(i).rec.zone_type.has_write_pointer() {
                continue;
            }
            let zone_end = self.end(i);
            let from = lba.max(self.zone(i).rec.start);
            let to = end.min(zone_end);
            let rec = &mut self.zone_mut(i).rec;
            if from != rec.wp
                && rec.zone_type == ZoneType::SequentialWritePreferred
                && rec.cond != ZoneCondition::Full
            {
                rec.non_seq = true;
            }
            rec.wp = rec.wp.max(to);
            if rec.wp >= zone_end {
                self.make_full(i);
            } else if rec.cond == ZoneCondition::Empty {
                // Closed to make room while the write was in flight.
                self.zone_mut(i).rec.cond = ZoneCondition::Closed;
            }
        }
    }

    /// The zones a ZBC OUT action applies to, or why it is refused: with
    /// ALL, every zone it can change; otherwise the `count` (0 or 1: one)
    /// zones from the one starting at `lba`, which must exist, have write
    /// pointers and be neither read only nor offline.
    pub fn targets(
        &self,
        action: ZoneAction,
        lba: u64,
        count: u16,
        all: bool,
    ) -> Result<Vec<u32>, Sense> {
        if all {
            return Ok((0..self.geo.nr_zones)
                .filter(|&i| {
                    let z = self.zone(i);
                    let c = z.rec.cond;
                    z.fault.is_none()
                        && z.rec.zone_type.has_write_pointer()
                        && match action {
                            ZoneAction::Close => c.is_open(),
                            ZoneAction::Finish => c.is_open() || c == ZoneCondition::Closed,
                            ZoneAction::Open => c == ZoneCondition::Closed,
                            ZoneAction::ResetWritePointer => c != ZoneCondition::Empty,
                        }
                })
                .collect());
        }
        if lba >= self.geo.capacity {
            return Err(Sense::lba_out_of_range());
        }
        let first = self.geo.zone_of(lba);
        if self.geo.zone_start(first) != lba {
            return Err(invalid_field(2));
        }
        let n = u32::from(count.max(1));
        if first
            .checked_add(n)
            .is_none_or(|end| end > self.geo.nr_zones)
        {
            return Err(invalid_field(12));
        }
        for i in first..first + n {
            let z = self.zone(i);
            if !z.rec.zone_type.has_write_pointer() {
                return Err(invalid_field(2));
            }
            match z.fault {
                Some(Fault::ReadOnly) => return Err(Sense::zone_is_read_only()),
                Some(Fault::Offline) => return Err(Sense::zone_is_offline()),
                None => {}
            }
        }
        Ok((first..first + n).collect())
    }

    /// The block ranges (start, blocks) that FINISH ZONE of `targets`
    /// fills: from each write pointer to its zone's end, which must read
    /// as zeroes once the write pointer is there.
    pub fn finish_ranges(&self, targets: &[u32]) -> Vec<(u64, u64)> {
        targets
            .iter()
            .filter_map(|&i| {
                let r = &self.zone(i).rec;
                (r.cond != ZoneCondition::Full && r.wp < r.start + r.len)
                    .then(|| (r.wp, r.start + r.len - r.wp))
            })
            .collect()
    }

    /// The block ranges (start, blocks) of `targets` that hold data: what
    /// RESET WRITE POINTER can give back to the file system.
    pub fn written_ranges(&self, targets: &[u32]) -> Vec<(u64, u64)> {
        targets
            .iter()
            .filter_map(|&i| {
                let r = &self.zone(i).rec;
                r.has_data().then_some((r.start, r.len))
            })
            .collect()
    }

    /// Applies a ZBC OUT action to `targets` (from
    /// [`targets`](Self::targets)); OPEN ZONE is refused with
    /// INSUFFICIENT ZONE RESOURCES on a host-managed disk when the zones
    /// to open explicitly would exceed the limit.
    pub fn apply(&mut self, action: ZoneAction, targets: &[u32]) -> Result<(), Sense> {
        match action {
            ZoneAction::Open => {
                let to_open: Vec<u32> = targets
                    .iter()
                    .copied()
                    .filter(|&i| {
                        !matches!(
                            self.zone(i).rec.cond,
                            ZoneCondition::ExplicitlyOpen | ZoneCondition::Full
                        )
                    })
                    .collect();
                if self.geo.model == ZonedModel::HostManaged
                    && self.explicit as usize + to_open.len() > self.geo.max_open as usize
                {
                    return Err(Sense::insufficient_zone_resources());
                }
                for i in to_open {
                    self.open_explicitly(i);
                }
            }
            ZoneAction::Close => {
                for &i in targets {
                    self.close(i);
                }
            }
            ZoneAction::Finish => {
                for &i in targets {
                    if self.zone(i).rec.cond != ZoneCondition::Full {
                        self.make_full(i);
                    }
                }
            }
            ZoneAction::ResetWritePointer => {
                for &i in targets {
                    self.reset(i);
                }
            }
        }
        Ok(())
    }

    /// FORMAT UNIT: every sequential zone EMPTY, faults or not.
    pub fn reset_all(&mut self) {
        for i in 0..self.geo.nr_zones {
            if self.zone(i).rec.zone_type.has_write_pointer() {
                self.reset(i);
            }
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Marks an implicitly opened zone as just used.
    fn touch(&mut self, i: u32) {
        let old = self.zone(i).used;
        let now = self.tick();
        if let Some(z) = self.zones.get_mut(i as usize) {
            z.used = now;
        }
        if self.implicit.remove(&(old, i)) {
            self.implicit.insert((now, i));
        }
    }

    /// Closes the least recently used implicitly opened zone; false if
    /// there is none.
    fn close_least_recent(&mut self) -> bool {
        match self.implicit.first().copied() {
            Some((_, i)) => {
                self.close(i);
                true
            }
            None => false,
        }
    }

    /// Makes room for one more open zone by closing the least recently
    /// used implicitly opened one, if the limit is reached.
    fn make_room(&mut self) {
        if self.open_count() >= self.geo.max_open {
            self.close_least_recent();
        }
    }

    fn open_implicitly(&mut self, i: u32) {
        self.make_room();
        let now = self.tick();
        let z = self.zone_mut(i);
        z.rec.cond = ZoneCondition::ImplicitlyOpen;
        z.used = now;
        self.implicit.insert((now, i));
    }

    fn open_explicitly(&mut self, i: u32) {
        match self.zone(i).rec.cond {
            ZoneCondition::ImplicitlyOpen => {
                let used = self.zone(i).used;
                self.implicit.remove(&(used, i));
            }
            _ => self.make_room(),
        }
        self.zone_mut(i).rec.cond = ZoneCondition::ExplicitlyOpen;
        self.explicit += 1;
    }

    /// Takes zone `i` out of the open-zone accounting, if it is open.
    fn forget_open(&mut self, i: u32) {
        let z = self.zone(i);
        match z.rec.cond {
            ZoneCondition::ImplicitlyOpen => {
                self.implicit.remove(&(z.used, i));
            }
            ZoneCondition::ExplicitlyOpen => self.explicit = self.explicit.saturating_sub(1),
            _ => {}
        }
    }

    fn close(&mut self, i: u32) {
        if !self.zone(i).rec.cond.is_open() {
            return;
        }
        self.forget_open(i);
        let rec = &mut self.zone_mut(i).rec;
        rec.cond = if rec.wp == rec.start {
            ZoneCondition::Empty
        } else {
            ZoneCondition::Closed
        };
    }

    fn make_full(&mut self, i: u32) {
        self.forget_open(i);
        let rec = &mut self.zone_mut(i).rec;
        rec.wp = rec.start + rec.len;
        rec.cond = ZoneCondition::Full;
        rec.non_seq = false;
        rec.reset = false;
    }

    fn reset(&mut self, i: u32) {
        self.forget_open(i);
        let rec = &mut self.zone_mut(i).rec;
        rec.wp = rec.start;
        rec.cond = ZoneCondition::Empty;
        rec.non_seq = false;
        rec.reset = false;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// 1 conventional zone and 7 sequential zones of 2048 blocks (1 MiB of
    /// 512-byte blocks), at most 3 open.
    fn hm() -> Zones {
        Zones::fresh(Geometry::new(ZonedModel::HostManaged, 512, 1, Some(1), 3, 8 << 20).unwrap())
    }

    fn ha() -> Zones {
        Zones::fresh(Geometry::new(ZonedModel::HostAware, 512, 1, Some(1), 2, 8 << 20).unwrap())
    }

    const Z: u64 = 2048;

    fn cond(z: &Zones, i: u32) -> ZoneCondition {
        z.descriptor(i).condition
    }

    fn wp(z: &Zones, i: u32) -> u64 {
        z.descriptor(i).write_pointer
    }

    fn write(z: &mut Zones, lba: u64, blocks: u64) -> Result<(), Sense> {
        z.begin_write(lba, blocks)?;
        z.end_write(lba, blocks);
        Ok(())
    }

    fn act(z: &mut Zones, a: ZoneAction, lba: u64, all: bool) -> Result<(), Sense> {
        let t = z.targets(a, lba, 0, all)?;
        z.apply(a, &t)
    }

    #[test]
    fn sequential_writes_move_the_write_pointer() {
        let mut z = hm();
        assert_eq!(cond(&z, 0), ZoneCondition::NotWritePointer);
        assert_eq!(cond(&z, 1), ZoneCondition::Empty);
        write(&mut z, Z, 8).unwrap();
        assert_eq!(
            (cond(&z, 1), wp(&z, 1)),
            (ZoneCondition::ImplicitlyOpen, Z + 8)
        );
        write(&mut z, Z + 8, Z - 8).unwrap();
        assert_eq!((cond(&z, 1), wp(&z, 1)), (ZoneCondition::Full, 2 * Z));
        assert_eq!(z.open_count(), 0);
        assert_eq!(z.take_changed(), vec![1]);
        assert!(z.take_changed().is_empty());
        // Conventional zones: anywhere, across zones of their type.
        write(&mut z, 5, 100).unwrap();
        assert!(z.take_changed().is_empty());
    }

    #[test]
    fn write_rules_and_their_sense() {
        let mut z = hm();
        write(&mut z, Z, 8).unwrap();
        assert_eq!(z.check_write(Z, 8), Err(Sense::unaligned_write_command()));
        assert_eq!(
            z.check_write(Z + 16, 8),
            Err(Sense::unaligned_write_command())
        );
        assert_eq!(
            z.check_write(2 * Z, Z + 1),
            Err(Sense::write_boundary_violation())
        );
        // Conventional into sequential.
        assert_eq!(
            z.check_write(Z - 4, 8),
            Err(Sense::write_boundary_violation())
        );
        act(&mut z, ZoneAction::Finish, Z, false).unwrap();
        assert_eq!(z.check_write(2 * Z, 1), Ok(()));
        assert_eq!(z.check_write(Z, 1), Err(Sense::invalid_cdb_field()), "FULL");
        assert_eq!(z.check_write(2 * Z - 1, 1), Err(Sense::invalid_cdb_field()));
    }

    #[test]
    fn implicit_opens_close_the_least_recently_written() {
        let mut z = hm();
        for i in 1..=3u32 {
            write(&mut z, u64::from(i) * Z, 1).unwrap();
        }
        // Zone 1 written again: zone 2 is now the least recently used.
        write(&mut z, Z + 1, 1).unwrap();
        write(&mut z, 4 * Z, 1).unwrap();
        assert_eq!(cond(&z, 2), ZoneCondition::Closed);
        for i in [1, 3, 4] {
            assert_eq!(cond(&z, i), ZoneCondition::ImplicitlyOpen, "zone {i}");
        }
        assert_eq!(z.open_count(), 3);
        // A closed zone reopens on its next write, closing zone 3 now.
        write(&mut z, 2 * Z + 1, 1).unwrap();
        assert_eq!(cond(&z, 2), ZoneCondition::ImplicitlyOpen);
        assert_eq!(cond(&z, 3), ZoneCondition::Closed);
        assert_eq!(cond(&z, 1), ZoneCondition::ImplicitlyOpen);
    }

    #[test]
    fn explicit_opens_and_the_limit() {
        let mut z = hm();
        write(&mut z, Z, 1).unwrap();
        for i in 2..=4u32 {
            act(&mut z, ZoneAction::Open, u64::from(i) * Z, false).unwrap();
        }
        // The implicitly opened zone made room.
        assert_eq!(cond(&z, 1), ZoneCondition::Closed);
        assert_eq!(
            act(&mut z, ZoneAction::Open, 5 * Z, false),
            Err(Sense::insufficient_zone_resources())
        );
        // Opening an opened or full zone is a no-op, even at the limit.
        act(&mut z, ZoneAction::Open, 2 * Z, false).unwrap();
        // No room for an implicit open either.
        assert_eq!(
            z.check_write(5 * Z, 1),
            Err(Sense::insufficient_zone_resources())
        );
        assert_eq!(
            z.check_write(Z + 1, 1),
            Err(Sense::insufficient_zone_resources())
        );
        // Writes into explicitly opened zones go on.
        write(&mut z, 2 * Z, 4).unwrap();
        assert_eq!(cond(&z, 2), ZoneCondition::ExplicitlyOpen);
        // Closing one makes room; an empty opened zone closes to EMPTY.
        act(&mut z, ZoneAction::Close, 3 * Z, false).unwrap();
        assert_eq!(cond(&z, 3), ZoneCondition::Empty);
        write(&mut z, Z + 1, 1).unwrap();
        assert_eq!(cond(&z, 1), ZoneCondition::ImplicitlyOpen);
        // CLOSE ALL.
        act(&mut z, ZoneAction::Close, 0, true).unwrap();
        assert_eq!(z.open_count(), 0);
        assert_eq!(cond(&z, 2), ZoneCondition::Closed);
        assert_eq!(cond(&z, 4), ZoneCondition::Empty);
    }

    #[test]
    fn open_all_opens_closed_zones_if_they_fit() {
        let mut z = hm();
        for i in 1..=4u32 {
            write(&mut z, u64::from(i) * Z, 1).unwrap();
        }
        act(&mut z, ZoneAction::Close, 0, true).unwrap();
        // Four closed zones, three allowed open.
        assert_eq!(
            act(&mut z, ZoneAction::Open, 0, true),
            Err(Sense::insufficient_zone_resources())
        );
        act(&mut z, ZoneAction::Finish, 4 * Z, false).unwrap();
        act(&mut z, ZoneAction::Open, 0, true).unwrap();
        for i in 1..=3u32 {
            assert_eq!(cond(&z, i), ZoneCondition::ExplicitlyOpen);
        }
        assert_eq!(z.open_count(), 3);
    }

    #[test]
    fn finish_and_reset() {
        let mut z = hm();
        write(&mut z, Z, 10).unwrap();
        assert_eq!(z.finish_ranges(&[1, 2]), vec![(Z + 10, Z - 10), (2 * Z, Z)]);
        assert_eq!(z.written_ranges(&[1, 2]), vec![(Z, Z)]);
        act(&mut z, ZoneAction::Finish, Z, false).unwrap();
        assert_eq!((cond(&z, 1), wp(&z, 1)), (ZoneCondition::Full, 2 * Z));
        // FINISH of an EMPTY zone by itself fills it; FINISH ALL leaves
        // EMPTY zones alone.
        act(&mut z, ZoneAction::Finish, 2 * Z, false).unwrap();
        assert_eq!(cond(&z, 2), ZoneCondition::Full);
        write(&mut z, 3 * Z, 1).unwrap();
        act(&mut z, ZoneAction::Finish, 0, true).unwrap();
        assert_eq!(cond(&z, 3), ZoneCondition::Full);
        assert_eq!(cond(&z, 4), ZoneCondition::Empty);
        act(&mut z, ZoneAction::ResetWritePointer, Z, false).unwrap();
        assert_eq!((cond(&z, 1), wp(&z, 1)), (ZoneCondition::Empty, Z));
        assert!(z.any_data());
        act(&mut z, ZoneAction::ResetWritePointer, 0, true).unwrap();
        assert!(!z.any_data());
        assert_eq!(z.open_count(), 0);
    }

    #[test]
    fn zone_ids_are_checked() {
        let z = hm();
        let t = |lba, count| z.targets(ZoneAction::Open, lba, count, false);
        assert_eq!(t(8 * Z, 0), Err(Sense::lba_out_of_range()));
        assert_eq!(t(Z + 1, 0), Err(invalid_field(2)), "not a zone start");
        assert_eq!(t(0, 0), Err(invalid_field(2)), "conventional");
        assert_eq!(t(Z, 1), Ok(vec![1]));
        assert_eq!(t(Z, 3), Ok(vec![1, 2, 3]));
        assert_eq!(t(6 * Z, 3), Err(invalid_field(12)), "past the last zone");
    }

    #[test]
    fn reads() {
        let mut z = hm();
        write(&mut z, Z, 8).unwrap();
        let run = |blocks, from_file| ReadRun { blocks, from_file };
        assert_eq!(z.read(Z, 16), Ok(vec![run(8, true), run(8, false)]));
        assert_eq!(z.read(Z + 8, 8), Ok(vec![run(8, false)]));
        assert_eq!(z.read(0, 16), Ok(vec![run(16, true)]));
        // Across sequential zones: fine (unrestricted reads).
        assert_eq!(z.read(2 * Z - 4, 8), Ok(vec![run(8, false)]));
        // Conventional into sequential on a host-managed disk: refused.
        assert_eq!(z.read(Z - 4, 8), Err(Sense::attempt_to_read_invalid_data()));
        let mut a = ha();
        write(&mut a, Z + 4, 4).unwrap();
        assert_eq!(a.read(Z - 4, 16), Ok(vec![run(12, true), run(4, false)]));
    }

    #[test]
    fn host_aware_zones_take_writes_anywhere() {
        let mut z = ha();
        write(&mut z, Z + 100, 10).unwrap();
        let d = z.descriptor(1);
        assert_eq!(d.zone_type, ZoneType::SequentialWritePreferred);
        assert_eq!(
            (d.condition, d.write_pointer, d.non_sequential),
            (ZoneCondition::ImplicitlyOpen, Z + 110, true)
        );
        write(&mut z, Z, 10).unwrap();
        assert_eq!(wp(&z, 1), Z + 110);
        // Across zones, and into a FULL zone.
        write(&mut z, 2 * Z - 5, Z + 10).unwrap();
        assert_eq!(cond(&z, 2), ZoneCondition::Full);
        assert!(!z.descriptor(2).non_sequential);
        write(&mut z, 2 * Z + 5, 1).unwrap();
        assert_eq!(cond(&z, 2), ZoneCondition::Full);
        // Beyond the optimal number of open zones: closes, never refuses.
        for i in 4..=7u32 {
            act(&mut z, ZoneAction::Open, u64::from(i) * Z, false).unwrap();
        }
        assert_eq!(z.open_count(), 4);
        write(&mut z, Z + 200, 1).unwrap();
        // Conventional into sequential is still a boundary.
        assert_eq!(
            z.check_write(Z - 1, 2),
            Err(Sense::write_boundary_violation())
        );
    }

    #[test]
    fn faults() {
        let g = Geometry::new(ZonedModel::HostManaged, 512, 1, Some(1), 3, 8 << 20).unwrap();
        let records = (0..8).map(|i| ZoneRecord::fresh(&g, i)).collect();
        let mut z = Zones::new(
            g,
            records,
            &[
                (0..=0, Fault::ReadOnly),
                (2..=3, Fault::ReadOnly),
                (3..=3, Fault::Offline),
            ],
        );
        assert_eq!(
            cond(&z, 0),
            ZoneCondition::NotWritePointer,
            "not on conventional zones"
        );
        assert_eq!(cond(&z, 2), ZoneCondition::ReadOnly);
        assert_eq!(cond(&z, 3), ZoneCondition::Offline);
        assert_eq!(wp(&z, 3), u64::MAX);
        assert_eq!(z.check_write(2 * Z, 1), Err(Sense::zone_is_read_only()));
        assert_eq!(z.check_write(3 * Z, 1), Err(Sense::zone_is_offline()));
        assert!(z.read(2 * Z, 1).is_ok());
        assert_eq!(z.read(3 * Z, 1), Err(Sense::zone_is_offline()));
        assert_eq!(
            z.targets(ZoneAction::ResetWritePointer, 2 * Z, 0, false),
            Err(Sense::zone_is_read_only())
        );
        assert_eq!(
            z.targets(ZoneAction::Finish, 3 * Z, 0, false),
            Err(Sense::zone_is_offline())
        );
        write(&mut z, Z, 1).unwrap();
        act(&mut z, ZoneAction::Finish, 0, true).unwrap();
        assert_eq!(
            cond(&z, 2),
            ZoneCondition::ReadOnly,
            "ALL leaves faulty zones"
        );
        let b = z.report(0, ReportingOptions::Offline, false, 4096).unwrap();
        assert_eq!(u32::from_be_bytes([b[0], b[1], b[2], b[3]]), 64);
    }

    #[test]
    fn state_survives_a_reload() {
        let mut z = hm();
        write(&mut z, Z, 8).unwrap();
        act(&mut z, ZoneAction::Open, 2 * Z, false).unwrap();
        write(&mut z, 3 * Z, 1).unwrap();
        act(&mut z, ZoneAction::Close, 3 * Z, false).unwrap();
        act(&mut z, ZoneAction::Finish, 4 * Z, false).unwrap();
        let records: Vec<ZoneRecord> = (0..8).map(|i| z.record(i).unwrap()).collect();
        let again = Zones::new(z.geometry().clone(), records, &[]);
        for i in 0..8 {
            assert_eq!(again.descriptor(i), z.descriptor(i), "zone {i}");
        }
        assert_eq!(again.open_count(), 2);
        // A lower limit closes implicitly opened zones past it.
        let mut g = z.geometry().clone();
        g.max_open = 1;
        let records: Vec<ZoneRecord> = (0..8).map(|i| z.record(i).unwrap()).collect();
        let fewer = Zones::new(g, records, &[]);
        assert_eq!(fewer.open_count(), 1);
        assert_eq!(cond(&fewer, 1), ZoneCondition::Closed);
        assert_eq!(cond(&fewer, 2), ZoneCondition::ExplicitlyOpen);
    }

    #[test]
    fn report_from_a_zone() {
        let z = hm();
        let b = z
            .report(Z + 5, ReportingOptions::All, false, 64 * 3)
            .unwrap();
        assert_eq!(u32::from_be_bytes([b[0], b[1], b[2], b[3]]), 7 * 64);
        assert_eq!(&b[8..16], &(8 * Z - 1).to_be_bytes());
        assert_eq!(&b[64 + 16..64 + 24], &Z.to_be_bytes());
        assert_eq!(
            z.report(8 * Z, ReportingOptions::All, false, 64),
            Err(Sense::lba_out_of_range())
        );
    }
}
