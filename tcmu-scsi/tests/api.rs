//! The public API as the runtime uses it, and a no-panic sweep over random
//! CDBs and data-out buffers.

use tcmu_scsi::{
    decode, execute, Command, DeviceParams, DeviceState, LbaRange, Outcome, Response, Sense,
    SenseKey, Status, UnmapParams,
};

fn thin() -> DeviceParams {
    let mut p = DeviceParams::new(512, 1000);
    p.unit_serial = Some("5e2a0b7c-1d4e-4f60-8a9b-0c1d2e3f4a5b".into());
    p.unmap = Some(UnmapParams {
        max_lba_count: 64,
        max_descriptors: 2,
        granularity: 1,
        alignment: 0,
        reads_zeroes: true,
    });
    p
}

#[test]
fn api_shapes() {
    let p = thin();
    let mut s = DeviceState::new(false);
    assert!(!s.write_cache);

    let cmd = decode(&[0x28, 0, 0, 0, 0, 1, 0, 0, 2, 0]);
    assert_eq!(
        cmd,
        Ok(Command::Read {
            lba: 1,
            blocks: 2,
            fua: false,
            dpo: false,
            cdb_len: 10
        })
    );
    if let Ok(cmd) = cmd {
        assert!(!cmd.wants_data_out());
        assert_eq!(
            execute(&cmd, &p, &mut s, &[]),
            Outcome::Read {
                lba: 1,
                blocks: 2,
                fua: false
            }
        );
    }

    let list = [
        0, 22, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 3, 0, 0, 0, 0,
    ];
    if let Ok(cmd) = decode(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]) {
        assert!(cmd.wants_data_out());
        assert_eq!(
            execute(&cmd, &p, &mut s, &list),
            Outcome::Unmap(vec![LbaRange { lba: 9, blocks: 3 }])
        );
    }

    let r = Response::check(Sense::lba_out_of_range());
    assert_eq!(r.status.code(), 0x02);
    assert_eq!(r.sense.map(|s| s.key), Some(SenseKey::IllegalRequest));
    assert_eq!(Response::good().status, Status::Good);
    assert_eq!(Response::data(vec![1]).data_in, vec![1]);
    assert_eq!(
        decode(&[0xd0]).map(|c| execute(&c, &p, &mut s, &[])),
        Ok(Outcome::Done(Response::check(
            Sense::invalid_command_opcode()
        )))
    );
}

/// xorshift64*, enough to spray bytes without extra crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_bytes_never_panic() {
    const OPCODES: [u8; 36] = [
        0x00, 0x01, 0x03, 0x08, 0x0a, 0x0b, 0x12, 0x15, 0x1a, 0x1b, 0x25, 0x28, 0x2a, 0x2b, 0x2e,
        0x2f, 0x34, 0x35, 0x41, 0x42, 0x55, 0x5a, 0x88, 0x8a, 0x8e, 0x8f, 0x90, 0x91, 0x93, 0x9e,
        0xa3, 0xa8, 0xaa, 0x7f, 0xff, 0xa0,
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut small = DeviceParams::new(512, 1000);
    small.unit_serial = Some("deadbeef-0123".into());
    let mut big = thin();
    big.num_blocks = u64::MAX / 4096;
    big.block_size = 4096;
    big.max_transfer_blocks = 0;
    big.max_write_same_blocks = 0;
    big.version_descriptors = Some(0x0c60);
    let mut empty = DeviceParams::new(0, 0);
    empty.unmap = Some(UnmapParams {
        max_lba_count: u32::MAX,
        max_descriptors: u32::MAX,
        granularity: 0,
        alignment: u32::MAX,
        reads_zeroes: true,
    });
    empty.unit_serial = Some("x".repeat(400));
    let all = [small, big, empty];
    let mut state = DeviceState::new(true);
    let mut seen = [0usize; 4];
    for iter in 0..300_000u32 {
        let len = rng.below(33);
        let mut cdb: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if iter % 2 == 0 {
            if let Some(b0) = cdb.first_mut() {
                *b0 = OPCODES[rng.below(OPCODES.len())];
            }
        }
        if iter % 4 == 0 {
            // Mostly-zero CDBs get past the field checks more often.
            for b in cdb.iter_mut().skip(1) {
                if rng.next() % 4 != 0 {
                    *b = 0;
                }
            }
        }
        let mut out: Vec<u8> = (0..rng.below(600)).map(|_| rng.next() as u8).collect();
        if iter % 3 == 0 {
            // Plausible headers for UNMAP / MODE SELECT lists.
            out.iter_mut().take(8).for_each(|b| *b &= 0x1f);
        }
        if cdb.len() >= 10 && cdb[0] == 0x42 && iter % 2 == 0 {
            // A well-formed UNMAP list with one small descriptor.
            cdb[1] = 0;
            cdb[7] = 0;
            cdb[8] = 24;
            out = vec![0, 22, 0, 16, 0, 0, 0, 0];
            out.extend_from_slice(&(rng.next() % 1000).to_be_bytes());
            out.extend_from_slice(&((rng.next() % 8) as u32).to_be_bytes());
            out.extend_from_slice(&[0; 4]);
        }
        let params = &all[(iter % 3) as usize];
        if iter % 1000 == 0 {
            state.unit_attention = Some(Sense::unit_attention_reset());
        }
        match decode(&cdb) {
            Ok(cmd) => {
                let _ = cmd.wants_data_out();
                let _ = cmd.name();
                match execute(&cmd, params, &mut state, &out) {
                    Outcome::Done(r) => {
                        assert_eq!(r.sense.is_some(), r.status == Status::CheckCondition);
                        if let Some(s) = r.sense {
                            assert_eq!(Sense::parse(&s.to_fixed()).map(|p| p.key), Some(s.key));
                            seen[0] += 1;
                        } else {
                            seen[1] += 1;
                        }
                    }
                    Outcome::Read { lba, blocks, .. }
                    | Outcome::Write { lba, blocks, .. }
                    | Outcome::CompareAndWrite { lba, blocks, .. }
                    | Outcome::Verify { lba, blocks, .. } => {
                        assert!(blocks > 0);
                        assert!(lba + u64::from(blocks) <= params.num_blocks);
                        seen[2] += 1;
                    }
                    Outcome::Unmap(r) => {
                        assert!(!r.is_empty());
                        assert!(r.iter().all(|x| x.blocks > 0));
                        seen[3] += 1;
                    }
                    Outcome::WriteSame { block, blocks, .. } => {
                        assert!(blocks > 0);
                        assert_eq!(block.len(), params.block_size as usize);
                    }
                    Outcome::LbaStatus { lba, .. } => assert!(lba < params.num_blocks),
                    Outcome::Flush
                    | Outcome::Format
                    | Outcome::Copy(_)
                    | Outcome::SetPortGroups(_) => {}
                }
            }
            Err(s) => {
                let _ = s.to_fixed();
                let _ = s.to_descriptor();
            }
        }
    }
    assert!(seen.iter().all(|&n| n > 0), "coverage {seen:?}");
}
