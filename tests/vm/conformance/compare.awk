# compare.awk — read every sg_raw report of a conformance run, compare
# fileio's answer with ours case by case under the deviation list, and write
# the table (run.sh calls it once: awk is far faster than the shell under
# TCG).
#
# Files, in this order: the checked deviation list (pattern, scope, expect,
# reason), md5sum's output for the data-in files (paths ref/NAME.bin,
# usr/NAME.bin), the checked catalogue (name, cdb, data-out, data-in,
# notes). Variables: dir (the folder holding ref/ and usr/), table and raw
# (the files to write), selftest (non-empty: both LUNs are fileio, so
# expected answers are not checked).
#
# An answer is condensed from `sg_raw -v`'s report as
#   STATUS [k/aa/qq [info=N] [fmt=72]] [sks=XXXXXX] [NB#md5]
# and two answers are compared field by field: status and sense (key, ASC,
# ASCQ, INFORMATION, format), the sense-key-specific bytes, the data-in
# (length and bytes).
#
# Verdicts (see deviations.tsv for the scopes): an entry with an expected
# answer replaces fileio as the reference (the first such entry counts);
# otherwise equal answers MATCH, and different ones are a DEVIATION when
# every difference is allowed (status or sense: 'all'; sense-key-specific
# bytes fileio lacks: 'sks'; data: 'data', 'vpd83' when the logical-unit
# designator types agree, or masks covering every differing byte of
# equal-length data), else a MISMATCH.
#
# stdout: "summary CASES MATCH DEVIATION MISMATCH ERROR" and one
# "mismatch NAME" line per MISMATCH.

# glob2re(g): an anchored regular expression for the shell glob g.
function glob2re(g,    re, i, c) {
    re = "^"
    for (i = 1; i <= length(g); i++) {
        c = substr(g, i, 1)
        if (c == "*")
            re = re ".*"
        else if (c == "?")
            re = re "."
        else if (index("\\^$.[]|()+{}", c))
            re = re "\\" c
        else
            re = re c
    }
    return re "$"
}

# parse(key): read dir/key.txt into P_status, P_sense, P_sks, P_len, P_err.
function parse(key,    file, line, raw, in_raw, n, b, rc, k, type, len, info, i) {
    file = dir "/" key ".txt"
    P_status = ""; P_sense = ""; P_sks = ""; P_len = 0; P_err = ""
    raw = ""; in_raw = 0
    while ((getline line < file) > 0) {
        if (in_raw && line ~ /^ +[0-9a-f][0-9a-f]( +[0-9a-f][0-9a-f])* *$/) {
            raw = raw " " line
            continue
        }
        in_raw = 0
        if (line ~ /^SCSI Status: /) {
            P_status = line
            sub(/^SCSI Status: /, "", P_status)
            sub(/ +$/, "", P_status)
            if (P_status == "Good")
                P_status = "GOOD"
            else if (P_status == "Check Condition")
                P_status = "CHECK"
            else {
                P_status = toupper(P_status)
                gsub(/[ -]/, "_", P_status)
            }
        } else if (line ~ /Raw sense data/) {
            in_raw = 1
        } else if (line ~ /^Writing [0-9]+ bytes of data to /) {
            split(line, b, " ")
            P_len = b[2] + 0
        } else if (line ~ /^>>> |^do_scsi_pt: |No such |Permission denied/) {
            P_err = line
        }
    }
    close(file)
    if (P_status == "")
        P_status = "ERROR"
    n = split(raw, b, " ")
    if (n == 0)
        return
    rc = hexval(b[1]) % 128
    info = ""
    if (rc == 114 || rc == 115) {
        # Descriptor format: key, ASC, ASCQ in bytes 1-3; descriptors from
        # byte 8 (type 00 information, 02 sense key specific).
        P_sense = substr(b[2], 2, 1) "/" b[3] "/" b[4]
        for (k = 9; k + 1 <= n; k += 2 + len) {
            type = hexval(b[k])
            len = hexval(b[k + 1])
            if (type == 0 && k + 11 <= n) {
                info = 0
                for (i = k + 4; i <= k + 11; i++)
                    info = info * 256 + hexval(b[i])
            } else if (type == 2 && k + 6 <= n && hexval(b[k + 4]) >= 128) {
                P_sks = b[k + 4] b[k + 5] b[k + 6]
            }
        }
    } else {
        P_sense = substr(b[3], 2, 1) "/" b[13] "/" b[14]
        if (hexval(b[1]) >= 128)
            info = hexval(b[4] b[5] b[6] b[7])
        if (n >= 18 && hexval(b[16]) >= 128)
            P_sks = b[16] b[17] b[18]
    }
    if (info != "")
        P_sense = P_sense " info=" info
    if (rc != 112)
        P_sense = P_sense " fmt=" b[1]
}

