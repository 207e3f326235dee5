#!/bin/bash
# run-all.sh — run the guest acceptance tests (tests/vm/t-*.sh) in order.
#
# Started by the VM's init (see `cargo xtask vm-test`). Each test runs in its
# own bash process under a per-test timeout; its result is printed as
# `PASS name` / `FAIL name`, and the run ends with `N passed, N failed`
# (also written to $XT_OUT/summary for xtask). Exits non-zero if any test
# failed or if no test ran.
#
# Environment: TEST_FILTER (extended regex on test names, e.g. "t-10|t-30";
# empty = all), TEST_TIMEOUT (seconds per test; default derived from
# FIO_RUNTIME), plus what lib.sh reads.

set -euo pipefail
cd "$(dirname "$0")"

FILTER=${TEST_FILTER:-}
FIO_RUNTIME=${FIO_RUNTIME:-60}
# The longest test (t-20) runs fio twice plus a verify pass and a cmp.
PER_TEST_TIMEOUT=${TEST_TIMEOUT:-$((6 * FIO_RUNTIME + 300))}

# kill_leftover_daemons: kill -9 every process named tcmu-runner (ours or
# Debian's C daemon). A test that failed or timed out may leave one behind,
# and it would hold the daemon lock and the devices of every test after it.
# By name, not by path: tests run copies of the binary (runner_to_ram) and
# replace it at its path (t-42), so /proc/PID/exe need not be $TCMU_RUNNER.
kill_leftover_daemons() {
    local comm pid found=1
    for comm in /proc/[0-9]*/comm; do
        [[ "$(cat "$comm" 2>/dev/null)" == tcmu-runner ]] || continue
        pid=${comm#/proc/}
        pid=${pid%/comm}
        # A zombie holds no lock and no device.
        [[ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null)" == [^Z]* ]] || continue
        echo "run-all: killing leftover daemon pid $pid ($(readlink "/proc/$pid/exe" 2>/dev/null))"
        kill -9 "$pid" 2>/dev/null || true
        # Gone (or a zombie, its lock and devices released) within 10 s.
        for _ in $(seq 100); do
            [[ "$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null)" == [^Z]* ]] || break
            sleep 0.1
        done
        found=0
    done
    return "$found"
}

# reset_lio: remove any LIO objects a failed test left behind.
reset_lio() {
    (TEST_NAME=run-all-reset; source ./lib.sh; cleanup_all_lio) || true
}

# Smoke check of the environment before running anything.
echo "run-all: kernel $(uname -r), TCMU_RUNNER=${TCMU_RUNNER:-unset}, FIO_RUNTIME=$FIO_RUNTIME, per-test timeout ${PER_TEST_TIMEOUT}s, filter '${FILTER}'"
(TEST_NAME=run-all-setup; source ./lib.sh; load_modules)

passed=0
failed=0
failures=()
failure_outputs=()
suite_start=$SECONDS
for script in t-*.sh; do
    name=${script%.sh}
    if [[ -n $FILTER && ! $name =~ $FILTER ]]; then
        continue
    fi
    echo "=== RUN $name"
    start=$SECONDS
    dmesg_lines=$(dmesg | wc -l)
    rc=0
    # The test's output goes to the console as it runs and to a file, so a
    # failure can be shown again at the end of the run (CI keeps the tail).
    out_file=$(mktemp "/tmp/run-all-$name.XXXXXX")
    # TEST_TIMEOUT tells the test its own limit (t-80 budgets by it).
    TEST_NAME=$name TEST_TIMEOUT=$PER_TEST_TIMEOUT \
        timeout --kill-after=30 "$PER_TEST_TIMEOUT" bash "./$script" \
        > >(tee "$out_file") 2>&1 || rc=$?
    took=$((SECONDS - start))
    # A test must stop what it started: a daemon left running would hold
    # the lock and the devices of every test after it.
    if kill_leftover_daemons && [[ $rc -eq 0 ]]; then
        echo "$name left a tcmu-runner running"
        rc=1
    fi
    if [[ $rc -eq 0 ]]; then
        echo "PASS $name (${took}s)"
        passed=$((passed + 1))
        rm -f "$out_file"
    else
        reason="exit status $rc"
        [[ $rc -eq 124 || $rc -eq 137 ]] && reason="timed out after ${PER_TEST_TIMEOUT}s"
        echo "FAIL $name ($reason, ${took}s)"
        failed=$((failed + 1))
        failures+=("$name")
        failure_outputs+=("$out_file")
        # Kernel messages logged during the test: the last few here, all of
        # them next to the test's other logs.
        if [[ -n "${XT_OUT:-}" ]]; then
            mkdir -p "$XT_OUT/logs/$name"
            dmesg | tail -n +$((dmesg_lines + 1)) >"$XT_OUT/logs/$name/dmesg.txt" || true
        fi
        echo "--- kernel messages during $name (last 15):"
        dmesg | tail -n +$((dmesg_lines + 1)) | tail -n 15 || true
        reset_lio
    fi
done

# Each failed test's last lines once more, where a truncated log keeps them.
for i in "${!failures[@]}"; do
    echo "--- last 40 lines of ${failures[$i]}:"
    tail -n 40 "${failure_outputs[$i]}" || true
    if [[ -n "${XT_OUT:-}" ]]; then
        cp "${failure_outputs[$i]}" "$XT_OUT/logs/${failures[$i]}/output.txt" || true
    fi
done
echo "run-all: suite took $((SECONDS - suite_start))s"
((failed == 0)) || echo "run-all: failed: ${failures[*]}"
summary="$passed passed, $failed failed"
if [[ -n "${XT_OUT:-}" ]]; then
    echo "$summary" >"$XT_OUT/summary"
fi
echo "$summary"
if ((passed + failed == 0)); then
    echo "run-all: no test matched filter '${FILTER}'"
    exit 1
fi
((failed == 0))
