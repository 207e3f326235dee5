# hex.awk: helpers shared by dataout.awk and compare.awk (load it first:
# awk -f hex.awk -f dataout.awk ...).

# hexval(s): the value of the hexadecimal string s.
function hexval(s,    i, v) {
    v = 0
    s = tolower(s)
    for (i = 1; i <= length(s); i++)
        v = v * 16 + index("0123456789abcdef", substr(s, i, 1)) - 1
    return v
}