# show(st, se, sk, ln, h, er): one answer for the table.
function show(st, se, sk, ln, h, er,    s) {
    s = st
    if (se != "") s = s " " se
    if (sk != "") s = s " sks=" sk
    if (ln > 0) s = s " " ln "B#" substr(h, 1, 8)
    if (er != "") s = s " (" er ")"
    return s
}

# mask_allows(scope, off, a, b): whether data:LIST lets byte off differ
# from a to b.
function mask_allows(scope, off, a, b,    items, n, i, it, m, lo, hi, r, x) {
    n = split(substr(scope, 6), items, ",")
    for (i = 1; i <= n; i++) {
        it = items[i]
        m = 255
        if (index(it, "/")) {
            m = hexval(substr(it, index(it, "/") + 1))
            it = substr(it, 1, index(it, "/") - 1)
        }
        if (index(it, "-")) {
            lo = substr(it, 1, index(it, "-") - 1) + 0
            hi = substr(it, index(it, "-") + 1) + 0
        } else {
            lo = hi = it + 0
        }
        if (off < lo || off > hi)
            continue
        # The bits that differ must all lie in the mask.
        x = xor8(a, b)
        r = 1
        for (; x > 0; x = int(x / 2)) {
            if (x % 2 && m % 2 == 0) { r = 0; break }
            m = int(m / 2)
        }
        if (r) return 1
    }
    return 0
}

function xor8(a, b,    r, bit) {
    r = 0
    for (bit = 1; bit < 256; bit *= 2) {
        if ((a % 2) != (b % 2)) r += bit
        a = int(a / 2); b = int(b / 2)
    }
    return r
}

# expect_ok(e, st, se): whether an answer is the expected one.
function expect_ok(e, st, se,    s) {
    if (e == "GOOD")
        return st == "GOOD"
    s = se
    sub(/ .*/, "", s)
    return st == "CHECK" && "CHECK " s == e
}

# diff_data(): read, with one od, the data-in of every case in dumpit[]
# (answers differ and at least one side has data): the first 256 bytes of
# each side go to dump[c, side], the first 1024 to byte[c, side, pos]; for
# the cases in want[] (data on both sides, lengths or hashes differ) the
# differing offsets go to dcount[c], dshow[c], doff/dref/dusr[c, k].
function diff_data(    cmd, i, c, e, n, line, t, j, k, v, pos, files, ne, ec, es, el) {
    files = ""
    ne = 0
    for (i = 1; i <= ncases; i++) {
        c = cname[i]
        if (!(c in dumpit))
            continue
        if (rlen[c] > 0) {
            ec[++ne] = c; es[ne] = "ref"; el[ne] = rlen[c]
            files = files " ref/" c ".bin"
        }
        if (ulen[c] > 0) {
            ec[++ne] = c; es[ne] = "usr"; el[ne] = ulen[c]
            files = files " usr/" c ".bin"
        }
    }
    if (ne == 0)
        return
    cmd = "cd '" dir "' && od -An -v -tx1" files
    e = 1
    pos = 0
    while ((cmd | getline line) > 0) {
        n = split(line, t, " ")
        for (j = 1; j <= n && e <= ne; j++) {
            c = ec[e]
            v = hexval(t[j])
            if (pos < 256)
                dump[c, es[e]] = dump[c, es[e]] (pos % 16 ? " " : (pos ? "\n        " : "        ")) t[j]
            if (pos < 1024)
                byte[c, es[e], pos] = v
            if (es[e] == "ref") {
                rbyte[pos] = v
            } else if ((c in want) && (pos in rbyte) && rbyte[pos] != v) {
                k = ++dcount[c]
                doff[c, k] = pos; dref[c, k] = rbyte[pos]; dusr[c, k] = v
                if (k <= 8)
                    dshow[c] = dshow[c] sprintf(" %d:%02x/%02x", pos, rbyte[pos], v)
            }
            if (++pos == el[e]) {
                if (es[e] == "usr" || !(ec[e + 1] == c))
                    split("", rbyte)
                pos = 0
                e++
            }
        }
    }
    close(cmd)
}

