#!/bin/bash
# zbc/diff.sh — the zbc differential of t-26-zbc, sourced after lib.sh
# (set ZBC_DIR to this folder first).
#
# zbc_diff_send SIDE SG sends every case of cases.tsv, in order, with
# sg_raw to SG and records one answer a case in $ZD_OUT/SIDE.tsv:
#   GOOD | CHECK k/AA/QQ, then sks=XXXXXX when the sense-key-specific bytes
#   are valid, then data=<md5 prefix>/<bytes> when data came back.
# A REPORT ZONES answer's data is cut to its header and the descriptors
# its zone list length counts (what lies past them is not part of the
# answer: tcmu-runner leaves the rest of the buffer as it found it).
# zbc_diff_compare prints the table (case | C | ours | verdict) and fails
# on any MISMATCH, and on any deviation of deviations.tsv a case no
# longer needs.

ZBC_DIR=${ZBC_DIR:?set ZBC_DIR to the zbc test folder before sourcing diff.sh}
ZD_OUT=$WORK/zbc-diff
# The data-out of every write: 4 KiB of text.
ZD_PATTERN=$ZD_OUT/pattern.bin

# zbc_diff_setup: the output folder, the pattern, sg_raw from guest RAM
# (conformance/run.sh's conf_sg_raw_setup: ~0.1 s a case less under TCG).
zbc_diff_setup() {
    mkdir -p "$ZD_OUT"
    head -c 4096 < <(yes 'zbc differential, tcmu-rs against tcmu-runner') >"$ZD_PATTERN"
    CONF_DIR=$ZBC_DIR/../conformance
    # shellcheck source=../conformance/run.sh
    source "$CONF_DIR/run.sh"
    CONF_OUT=$ZD_OUT
    conf_sg_raw_setup
}

# zbc_diff_answers SIDE CASES: $ZD_OUT/SIDE.tsv, one answer a case, from
# sg_raw -v's reports and the data-in files (one python process: a few
# small processes a case would cost more than sg_raw under TCG).
zbc_diff_answers() {
    python3 - "$2" "$ZD_OUT/$1" >"$ZD_OUT/$1.tsv" <<'PY'
import hashlib, os, re, sys
cases, folder = sys.argv[1], sys.argv[2]
for line in open(cases):
    if not line.strip() or line.startswith("#"):
        continue
    name = line.split("\t")[0]
    report = open(os.path.join(folder, name + ".txt"), errors="replace").read()
    m = re.search(r"^SCSI Status: (.*?) *$", report, re.M)
    status = {"Good": "GOOD", "Check Condition": "CHECK"}.get(
        m.group(1) if m else "", (m.group(1).upper().replace(" ", "_") if m else "ERROR"))
    answer = status
    m = re.search(r"Raw sense data.*\n((?: +[0-9a-f]{2}(?: +[0-9a-f]{2})* *\n)+)", report)
    if m:
        b = m.group(1).split()
        if len(b) >= 14:
            answer += " %s/%s/%s" % (b[2][1], b[12], b[13])
        if len(b) >= 18 and int(b[15], 16) >= 0x80:
            answer += " sks=" + "".join(b[15:18])
    path = os.path.join(folder, name + ".bin")
    if os.path.exists(path) and os.path.getsize(path) > 0:
        data = open(path, "rb").read()
        if name.startswith("rz-") and len(data) >= 4:
            data = data[: int.from_bytes(data[:4], "big") + 64]
        answer += " data=%s/%d" % (hashlib.md5(data).hexdigest()[:8], len(data))
    print("%s\t%s" % (name, answer))
PY
}

