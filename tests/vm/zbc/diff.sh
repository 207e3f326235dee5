#!/bin/bash
# zbc/diff.sh — the differential runner of t-26-zbc and t-27-fbo, sourced
# after lib.sh. diff_setup NAME DIR MIN names the differential (its
# output folder $WORK/NAME-diff, its table $WORK/NAME-diff.txt), the
# folder of its cases.tsv and deviations.tsv, and the fewest cases a run
# must compare.
#
# diff_send SIDE SG sends every case of cases.tsv, in order, with sg_raw
# to SG and records one answer a case in $DF_OUT/SIDE.tsv:
#   GOOD | CHECK k/AA/QQ, then sks=XXXXXX when the sense-key-specific bytes
#   are valid, then data=<md5 prefix>/<bytes> when data came back.
# A case's fifth field, when there is one, says how long its answer
# really is: beN@O+K, the N-bit big-endian number at byte O plus K (a
# REPORT ZONES answer: be32@0+64, its header and the descriptors its zone
# list length counts; a MODE SENSE (10) answer: be16@0+2). The data-in is
# cut there: what lies past an answer is not part of it (tcmu-runner
# leaves the rest of the buffer as it found it).
# diff_compare prints the table (case | C | ours | verdict) and fails
# on any MISMATCH, and on any deviation of deviations.tsv a case no
# longer needs.

# diff_setup NAME DIR MIN: the output folder, the pattern (the data-out
# of every write: 4 KiB of text), sg_raw from guest RAM
# (conformance/run.sh's conf_sg_raw_setup: ~0.1 s a case less under TCG).
diff_setup() {
    DF_NAME=$1 DF_DIR=$2 DF_MIN=$3
    DF_OUT=$WORK/$DF_NAME-diff
    DF_PATTERN=$DF_OUT/pattern.bin
    mkdir -p "$DF_OUT"
    head -c 4096 < <(yes "$DF_NAME differential, tcmu-rs against tcmu-runner") >"$DF_PATTERN"
    CONF_DIR=$DF_DIR/../conformance
    # shellcheck source=../conformance/run.sh
    source "$CONF_DIR/run.sh"
    CONF_OUT=$DF_OUT
    conf_sg_raw_setup
}

# diff_answers SIDE CASES: $DF_OUT/SIDE.tsv, one answer a case, from
# sg_raw -v's reports and the data-in files (one python process: a few
# small processes a case would cost more than sg_raw under TCG).
diff_answers() {
    python3 - "$2" "$DF_OUT/$1" >"$DF_OUT/$1.tsv" <<'PY'
import hashlib, os, re, sys
cases, folder = sys.argv[1], sys.argv[2]
for line in open(cases):
    if not line.strip() or line.startswith("#"):
        continue
    fields = line.rstrip("\n").split("\t")
    name = fields[0]
    cut = fields[4] if len(fields) > 4 else ""
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
        m = re.fullmatch(r"be(8|16|32)@(\d+)\+(\d+)", cut)
        if cut and not m:
            sys.exit("%s: bad length field %r" % (name, cut))
        if m:
            bits, at, plus = int(m.group(1)), int(m.group(2)), int(m.group(3))
            if len(data) >= at + bits // 8:
                data = data[: int.from_bytes(data[at : at + bits // 8], "big") + plus]
        answer += " data=%s/%d" % (hashlib.md5(data).hexdigest()[:8], len(data))
    print("%s\t%s" % (name, answer))
PY
}

# diff_send SIDE SG [CASES]: every case of CASES (default cases.tsv)
# to SG; answers in $DF_OUT/SIDE.tsv.
diff_send() {
    local side=$1 sg=$2 cases=${3:-$DF_DIR/cases.tsv} name cdb dout din cut dir=$DF_OUT/$1 n=0
    local -a args c
    mkdir -p "$dir"
    while IFS=$'\t' read -r name cdb dout din cut; do
        [[ -z $name || $name == \#* ]] && continue
        args=(-v -t 20)
        [[ $dout == - ]] || args+=(-s "$dout" -i "$DF_PATTERN")
        ((din == 0)) || args+=(-r "$din" -o "$dir/$name.bin")
        read -ra c <<<"$cdb"
        "${SG_RAW[@]}" "${args[@]}" "$sg" "${c[@]}" >"$dir/$name.txt" 2>&1 || true
        n=$((n + 1))
    done <"$cases"
    diff_answers "$side" "$cases" || fail "cannot read the answers of the $side LUN"
    log "$DF_NAME differential: $n cases sent to the $side LUN ($sg)"
}

# diff_compare: the table, into $WORK/NAME-diff.txt and the console;
# fails on a MISMATCH or an unneeded deviation.
diff_compare() {
    local table=$WORK/$DF_NAME-diff.txt verdicts
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
        }' "$DF_DIR/deviations.tsv" "$DF_OUT/c.tsv" "$DF_OUT/ours.tsv") ||
        fail "comparing the $DF_NAME answers failed"
    local line k side
    while IFS= read -r line; do echo "$line"; done <"$table"
    # The data-in of every case that does not match, both sides, for the
    # record (the answers live in guest RAM).
    for k in $(awk -F' [|] ' 'NR > 1 && $4 !~ /^MATCH/ && $2 $3 ~ /data=/ { print $1 }' "$table"); do
        for side in c ours; do
            [[ -s $DF_OUT/$side/$k.bin ]] || continue
            echo "$k ($side):"
            od -An -tx1 -v -N 256 "$DF_OUT/$side/$k.bin"
        done
    done
    local word n match dev other
    read -r word n match dev other <<<"$(grep '^summary' <<<"$verdicts")"
    ((n >= DF_MIN)) || fail "$DF_NAME differential: only $n cases compared"
    if grep -q '^bad' <<<"$verdicts"; then
        fail "$DF_NAME differential: $(grep '^bad' <<<"$verdicts" | cut -c5-)"
    fi
    log "$DF_NAME differential against tcmu-runner: $n cases, $match MATCH, $dev DEVIATION, $other other"
}

# diff_cross_check SIDE OWNER WHAT: every answer of $DF_OUT/SIDE.tsv equals
# the answer of the same case in $DF_OUT/OWNER.tsv (a daemon serving the
# other daemon's file answers as the file's own daemon did).
diff_cross_check() {
    local name answer want n=0
    while IFS=$'\t' read -r name answer; do
        want=$(awk -F'\t' -v k="$name" '$1 == k { print $2 }' "$DF_OUT/$2.tsv")
        [[ $answer == "$want" ]] || fail "$3: $name answers '$answer', the file's own daemon '$want'"
        n=$((n + 1))
    done <"$DF_OUT/$1.tsv"
    ((n > 0)) || fail "$3: no answers"
    log "$3: $n answers equal the file's own daemon's"
}