# lu_designators(c, side, len): the designator types of the logical-unit
# designators (association 00b) in a VPD page 0x83 answer, in order
# ("3,1,6"); designators of the target port and device are left out.
function lu_designators(c, side, len,    off, out, b1, dlen) {
    out = ""
    for (off = 4; off + 4 <= len && off + 4 <= 1024; off += 4 + dlen) {
        b1 = byte[c, side, off + 1]
        dlen = byte[c, side, off + 3]
        if (int(b1 / 16) % 4 == 0)
            out = out (out != "" ? "," : "") (b1 % 16)
    }
    return out
}

# judge(i): the verdict of case i into V, with DETAIL and USED.
function judge(i,    c, j, d_sense, d_sks, d_data, je, ja, js, jd, jv, lr, lu, nm, m, k, ok, allm) {
    c = cname[i]
    V = ""; USED = ""
    d_sense = (rst[c] != ust[c] || rse[c] != use[c])
    d_sks = (rsk[c] != usk[c])
    d_data = (rlen[c] != ulen[c] || rh[c] != uh[c])
    DETAIL = ""
    if (d_data) {
        DETAIL = "data: fileio " rlen[c] "B, ours " ulen[c] "B"
        if (c in want)
            DETAIL = DETAIL "; " (rlen[c] != ulen[c] ? "in the common " (rlen[c] < ulen[c] ? rlen[c] : ulen[c]) " bytes, " : "") \
                (dcount[c] + 0) " byte(s) differ" (dcount[c] ? " (offset:fileio/ours)" dshow[c] (dcount[c] > 8 ? " ..." : "") : "")
    }
    je = ja = js = jd = jv = ""
    nm = 0
    for (j = 1; j <= ndev; j++) {
        if (c !~ dre[j]) continue
        if (dscope[j] == "all") {
            if (dexp[j] != "-") { if (je == "") je = j }
            else if (ja == "") ja = j
        } else if (dscope[j] == "sks") {
            if (js == "") js = j
        } else if (dscope[j] == "data") {
            if (jd == "") jd = j
        } else if (dscope[j] == "vpd83") {
            if (jv == "") jv = j
        } else {
            masks[++nm] = j
        }
    }
    if (je != "" && selftest == "") {
        if (expect_ok(dexp[je], ust[c], use[c])) {
            V = "DEVIATION"; USED = "#" je
        } else {
            V = "MISMATCH"
            DETAIL = "expected " dexp[je] (DETAIL != "" ? "; " DETAIL : "")
        }
        return
    }
    if (je != "") ja = je
    if (!d_sense && !d_sks && !d_data) { V = "MATCH"; return }
    if (ja != "") { V = "DEVIATION"; USED = "#" ja; return }
    V = "MISMATCH"
    if (d_sense) return
    if (d_sks) {
        if (js == "" || rsk[c] != "") return
        USED = "#" js
    }
    if (d_data) {
        if (jd != "") {
            USED = USED (USED != "" ? ", " : "") "#" jd
        } else if (jv != "") {
            if (!(c in want)) return
            lr = lu_designators(c, "ref", rlen[c])
            lu = lu_designators(c, "usr", ulen[c])
            if (lr != lu) {
                DETAIL = DETAIL "; logical-unit designator types: fileio " lr ", ours " lu
                return
            }
            USED = USED (USED != "" ? ", " : "") "#" jv
        } else {
            if (nm == 0 || rlen[c] != ulen[c] || !(c in want)) return
            for (k = 1; k <= dcount[c]; k++) {
                ok = 0
                for (m = 1; m <= nm; m++)
                    if (mask_allows(dscope[masks[m]], doff[c, k], dref[c, k], dusr[c, k])) { ok = 1; break }
                if (!ok) return
            }
            allm = ""
            for (m = 1; m <= nm; m++)
                allm = allm (allm != "" ? ", " : "") "#" masks[m]
            USED = USED (USED != "" ? ", " : "") allm
        }
    }
    V = "DEVIATION"
}

# copy(file): append a report to the raw file, indented.
function copy(file,    line) {
    while ((getline line < file) > 0)
        print "    " line > raw
    close(file)
}

BEGIN { FS = "\t" }

FILENAME == ARGV[1] {
    ndev++
    dpat[ndev] = $1; dscope[ndev] = $2; dexp[ndev] = $3; dreason[ndev] = $4
    dre[ndev] = glob2re($1)
    next
}

