#!/bin/bash
# conformance/run.sh — the differential SCSI conformance runner, sourced by
# tests/vm/t-35-conformance.sh after lib.sh (set CONF_DIR first).
#
# Every case of cases.tsv goes, with sg_raw, to a kernel `fileio` LUN and to
# our `user:file` LUN over a file of the same size and content, in the same
# boot and in the same order on both. Status, sense (response code, key,
# ASC/ASCQ, INFORMATION, sense-key-specific bytes) and data-in must be
# equal, except where deviations.tsv allows a difference for a reason. The
# table (case | fileio | ours | verdict) goes to the console and to
# conformance.txt in the test's log folder; conformance-raw.txt holds the
# sg_raw reports of every case that did not match, conformance-dmesg.txt
# the kernel's messages (fileio explains most refusals there).
#
# The run fails on any MISMATCH, on fewer than CONF_MIN_CASES cases, or when
# a case could not be run on the fileio LUN (a harness problem).
# CONFORMANCE_REPORT_ONLY=1 reports the table and passes despite
# MISMATCHes (harness problems still fail).
#
# Speed: under TCG a process started from the 9p root costs ~0.2 s and the
# shell itself is slow, so sg_raw runs from a copy in guest RAM through the
# dynamic loader, both LUNs are driven at once, and the data-out buffers and
# the comparison are awk programs (dataout.awk, compare.awk, sharing hex.awk).

# The catalogue's folder (set by the caller: lib.sh changes the directory).
CONF_DIR=${CONF_DIR:?set CONF_DIR to the conformance folder before sourcing run.sh}
CONF_CASES=$CONF_DIR/cases.tsv
CONF_DEVIATIONS=$CONF_DIR/deviations.tsv
CONF_MIN_CASES=200
# 16 MiB of 512-byte blocks: the catalogue's LBAs assume this size.
CONF_SIZE=$((16 << 20))
CONF_OUT=$WORK/conf

# ---------------------------------------------------------------------------
# The catalogue and the deviation list

# Case fields, by index.
C_NAME=() C_CDB=() C_DIN=()