# zbc_diff_send SIDE SG [CASES]: every case of CASES (default cases.tsv)
# to SG; answers in $ZD_OUT/SIDE.tsv.
zbc_diff_send() {
    local side=$1 sg=$2 cases=${3:-$ZBC_DIR/cases.tsv} name cdb dout din dir=$ZD_OUT/$1 n=0
    local -a args c
    mkdir -p "$dir"
    while IFS=$'\t' read -r name cdb dout din; do
        [[ -z $name || $name == \#* ]] && continue
        args=(-v -t 20)
        [[ $dout == - ]] || args+=(-s "$dout" -i "$ZD_PATTERN")
        ((din == 0)) || args+=(-r "$din" -o "$dir/$name.bin")
        read -ra c <<<"$cdb"
        "${SG_RAW[@]}" "${args[@]}" "$sg" "${c[@]}" >"$dir/$name.txt" 2>&1 || true
        n=$((n + 1))
    done <"$cases"
    zbc_diff_answers "$side" "$cases" || fail "cannot read the answers of the $side LUN"
    log "zbc differential: $n cases sent to the $side LUN ($sg)"
}

# zbc_diff_compare: the table, into $WORK/zbc-diff.txt and the console;
# fails on a MISMATCH or an unneeded deviation.
zbc_diff_compare() {
    local table=$WORK/zbc-diff.txt verdicts
    verdicts=$(awk -F'\t' -v table="$table" '
        function strip(a, what) { gsub(" " what "=[^ ]*", "", a); return a }
        FILENAME ~ /deviations.tsv$/ {
            if ($0 ~ /^#/ || NF < 3) next
            dev[$1] = $2; num[$1] = $3; next
        }
        FILENAME ~ /\/c.tsv$/ { c[$1] = $2; order[++n] = $1; next }
        { ours[$1] = $2 }
        END {
            printf "%-28s | %-40s | %-40s | %s\n", "case", "tcmu-runner (C)", "tcmu-rs", "verdict" > table
            for (i = 1; i <= n; i++) {
                k = order[i]; a = c[k]; b = ours[k]
                if (!(k in ours)) v = "MISSING"
                else if (a == b) v = (k in dev) ? "UNNEEDED-DEVIATION" : "MATCH"
                else if (!(k in dev)) v = "MISMATCH"
                else if (dev[k] == "all") v = "DEVIATION(#" num[k] ")"
                else if (strip(a, dev[k]) == strip(b, dev[k])) v = "DEVIATION(#" num[k] ")"
                else v = "MISMATCH"
                printf "%-28s | %-40s | %-40s | %s\n", k, a, b, v > table
                split(v, w, "(")
                count[w[1]]++
                if (v !~ /^(MATCH|DEVIATION)/) bad = bad " " k "=" v
            }
            printf "summary %d %d %d %d\n", n, count["MATCH"], count["DEVIATION"], n - count["MATCH"] - count["DEVIATION"]
            if (bad != "") print "bad" bad
        }' "$ZBC_DIR/deviations.tsv" "$ZD_OUT/c.tsv" "$ZD_OUT/ours.tsv") ||
        fail "comparing the zbc answers failed"
    local line
    while IFS= read -r line; do echo "$line"; done <"$table"
    local word n match dev other
    read -r word n match dev other <<<"$(grep '^summary' <<<"$verdicts")"
    ((n >= 90)) || fail "zbc differential: only $n cases compared"
    if grep -q '^bad' <<<"$verdicts"; then
        fail "zbc differential: $(grep '^bad' <<<"$verdicts" | cut -c5-)"
    fi
    log "zbc differential against tcmu-runner: $n cases, $match MATCH, $dev DEVIATION, $other other"
}

# zbc_cross_check SIDE OWNER WHAT: every answer of $ZD_OUT/SIDE.tsv equals
# the answer of the same case in $ZD_OUT/OWNER.tsv (a daemon serving the
# other daemon's file answers as the file's own daemon did).
zbc_cross_check() {
    local name answer want n=0
    while IFS=$'\t' read -r name answer; do
        want=$(awk -F'\t' -v k="$name" '$1 == k { print $2 }' "$ZD_OUT/$2.tsv")
        [[ $answer == "$want" ]] || fail "$3: $name answers '$answer', the file's own daemon '$want'"
        n=$((n + 1))
    done <"$ZD_OUT/$1.tsv"
    ((n > 0)) || fail "$3: no answers"
    log "$3: $n answers equal the file's own daemon's"
}
