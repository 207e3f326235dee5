//! The command ring against the simulated kernel: wrap-around with PAD
//! entries, out-of-order and batched completion, TMR and unknown entries.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tcmu_core::layout::{tmr, OP_CMD};
use tcmu_core::sim::{SimConfig, SimData, SimKernel};
use tcmu_core::{CommandRing, Completion, Entry};

fn setup(cfg: SimConfig) -> (SimKernel, CommandRing, tcmu_core::Doorbell) {
    let (k, dev) = SimKernel::new(cfg).unwrap();
    let ring = CommandRing::new(dev.map).unwrap();
    (k, ring, dev.doorbell)
}

fn read_cmd(ring: &mut CommandRing) -> tcmu_core::CmdEntry {
    match ring.next_entry().unwrap() {
        Some(Entry::Cmd(c)) => c,
        other => panic!("expected a command, got {other:?}"),
    }
}

#[test]
fn command_round_trip_with_data() {
    let (mut k, mut ring, bell) = setup(SimConfig::default());
    let out: Vec<u8> = (0..10000u32).map(|i| i as u8).collect();
    let id_w = k
        .post(
            &[0x2a, 0, 0, 0, 0, 0, 0, 0, 20, 0],
            SimData::Out(out.clone()),
        )
        .unwrap();
    let id_r = k
        .post(&[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], SimData::In(4096))
        .unwrap();
    k.notify().unwrap();
    assert!(bell.ack().unwrap());
    assert!(!bell.ack().unwrap(), "one wake-up, consumed");

    let w = read_cmd(&mut ring);
    assert_eq!(w.cmd_id, id_w);
    assert_eq!(w.cdb.len(), 10);
    assert_eq!(w.cdb[0], 0x2a);
    assert_eq!(tcmu_core::buf::gather(&w.data, usize::MAX), out);
    let mut r = read_cmd(&mut ring);
    assert_eq!(r.cmd_id, id_r);
    assert!(ring.next_entry().unwrap().is_none());

    tcmu_core::buf::scatter(&mut r.data, &[7u8; 100]);
    ring.complete(r.cmd_id, &Completion::good().with_read_len(100))
        .unwrap();
    ring.complete(w.cmd_id, &Completion::good()).unwrap();
    // Nothing is visible before publish.
    assert!(k.reap().unwrap().is_empty());
    ring.publish().unwrap();
    bell.kick().unwrap();
    assert!(k.take_kick());
    let done = k.reap().unwrap();
    assert_eq!(done.len(), 2);
    // Out of order: the read finished first, in the first slot.
    assert_eq!(done[0].cmd_id, id_r);
    assert_eq!(done[0].read_len, Some(100));
    assert_eq!(done[0].data_in, vec![7u8; 100]);
    assert_eq!(done[1].cmd_id, id_w);
    assert_eq!(done[1].status, 0);
    assert_eq!(k.inflight(), 0);
}

#[test]
fn wraps_with_pad_entries() {
    let cfg = SimConfig {
        ring_bytes: 128 + 1024,
        ..SimConfig::default()
    };
    let (mut k, mut ring, _bell) = setup(cfg);
    let mut pads_seen = 0;
    let mut last_head = 0;
    for round in 0..200u32 {
        // Vary sizes so the wrap lands at different places.
        let iov = SimData::In(512 * (1 + (round as usize % 3)));
        let cdb: Vec<u8> = if round % 2 == 0 {
            vec![0x88; 16]
        } else {
            vec![0x28; 10]
        };
        let id = k.post(&cdb, iov).unwrap();
        if k.head() < last_head {
            pads_seen += 1;
        }
        last_head = k.head();
        let c = read_cmd(&mut ring);
        assert_eq!(c.cmd_id, id);
        assert_eq!(c.cdb, cdb);
        ring.complete(c.cmd_id, &Completion::good()).unwrap();
        ring.publish().unwrap();
        let done = k.reap().unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].cmd_id, id);
    }
    assert!(pads_seen > 10, "the ring wrapped {pads_seen} times");
}

