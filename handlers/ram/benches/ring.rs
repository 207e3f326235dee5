//! Micro-benchmark of the data path without a kernel: the real runtime
//! (`Workers`, one worker thread), the `ram` handler and the simulated
//! kernel (`tcmu_core::sim`), which posts commands on this thread and
//! busy-polls for their completions.
//!
//! Cases: TEST UNIT READY (pure ring + dispatch overhead) and 4 KiB
//! READ(10)/WRITE(10), at queue depth 1 and 32 (32 kept in flight: every
//! completion is replaced by a new command at once). Throughput is in
//! commands per second. Afterwards it prints the heap allocations per
//! command on the worker thread at QD32 (`tests/alloc_per_cmd.rs` bounds
//! them). Run with `cargo xtask microbench`; the host's noise shows in the
//! absolute numbers, compare runs on the same machine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::{Op, Rig};
use criterion::{criterion_main, Criterion, Throughput};
use tcmu_core::alloc_count::CountingAlloc;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn ring(c: &mut Criterion) {
    let mut rig = Rig::new();
    let mut group = c.benchmark_group("ring");
    group.throughput(Throughput::Elements(1));
    for (op, depth) in [
        (Op::Tur, 1),
        (Op::Tur, 32),
        (Op::Read, 1),
        (Op::Read, 32),
        (Op::Write, 1),
        (Op::Write, 32),
    ] {
        group.bench_function(format!("{}/qd{depth}", op.name()), |b| {
            b.iter_custom(|iters| rig.run(op, depth, iters))
        });
    }
    group.finish();
    for op in [Op::Read, Op::Write, Op::Tur] {
        let per = rig.allocations_per_command(op, 32, 8192);
        eprintln!(
            "{}/qd32: {per:.2} heap allocations per command (worker thread)",
            op.name()
        );
    }
}

/// Short runs: the whole bench takes about 30 s.
fn benches() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .configure_from_args();
    ring(&mut c);
}

criterion_main!(benches);
