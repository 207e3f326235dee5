//! Heap allocations per command in steady state, on the device's worker
//! thread: a `ram` device under the real runtime and the simulated kernel,
//! 4 KiB READ(10) and WRITE(10) at queue depth 32.
//!
//! The bounds allow none (see docs/performance.md, "The engine"), so that a
//! change that adds an allocation to the data path fails here rather than
//! showing up, much later, as lost IOPS.
//! `cargo xtask microbench` prints the same figures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Op, Rig};
use tcmu_core::alloc_count::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// Commands measured per case.
const COMMANDS: u64 = 8192;

#[test]
fn steady_state_allocations_per_command() {
    let mut rig = Rig::new();
    // None: the command's future runs in a reused slot of the device's
    // command pool, the CDB is inline (`Cdb`), the ram handler serves reads
    // and writes synchronously (`read_now`, `write_now`: no boxed future)
    // and its command hook wants no command while no fault is armed
    // (`CommandHook::wants`: no boxed `handle_cmd` future), and the buffer
    // list goes back to the ring for the next command (`recycle`).
    for (op, bound) in [(Op::Read, 0.01), (Op::Write, 0.01), (Op::Tur, 0.01)] {
        let per = rig.allocations_per_command(op, 32, COMMANDS);
        eprintln!("{}: {per:.3} allocations per command at QD32", op.name());
        assert!(
            per <= bound,
            "{}: {per:.3} heap allocations per command, more than the {bound} allowed",
            op.name()
        );
    }
}