#[test]
fn out_of_order_batches_across_the_wrap() {
    let cfg = SimConfig {
        ring_bytes: 128 + 2048,
        ..SimConfig::default()
    };
    let (mut k, mut ring, _bell) = setup(cfg);
    for round in 0..50 {
        let ids: Vec<u16> = (0..6)
            .map(|_| k.post(&[0x00; 6], SimData::In(16)).unwrap())
            .collect();
        let mut cmds: Vec<_> = (0..6).map(|_| read_cmd(&mut ring)).collect();
        assert_eq!(cmds.iter().map(|c| c.cmd_id).collect::<Vec<_>>(), ids);
        // Complete in reverse, one batch.
        for c in cmds.iter_mut().rev() {
            tcmu_core::buf::scatter(&mut c.data, &c.cmd_id.to_le_bytes());
            ring.complete(c.cmd_id, &Completion::status(round % 3))
                .unwrap();
        }
        ring.publish().unwrap();
        let done = k.reap().unwrap();
        let mut got: Vec<u16> = done.iter().map(|d| d.cmd_id).collect();
        assert_eq!(got, ids.iter().rev().copied().collect::<Vec<_>>());
        for d in &done {
            assert_eq!(d.status, round % 3);
            assert_eq!(&d.data_in[..2], &d.cmd_id.to_le_bytes());
            assert_eq!(&d.data_in[2..], &[0u8; 14], "rest of the buffer zeroed");
        }
        got.sort_unstable();
        assert_eq!(k.inflight(), 0);
        assert!(ring.is_idle());
    }
}

#[test]
fn completing_more_than_read_is_an_error() {
    let (mut k, mut ring, _bell) = setup(SimConfig::default());
    k.post(&[0; 6], SimData::None).unwrap();
    let c = read_cmd(&mut ring);
    ring.complete(c.cmd_id, &Completion::good()).unwrap();
    assert!(ring.complete(c.cmd_id, &Completion::good()).is_err());
}

#[test]
fn tmr_entries_are_read_and_skipped_on_completion() {
    let (mut k, mut ring, _bell) = setup(SimConfig::default());
    let a = k.post(&[0; 6], SimData::None).unwrap();
    k.post_tmr(tmr::ABORT_TASK, &[a]).unwrap();
    let b = k.post(&[0; 6], SimData::None).unwrap();
    let ca = read_cmd(&mut ring);
    match ring.next_entry().unwrap() {
        Some(Entry::Tmr(t)) => {
            assert_eq!(t.tmr_type, tmr::ABORT_TASK);
            assert_eq!(t.cmd_ids, vec![a]);
        }
        other => panic!("expected TMR, got {other:?}"),
    }
    let cb = read_cmd(&mut ring);
    ring.complete(cb.cmd_id, &Completion::good()).unwrap();
    ring.complete(ca.cmd_id, &Completion::status(0x40)).unwrap();
    ring.publish().unwrap();
    let done = k.reap().unwrap();
    assert_eq!(
        done.iter().map(|d| d.cmd_id).collect::<Vec<_>>(),
        vec![b, a]
    );
    assert_eq!(done[1].status, 0x40);
}

#[test]
fn unknown_opcodes_are_flagged() {
    let (mut k, mut ring, _bell) = setup(SimConfig::default());
    let id = k.post_op(5, &[0; 6], SimData::None).unwrap();
    match ring.next_entry().unwrap() {
        Some(Entry::Unknown { cmd_id, op }) => {
            assert_eq!((cmd_id, op), (id, 5));
            ring.complete(cmd_id, &Completion::unknown_op()).unwrap();
        }
        other => panic!("expected unknown, got {other:?}"),
    }
    ring.publish().unwrap();
    let done = k.reap().unwrap();
    assert!(done[0].unknown_op);
    let _ = OP_CMD;
}