FILENAME == ARGV[2] {
    split($0, f, " +")
    md5[f[2]] = f[1]
    next
}

{
    ncases++
    cname[ncases] = $1; ccdb[ncases] = $2; cdout[ncases] = $3; cdin[ncases] = $4; cnote[ncases] = $5
}

END {
    for (i = 1; i <= ncases; i++) {
        c = cname[i]
        parse("ref/" c)
        rst[c] = P_status; rse[c] = P_sense; rsk[c] = P_sks; rlen[c] = P_len; rerr[c] = P_err
        rh[c] = (P_len > 0) ? md5["ref/" c ".bin"] : ""
        parse("usr/" c)
        ust[c] = P_status; use[c] = P_sense; usk[c] = P_sks; ulen[c] = P_len; uerr[c] = P_err
        uh[c] = (P_len > 0) ? md5["usr/" c ".bin"] : ""
        if (rlen[c] > 0 && ulen[c] > 0 && (rlen[c] != ulen[c] || rh[c] != uh[c]))
            want[c] = 1
        if ((rlen[c] > 0 || ulen[c] > 0) && (rlen[c] != ulen[c] || rh[c] != uh[c] ||
                                              rst[c] != ust[c] || rse[c] != use[c] || rsk[c] != usk[c]))
            dumpit[c] = 1
    }
    diff_data()

    dashes = sprintf("%140s", ""); gsub(/ /, "-", dashes)
    printf "%-30s | %-38s | %-38s | %s\n%s\n", "case", "fileio", "ours", "verdict", dashes > table
    printf "" > raw
    for (i = 1; i <= ncases; i++) {
        c = cname[i]
        if (rst[c] == "ERROR") {
            V = "ERROR (fileio side: " (rerr[c] != "" ? rerr[c] : "no SCSI status") ")"
            DETAIL = ""
            nerr++
        } else {
            judge(i)
            if (V == "DEVIATION") {
                n = split(USED, u, ", ")
                for (k = 1; k <= n; k++) used[substr(u[k], 2)] = 1
                V = "DEVIATION(" USED ")"
                ndevi++
            } else if (V == "MATCH") {
                nmatch++
            } else {
                nmis++
                print "mismatch " c
            }
        }
        printf "%-30s | %-38s | %-38s | %s\n", c, show(rst[c], rse[c], rsk[c], rlen[c], rh[c], rerr[c]),
            show(ust[c], use[c], usk[c], ulen[c], uh[c], uerr[c]), V > table
        if (V != "MATCH" && DETAIL != "")
            printf "%-30s   %s\n", "", DETAIL > table
        if (V !~ /^(MATCH|DEVIATION)/) {
            printf "=== %s (%s): %s\n    cdb %s, data-out %s, data-in %s\n", c, V, cnote[i], ccdb[i], cdout[i], cdin[i] > raw
            print "--- fileio:" > raw
            copy(dir "/ref/" c ".txt")
            print "--- ours:" > raw
            copy(dir "/usr/" c ".txt")
        }
        if (V != "MATCH" && (c in dumpit)) {
            if (V ~ /^DEVIATION/)
                printf "=== %s (%s): %s\n    cdb %s\n", c, V, cnote[i], ccdb[i] > raw
            if (rlen[c] > 0)
                printf "--- fileio data-in, %d bytes%s:\n%s\n", rlen[c],
                    (rlen[c] > 256 ? " (the first 256)" : ""), dump[c, "ref"] > raw
            if (ulen[c] > 0)
                printf "--- our data-in, %d bytes%s:\n%s\n", ulen[c],
                    (ulen[c] > 256 ? " (the first 256)" : ""), dump[c, "usr"] > raw
        }
    }
    printf "\nDeviation entries (deviations.tsv):\n" > table
    for (j = 1; j <= ndev; j++)
        printf "  #%-3d %-28s %-18s %-14s %s%s\n", j, dpat[j], dscope[j], (dexp[j] == "-" ? "" : dexp[j]),
            dreason[j], (j in used ? "" : " (not needed in this run)") > table
    printf "\nconformance: %d cases: %d MATCH, %d DEVIATION, %d MISMATCH, %d ERROR\n",
        ncases, nmatch, ndevi, nmis, nerr > table
    printf "summary %d %d %d %d %d\n", ncases, nmatch, ndevi, nmis, nerr
}