# conf_check_lists: check cases.tsv and deviations.tsv (awk, one process
# each) into $CONF_OUT/{cases,deviations}.checked, the case fields into
# the C_* arrays; a list that cannot be read fails the test.
conf_check_lists() {
    awk -F'\t' '
        /^[[:space:]]*$/ || /^#/ { next }
        { e = "" }
        NF != 5 { e = "expected five TAB-separated fields, found " NF }
        e == "" && $1 !~ /^[a-z0-9._-]+$/ { e = "bad case name \"" $1 "\"" }
        e == "" && ($1 in seen) { e = "case \"" $1 "\" appears twice" }
        e == "" && ($2 !~ /^[0-9a-fA-F][0-9a-fA-F]( [0-9a-fA-F][0-9a-fA-F])+$/ ||
                    length($2) < 17 || length($2) > 95) { e = "bad CDB \"" $2 "\" (6 to 32 hex bytes)" }
        e == "" && $3 == "" { e = "empty data-out (use -)" }
        e == "" && $4 !~ /^[0-9]+$/ { e = "bad data-in length \"" $4 "\"" }
        e != "" { printf "cases.tsv:%d: %s\n", FNR, e > "/dev/stderr"; bad = 1; next }
        { seen[$1] = 1; print }
        END { exit bad }' "$CONF_CASES" >"$CONF_OUT/cases.checked" \
        || fail "$CONF_CASES is malformed (see above)"
    awk -F'\t' '
        /^[[:space:]]*$/ || /^#/ { next }
        { e = "" }
        NF != 4 { e = "expected four TAB-separated fields, found " NF }
        e == "" && $2 !~ /^(sks|data|data:[0-9a-fA-F\/,-]+|vpd83|all)$/ { e = "bad scope \"" $2 "\"" }
        e == "" && $3 !~ /^(-|GOOD|CHECK [0-9a-f]\/[0-9a-f][0-9a-f]\/[0-9a-f][0-9a-f])$/ { e = "bad expected answer \"" $3 "\"" }
        e == "" && $3 != "-" && $2 != "all" { e = "an expected answer needs scope all" }
        e != "" { printf "deviations.tsv:%d: %s\n", FNR, e > "/dev/stderr"; bad = 1; next }
        { print }
        END { exit bad }' "$CONF_DEVIATIONS" >"$CONF_OUT/deviations.checked" \
        || fail "$CONF_DEVIATIONS is malformed (see above)"
    local name cdb din
    while IFS=$'\t' read -r name cdb _ din _; do
        C_NAME+=("$name") C_CDB+=("$cdb") C_DIN+=("$din")
    done <"$CONF_OUT/cases.checked"
    ((${#C_NAME[@]} > 0)) || fail "no cases in $CONF_CASES"
}

# conf_dataout SIDE NAA SHARED: write the data-out buffers for one LUN
# (dataout.awk) and record them in DOUT_FILE/DOUT_LEN (keys SIDE/NAME).
# SHARED=1 also writes the buffers both LUNs share; the other LUN then uses
# them as they are.
declare -A DOUT_FILE=() DOUT_LEN=()
conf_dataout() {
    local side=$1 list=$CONF_OUT/dout.$1 name file len
    LC_ALL=C awk -v dir="$CONF_OUT/dout" -v side="$side" -v naa="$2" -v shared="$3" \
        -f "$CONF_DIR/hex.awk" -f "$CONF_DIR/dataout.awk" "$CONF_OUT/cases.checked" >"$list" \
        || fail "cannot write the data-out buffers (see above)"
    while IFS=$'\t' read -r name file len; do
        DOUT_FILE[$side/$name]=$file DOUT_LEN[$side/$name]=$len
    done <"$list"
}

# ---------------------------------------------------------------------------
# Devices

# conf_sg_raw_setup: SG_RAW, the command that runs sg_raw. A copy of the
# binary and its libraries in guest RAM, started through the dynamic loader,
# saves ~0.1 s a case under TCG; plain sg_raw when that cannot be set up.
conf_sg_raw_setup() {
    local bin dir=$CONF_OUT/bin lib loader='' version
    bin=$(command -v sg_raw) || fail "sg_raw (sg3-utils) is not installed"
    SG_RAW=("$bin")
    mkdir -p "$dir"
    cp "$bin" "$dir/" || return 0
    while read -r lib; do
        [[ -f $lib ]] || continue
        cp "$lib" "$dir/" || return 0
        [[ $lib == */ld-linux* ]] && loader=$dir/$(basename "$lib")
    done < <(ldd "$bin" | grep -Eo '/[^ ]+')
    [[ -n $loader ]] || return 0
    version=$("$loader" --library-path "$dir" "$dir/sg_raw" -V 2>&1) || true
    if [[ $version == *"sg_raw "[0-9]* ]]; then
        SG_RAW=("$loader" --library-path "$dir" "$dir/sg_raw")
    fi
}

# conf_fill FILE: the shared initial content: random bytes, so that every
# block differs from every other (both LUNs get copies of one file).
conf_fill() {
    head -c "$CONF_SIZE" /dev/urandom >"$1" || fail "cannot write $1"
    [[ $(stat -c %s "$1") -eq $CONF_SIZE ]] || fail "$1 is not $CONF_SIZE bytes"
}

# conf_set_attr BS NAME VALUE: set attrib/NAME of a backstore, failing the
# test when the attribute exists but refuses the value.
conf_set_attr() {
    [[ -e $1/attrib/$2 ]] || { log "note: $1 has no attrib/$2"; return 0; }
    echo "$3" >"$1/attrib/$2" || fail "cannot set attrib/$2=$3 of $1"
}

# conf_devices: the two LUNs over identical files. Sets REF_SG, USR_SG.
#
# The fileio LUN is told to advertise what a user:file LUN does: thin
# provisioning (UNMAP, WRITE SAME with UNMAP), unmapped blocks read as
# zeroes (a punched hole of a file does), a write-back cache. Ours gets
# fileio's hw_max_sectors, so both report and enforce one transfer limit.
# Each LUN has its own unit serial: the kernel's EXTENDED COPY finds its
# copy target by the NAA designator derived from it.
conf_devices() {
    conf_fill "$WORK/ref.img"
    cp "$WORK/ref.img" "$WORK/usr.img" || fail "cannot copy the backing file"

    fileio_backstore conf_ref "$CONF_SIZE" "$WORK/ref.img"
    local ref_bs=$BS_PATH a
    for a in emulate_tpu emulate_tpws emulate_write_cache unmap_zeroes_data; do
        conf_set_attr "$ref_bs" "$a" 1
    done
    loop_export "$ref_bs"
    REF_SG=$SG
    local max_sectors
    max_sectors=$(cat "$ref_bs/attrib/hw_max_sectors") || fail "cannot read hw_max_sectors of fileio"

    if [[ -n "${HARNESS_SELFTEST:-}" ]]; then
        user_file_backstore conf_usr "$CONF_SIZE" "$WORK/usr.img"
        conf_set_attr "$BS_PATH" unmap_zeroes_data 1
    else
        BS_PATH=$CFG/core/user_1/conf_usr
        mkdir -p "$BS_PATH" || fail "mkdir $BS_PATH failed"
        push_cleanup "rmdir_timeout $BS_PATH"
        echo "dev_size=$CONF_SIZE,hw_max_sectors=$max_sectors" >"$BS_PATH/control" \
            || fail "cannot set dev_size and hw_max_sectors"
        echo "dev_config=file/$WORK/usr.img" >"$BS_PATH/control" || fail "cannot set dev_config"
        set_serial "$BS_PATH"
        write_timeout 20 "$BS_PATH/enable" 1 || fail "enabling the user:file backstore failed"
    fi
    loop_export "$BS_PATH"
    USR_SG=$SG
    log "fileio LUN $REF_SG, user:file LUN $USR_SG, hw_max_sectors $max_sectors"
}

# conf_naa SIDE SG: the 16-byte NAA designator (hex digits) in the LUN's
# VPD page 0x83, into REPLY; 32 zeros when it has none (the EXTENDED COPY
# cases then fail on that LUN).
conf_naa() {
    local f=$CONF_OUT/vpd83.$1.bin hex
    "${SG_RAW[@]}" -r 255 -o "$f" "$2" 12 01 83 00 ff 00 >/dev/null 2>&1 || true
    hex=$(od -An -v -tx1 "$f" 2>/dev/null | tr -d ' \n')
    if [[ $hex =~ 01030010(6[0-9a-f]{31}) ]]; then
        REPLY=${BASH_REMATCH[1]}
    else
        log "warning: no NAA designator in VPD page 0x83 of $2"
        REPLY=00000000000000000000000000000000
    fi
}

# ---------------------------------------------------------------------------
# Running

# conf_send SIDE SG: run every case on SG, in catalogue order; sg_raw's
# report goes to $CONF_OUT/SIDE/NAME.txt, data-in to NAME.bin.
conf_send() {
    local side=$1 sg=$2 i name key
    local -a args cdb
    for ((i = 0; i < ${#C_NAME[@]}; i++)); do
        name=${C_NAME[$i]} key=$side/${C_NAME[$i]}
        args=(-v -t 20)
        read -ra cdb <<<"${C_CDB[$i]}"
        if [[ -n ${DOUT_FILE[$key]:-} ]]; then
            args+=(-s "${DOUT_LEN[$key]}" -i "${DOUT_FILE[$key]}")
        elif [[ -n ${DOUT_FILE[ref/$name]:-} ]]; then
            args+=(-s "${DOUT_LEN[ref/$name]}" -i "${DOUT_FILE[ref/$name]}")
        fi
        ((C_DIN[i] == 0)) || args+=(-r "${C_DIN[$i]}" -o "$CONF_OUT/$key.bin")
        "${SG_RAW[@]}" "${args[@]}" "$sg" "${cdb[@]}" >"$CONF_OUT/$key.txt" 2>&1 || true
    done
}

conformance_main() {
    mkdir -p "$CONF_OUT/ref" "$CONF_OUT/usr" "$CONF_OUT/dout"
    conf_check_lists
    local ncases=${#C_NAME[@]}
    log "$ncases cases, $(grep -c . "$CONF_OUT/deviations.checked") deviation entries"

    load_modules
    daemon_start
    local dmesg_start
    dmesg_start=$(dmesg | wc -l)
    conf_sg_raw_setup
    conf_devices
    conf_naa ref "$REF_SG"
    conf_dataout ref "$REPLY" 1
    conf_naa usr "$USR_SG"
    conf_dataout usr "$REPLY" 0

    # The LUNs are independent: both sequences run at once (two vCPUs).
    log "sending the cases to both LUNs (${SG_RAW[*]})"
    local start=$SECONDS ref_pid
    conf_send ref "$REF_SG" &
    ref_pid=$!
    conf_send usr "$USR_SG"
    wait "$ref_pid" || fail "sending the cases to the fileio LUN failed"
    log "sent in $((SECONDS - start))s"
    dmesg | tail -n +$((dmesg_start + 1)) >"$WORK/conformance-dmesg.txt"

    local table=$WORK/conformance.txt summary word name
    (cd "$CONF_OUT" && find ref usr -name '*.bin' -print0 | xargs -0r md5sum) >"$CONF_OUT/md5" \
        || fail "cannot hash the data-in"
    summary=$(awk -v dir="$CONF_OUT" -v table="$table" -v raw="$WORK/conformance-raw.txt" \
        -v selftest="${HARNESS_SELFTEST:-}" -f "$CONF_DIR/hex.awk" -f "$CONF_DIR/compare.awk" \
        "$CONF_OUT/deviations.checked" "$CONF_OUT/md5" "$CONF_OUT/cases.checked") \
        || fail "comparing the answers failed"
    local line
    while IFS= read -r line; do echo "$line"; done <"$table"

    undo_all
    daemon_stop

    local n_cases=0 n_match=0 n_dev=0 n_mis=0 n_err=0
    local -a mismatches=()
    while read -r word name; do
        case $word in
            summary) read -r n_cases n_match n_dev n_mis n_err <<<"$name" ;;
            mismatch) mismatches+=("$name") ;;
        esac
    done <<<"$summary"
    ((n_cases == ncases)) || fail "compared $n_cases cases out of $ncases"
    ((n_err == 0)) || fail "$n_err case(s) could not be run on the fileio LUN (see $table)"
    ((n_cases >= CONF_MIN_CASES)) || fail "only $n_cases cases (at least $CONF_MIN_CASES wanted)"
    if ((n_mis > 0)); then
        if [[ -n ${CONFORMANCE_REPORT_ONLY:-} ]]; then
            log "CONFORMANCE_REPORT_ONLY: $n_mis MISMATCH(es) reported, not failing"
        else
            fail "$n_mis case(s) answer differently from fileio: ${mismatches[*]}"
        fi
    fi
    log "conformance: $n_match MATCH, $n_dev DEVIATION, $n_mis MISMATCH"
}