#[test]
fn check_condition_sense_reaches_the_kernel() {
    let (mut k, mut ring, _bell) = setup(SimConfig::default());
    k.post(&[0x12, 0, 0, 0, 36, 0], SimData::In(36)).unwrap();
    let c = read_cmd(&mut ring);
    let sense = [
        0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0xc0, 0, 2,
    ];
    ring.complete(c.cmd_id, &Completion::check_condition(&sense))
        .unwrap();
    ring.publish().unwrap();
    let done = k.reap().unwrap();
    assert_eq!(done[0].status, 2);
    assert_eq!(&done[0].sense[..18], &sense);
    assert!(done[0].sense[18..].iter().all(|&b| b == 0));
}

#[test]
fn full_ring_refuses_posts() {
    let cfg = SimConfig {
        ring_bytes: 128 + 512,
        ..SimConfig::default()
    };
    let (mut k, _ring, _bell) = setup(cfg);
    let mut n = 0;
    while k.post(&[0; 6], SimData::None).is_ok() {
        n += 1;
        assert!(n < 100);
    }
    assert!(n >= 3);
}

#[test]
fn an_entry_pointing_outside_the_data_area_is_failed_not_followed() {
    use std::mem::{offset_of, size_of};
    use tcmu_core::layout::{CmdRequest, Mailbox, RingIovec};
    let (mut k, dev) = SimKernel::new(SimConfig::default()).unwrap();
    let map = dev.map.clone();
    let mut ring = CommandRing::new(dev.map).unwrap();
    let pos = k.head() as usize;
    let id = k
        .post(&[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], SimData::In(4096))
        .unwrap();
    let iov0 = size_of::<Mailbox>() + pos + size_of::<CmdRequest>();
    // A buffer running past the end of the mapping.
    map.write_u64(iov0 + offset_of!(RingIovec, base), map.len() as u64 - 100)
        .unwrap();
    match ring.next_entry().unwrap() {
        Some(Entry::Invalid { cmd_id, why }) => {
            assert_eq!(cmd_id, id);
            assert!(why.contains("iovec"), "{why}");
        }
        other => panic!("expected an invalid entry, got {other:?}"),
    }
    // Failing it completes normally; the next command is read as usual.
    ring.complete(id, &Completion::status(2)).unwrap();
    ring.publish().unwrap();
    assert_eq!(k.reap().unwrap()[0].status, 2);
    k.post(&[0; 6], SimData::None).unwrap();
    read_cmd(&mut ring);
}

#[test]
fn a_command_id_reused_while_its_buffers_live_is_refused() {
    let (mut k, mut ring, _bell) = setup(SimConfig::default());
    k.post(&[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], SimData::In(4096))
        .unwrap();
    let mut a = read_cmd(&mut ring);
    assert!(ring.buffers_in_use(a.cmd_id));
    let kept = a.data[0].split_off(2048);
    drop(a.data);
    assert!(
        ring.buffers_in_use(a.cmd_id),
        "a piece still holds the lease"
    );
    ring.complete(a.cmd_id, &Completion::good()).unwrap();
    ring.publish().unwrap();
    k.reap().unwrap();
    // The kernel hands the lowest free id out again.
    assert_eq!(k.post(&[0; 6], SimData::None).unwrap(), a.cmd_id);
    assert!(matches!(
        ring.next_entry(),
        Err(tcmu_core::RingError::Corrupt { .. })
    ));
    drop(kept);
    assert!(!ring.buffers_in_use(a.cmd_id));
}

#[test]
fn kept_buffers_hold_their_id_until_freed() {
    let (mut k, mut ring, _bell) = setup(SimConfig::default());
    k.post(&[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], SimData::In(4096))
        .unwrap();
    let a = read_cmd(&mut ring);
    ring.complete(a.cmd_id, &Completion::status(0x40).keeping_buffer())
        .unwrap();
    ring.publish().unwrap();
    let done = k.reap().unwrap();
    assert!(done[0].keep_buf);
    assert_eq!(k.kept(), vec![a.cmd_id]);
    let b = k.post(&[0; 6], SimData::None).unwrap();
    assert_ne!(b, a.cmd_id, "a kept id is not handed out");
    k.free_kept_buf(a.cmd_id).unwrap();
    assert!(k.free_kept_buf(a.cmd_id).is_err());
    assert!(k.kept().is_empty());
}

