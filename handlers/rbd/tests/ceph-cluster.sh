#!/bin/bash
# ceph-cluster.sh — a throwaway Ceph cluster on 127.0.0.1 for the rbd tests.
#
#   ceph-cluster.sh start DIR [none|cephx] [mgr]
#                                            one mon, one memstore OSD, pool
#                                            "rbd" (and with "mgr" a ceph-mgr,
#                                            for the service map); prints
#                                            nothing, writes DIR/ceph.conf
#                                            and DIR/keyring (client.admin's
#                                            with cephx)
#   ceph-cluster.sh stop DIR                 kills the daemons (SIGKILL after
#                                            SIGTERM) and removes DIR
#
# Everything lives under DIR: configuration, mon and OSD data (the OSD
# keeps its objects in memory: `osd objectstore = memstore`), run files,
# logs. No ceph-mgr unless asked for: rbd I/O does not need it, only the
# service map does (and it costs ~8 s on a host, minutes under TCG). The mon listens on a free
# loopback port (msgr v1 and v2); nothing leaves 127.0.0.1. The OSD
# heartbeat grace and interval (how soon a stopped OSD is marked down, and
# the floor of the rbd handler's osd_op_timeout) come from
# $CEPH_TEST_HEARTBEAT_GRACE and $CEPH_TEST_HEARTBEAT_INTERVAL (10 s, 2 s). Used by the
# handler's host tests (tests/cluster.rs) and by tests/vm/t-55-rbd.sh in
# the test VM, where it takes about a minute under TCG (7 s on a host).
set -euo pipefail

usage() { echo "usage: $0 start DIR [none|cephx] | stop DIR" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
op=$1 dir=$2 auth=${3:-none} mgr=${4:-}
# The address the daemons listen on: loopback, unless a test on a private
# virtual network (the two-VM HA test) gives its guest's own.
addr=${CEPH_TEST_ADDR:-127.0.0.1}

# free_port: a TCP port on 127.0.0.1 nobody listens on now.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_until SECS WHAT CMD...: retry CMD until it succeeds, or fail.
wait_until() {
    local secs=$1 what=$2
    shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "ceph-cluster: timed out after ${secs}s waiting for $what" >&2
            tail -n 20 "$dir"/log/*.log >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.3
    done
}

# osd_up: osd.0 is up in the OSD map.
osd_up() {
    ceph -c "$dir/ceph.conf" osd dump 2>/dev/null | grep -q '^osd.0 up'
}

stop() {
    local sig pidf pid alive
    for sig in TERM KILL; do
        alive=0
        for pidf in "$dir"/run/*.pid; do
            [[ -f $pidf ]] || continue
            pid=$(cat "$pidf" 2>/dev/null) || continue
            [[ -n $pid ]] && kill -"$sig" "$pid" 2>/dev/null && alive=1
        done
        ((alive)) || break
        [[ $sig == KILL ]] || for _ in $(seq 50); do
            alive=0
            for pidf in "$dir"/run/*.pid; do
                pid=$(cat "$pidf" 2>/dev/null) || continue
                [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && alive=1
            done
            ((alive)) || break
            sleep 0.1
        done
    done
    rm -rf "$dir"
}

start() {
    mkdir -p "$dir"/run "$dir"/log "$dir"/mon.a "$dir"/osd.0
    local fsid port2 port1 ceph
    fsid=$(uuidgen)
    port2=$(free_port)
    port1=$(free_port)
    local authline=none
    [[ $auth == cephx ]] && authline=cephx
    cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = [v2:$addr:$port2,v1:$addr:$port1]
public addr = $addr
auth cluster required = $authline
auth service required = $authline
auth client required = $authline
keyring = $dir/keyring
run dir = $dir/run
pid file = $dir/run/\$name.pid
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
mon cluster log file = $dir/log/cluster.log
log to stderr = false
err to stderr = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon data avail warn = 1
mon data avail crit = 0
mon warn on pool no redundancy = false
osd objectstore = memstore
memstore device bytes = 1073741824
osd data = $dir/\$name
mon data = $dir/\$name
# Fail fast when the tests stop the OSD (SIGSTOP) on purpose.
osd heartbeat grace = ${CEPH_TEST_HEARTBEAT_GRACE:-10}
osd heartbeat interval = ${CEPH_TEST_HEARTBEAT_INTERVAL:-2}
mon osd down out interval = 0
# A PG's read lease (this ratio × the heartbeat grace) outlasts any stop
# the tests impose: Pacific's size-1 PGs whose lease expired while their
# OSD was stopped can stay "laggy" for good after SIGCONT, holding every op
# (seen in about one run in three with the default 0.8).
osd pool default read lease ratio = 10
EOF
    ceph=(ceph -c "$dir/ceph.conf")
    if [[ $auth == cephx ]]; then
        ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
        ceph-authtool "$dir/keyring" --gen-key -n client.admin \
            --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
    else
        ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    fi
    monmaptool --create --fsid "$fsid" --addv a "[v2:$addr:$port2,v1:$addr:$port1]" \
        "$dir/monmap" >/dev/null
    ceph-mon -c "$dir/ceph.conf" -i a --mkfs --monmap "$dir/monmap" --keyring "$dir/keyring"
    ceph-mon -c "$dir/ceph.conf" -i a
    wait_until 60 "the monitor" "${ceph[@]}" --connect-timeout 5 mon stat
    local osd_uuid
    osd_uuid=$(uuidgen)
    "${ceph[@]}" osd new "$osd_uuid" >/dev/null
    if [[ $auth == cephx ]]; then
        "${ceph[@]}" auth get-or-create osd.0 mon 'allow profile osd' osd 'allow *' \
            mgr 'allow profile osd' -o "$dir/osd.0/keyring"
    fi
    local osdkey=()
    [[ $auth == cephx ]] && osdkey=(--keyring "$dir/osd.0/keyring")
    ceph-osd -c "$dir/ceph.conf" -i 0 --mkfs --osd-uuid "$osd_uuid" "${osdkey[@]}" \
        >"$dir/log/osd-mkfs.out" 2>&1 || { cat "$dir/log/osd-mkfs.out" >&2; return 1; }
    ceph-osd -c "$dir/ceph.conf" -i 0 "${osdkey[@]}"
    wait_until 60 "osd.0 up" osd_up
    "${ceph[@]}" osd pool create rbd 8 8 >/dev/null 2>&1
    "${ceph[@]}" osd pool application enable rbd rbd >/dev/null 2>&1
    wait_until 60 "pool rbd active" rbd -c "$dir/ceph.conf" ls rbd
    if [[ $mgr == mgr ]]; then
        mkdir -p "$dir/mgr.x"
        local mgrkey=()
        if [[ $auth == cephx ]]; then
            "${ceph[@]}" auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' \
                -o "$dir/mgr.x/keyring"
            mgrkey=(--keyring "$dir/mgr.x/keyring")
        fi
        ceph-mgr -c "$dir/ceph.conf" -i x --mgr-data "$dir/mgr.x" "${mgrkey[@]}"
        wait_until 120 "ceph-mgr available" mgr_available
    fi
}

# mgr_available: a ceph-mgr is active.
mgr_available() {
    ceph -c "$dir/ceph.conf" mgr stat 2>/dev/null | grep -q '"available": true'
}

case $op in
start) start ;;
stop) stop ;;
*) usage ;;
esac
