# dataout.awk — write the data-out buffers of the catalogue's cases (run.sh
# runs it once per LUN; awk writes binary far faster than the shell under
# TCG). Run with LC_ALL=C so that %c writes single bytes.
#
# Input: the checked catalogue (name, cdb, data-out, data-in, notes).
# Variables: dir (output folder), side (ref or usr), naa (32 hex digits,
# replacing {NAA}), shared (1: also write the buffers without {NAA}, which
# both LUNs share; 0: only the {NAA} ones).
# Output, one line per buffer written: name TAB file TAB length. A data-out
# field it cannot read is reported on stderr and makes the exit status 1.

# rep(c, n): the string c repeated n times (by doubling).
function rep(c, n,    out) {
    out = ""
    while (n > 0) {
        if (n % 2)
            out = out c
        c = c c
        n = int(n / 2)
    }
    return out
}

# bytes(spec): the data-out spec as a byte string, or bad = 1.
function bytes(spec,    items, n, i, it, f, hex, j, s) {
    s = ""
    n = split(spec, items, "+")
    for (i = 1; i <= n; i++) {
        it = items[i]
        if (it ~ /^hex:/) {
            hex = substr(it, 5)
            gsub(/\{NAA\}/, naa, hex)
            gsub(/ /, "", hex)
            if (hex !~ /^([0-9a-fA-F][0-9a-fA-F])*$/) {
                bad = 1
                return ""
            }
            for (j = 1; j < length(hex); j += 2)
                s = s sprintf("%c", hexval(substr(hex, j, 2)))
        } else if (it ~ /^zeros:[0-9]+$/) {
            s = s rep(sprintf("%c", 0), substr(it, 7) + 0)
        } else if (it ~ /^pattern:[0-9]+:[0-9a-fA-F][0-9a-fA-F]$/) {
            split(it, f, ":")
            s = s rep(sprintf("%c", hexval(f[3])), f[2] + 0)
        } else if (it ~ /^incr:[0-9]+$/) {
            f[1] = substr(it, 6) + 0
            s = s substr(rep(incr, int(f[1] / 256) + 1), 1, f[1])
        } else {
            bad = 1
            return ""
        }
    }
    return s
}

BEGIN {
    FS = "\t"
    incr = ""
    for (i = 0; i < 256; i++)
        incr = incr sprintf("%c", i)
}

$3 == "-" { next }

{
    pernaa = index($3, "{NAA}") > 0
    if (!pernaa && !shared)
        next
    bad = 0
    data = bytes($3)
    if (bad) {
        printf "cases.tsv: case %s: cannot read data-out \"%s\"\n", $1, $3 > "/dev/stderr"
        failed = 1
        next
    }
    file = dir "/" $1 (pernaa ? "." side : "") ".bin"
    printf "%s", data > file
    close(file)
    printf "%s\t%s\t%d\n", $1, file, length(data)
}

END { exit failed }