/// Offset in the mapping of iovec `i` of the entry at ring position `pos`.
fn iovec_at(pos: u32, i: usize) -> usize {
    use std::mem::size_of;
    use tcmu_core::layout::{CmdRequest, Mailbox, RingIovec};
    size_of::<Mailbox>() + pos as usize + size_of::<CmdRequest>() + i * size_of::<RingIovec>()
}

#[test]
fn buffers_never_overlap_live_ones() {
    let (mut k, dev) = SimKernel::new(SimConfig::default()).unwrap();
    let map = dev.map.clone();
    let mut ring = CommandRing::new(dev.map).unwrap();
    let read = [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0];
    k.post(&read, SimData::In(4096)).unwrap();
    let a = read_cmd(&mut ring);
    let a_base = map.read_u64(iovec_at(0, 0)).unwrap();
    assert_eq!(a.data[0].offset() as u64, a_base);

    // A second command whose iovec names a's live buffer is failed, not
    // lent.
    let pos = k.head();
    let b = k.post(&read, SimData::In(4096)).unwrap();
    map.write_u64(iovec_at(pos, 0), a_base + 512).unwrap();
    match ring.next_entry().unwrap() {
        Some(Entry::Invalid { cmd_id, why }) => {
            assert_eq!(cmd_id, b);
            assert!(why.contains("overlap"), "{why}");
        }
        other => panic!("expected an invalid entry, got {other:?}"),
    }
    ring.complete(b, &Completion::status(2)).unwrap();
    // Once a's buffers are gone, the same bytes may be lent again.
    drop(a);
    let pos = k.head();
    let c = k.post(&read, SimData::In(4096)).unwrap();
    map.write_u64(iovec_at(pos, 0), a_base).unwrap();
    assert_eq!(read_cmd(&mut ring).cmd_id, c);
}

#[test]
fn iovecs_of_one_command_never_overlap() {
    let (mut k, dev) = SimKernel::new(SimConfig::default()).unwrap();
    let map = dev.map.clone();
    let mut ring = CommandRing::new(dev.map).unwrap();
    let read = [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0];
    // Blocks 0 and 1, then block 0 freed: the next 8 KiB get blocks 0 and
    // 2, two iovecs.
    k.post(&read, SimData::In(4096)).unwrap();
    k.post(&read, SimData::In(4096)).unwrap();
    let a = read_cmd(&mut ring);
    let _b = read_cmd(&mut ring);
    let a_id = a.cmd_id;
    drop(a);
    ring.complete(a_id, &Completion::good()).unwrap();
    ring.publish().unwrap();
    k.reap().unwrap();
    let pos = k.head();
    let c = k
        .post(&[0x28, 0, 0, 0, 0, 0, 0, 0, 16, 0], SimData::In(8192))
        .unwrap();
    let first = map.read_u64(iovec_at(pos, 0)).unwrap();
    assert_ne!(map.read_u64(iovec_at(pos, 1)).unwrap(), first + 4096);
    map.write_u64(iovec_at(pos, 1), first + 100).unwrap();
    match ring.next_entry().unwrap() {
        Some(Entry::Invalid { cmd_id, why }) => {
            assert_eq!(cmd_id, c);
            assert!(why.contains("overlap"), "{why}");
        }
        other => panic!("expected an invalid entry, got {other:?}"),
    }
}

#[test]
fn one_ring_at_a_time_reads_a_mapping() {
    let (mut k, dev) = SimKernel::new(SimConfig::default()).unwrap();
    let mut ring = CommandRing::new(dev.map.clone()).unwrap();
    assert!(matches!(
        CommandRing::new(dev.map.clone()),
        Err(tcmu_core::RingError::InUse)
    ));
    k.post(&[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0], SimData::In(4096))
        .unwrap();
    let a = read_cmd(&mut ring);
    drop(ring);
    // A buffer of the dropped ring still holds the mapping.
    assert!(matches!(
        CommandRing::new(dev.map.clone()),
        Err(tcmu_core::RingError::InUse)
    ));
    drop(a);
    CommandRing::new(dev.map).unwrap();
}
