//! Bounds-checked big-endian accessors. Reads past the end yield zero and
//! writes past the end are dropped, so no caller can panic on short input;
//! callers check lengths first where a short buffer is an error.

/// Byte `i` of `b`, or 0 when out of range.
pub(crate) fn u8_at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

fn be<const N: usize>(b: &[u8], i: usize) -> u64 {
    let mut v = 0u64;
    for k in 0..N {
        v = (v << 8) | u64::from(u8_at(b, i.saturating_add(k)));
    }
    v
}

/// Big-endian u16 at `i`.
pub(crate) fn be16(b: &[u8], i: usize) -> u16 {
    // N = 2 bytes always fit.
    be::<2>(b, i) as u16
}

/// Big-endian 24-bit value at `i`.
pub(crate) fn be24(b: &[u8], i: usize) -> u32 {
    be::<3>(b, i) as u32
}

/// Big-endian u32 at `i`.
pub(crate) fn be32(b: &[u8], i: usize) -> u32 {
    be::<4>(b, i) as u32
}

/// Big-endian u64 at `i`.
pub(crate) fn be64(b: &[u8], i: usize) -> u64 {
    be::<8>(b, i)
}

fn put(buf: &mut [u8], i: usize, src: &[u8]) {
    if let Some(dst) = i.checked_add(src.len()).and_then(|end| buf.get_mut(i..end)) {
        dst.copy_from_slice(src);
    }
}

/// Store `v` big-endian at `i`.
pub(crate) fn put16(buf: &mut [u8], i: usize, v: u16) {
    put(buf, i, &v.to_be_bytes());
}

/// Store `v` big-endian at `i`.
pub(crate) fn put32(buf: &mut [u8], i: usize, v: u32) {
    put(buf, i, &v.to_be_bytes());
}

/// Store `v` big-endian at `i`.
pub(crate) fn put64(buf: &mut [u8], i: usize, v: u64) {
    put(buf, i, &v.to_be_bytes());
}

/// Copy `src` into `buf` at `i` (dropped if it does not fit).
pub(crate) fn put_bytes(buf: &mut [u8], i: usize, src: &[u8]) {
    put(buf, i, src);
}

/// An ASCII field of `len` bytes: `s` truncated and padded with spaces.
pub(crate) fn ascii_field(s: &str, len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = s.bytes().take(len).collect();
    v.resize(len, b' ');
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_bounded() {
        let b = [1u8, 2, 3];
        assert_eq!(be16(&b, 0), 0x0102);
        assert_eq!(be16(&b, 2), 0x0300);
        assert_eq!(be32(&b, usize::MAX), 0);
        assert_eq!(be64(&b, 0), 0x0102_0300_0000_0000);
        assert_eq!(be24(&b, 0), 0x010203);
    }

    #[test]
    fn writes_are_bounded() {
        let mut b = [0u8; 4];
        put32(&mut b, 0, 0xdead_beef);
        assert_eq!(b, [0xde, 0xad, 0xbe, 0xef]);
        put32(&mut b, 2, 1);
        assert_eq!(b, [0xde, 0xad, 0xbe, 0xef]);
        put16(&mut b, usize::MAX, 1);
        put64(&mut b, 0, 1);
        assert_eq!(ascii_field("LIO-ORG-LONG", 8), b"LIO-ORG-");
        assert_eq!(ascii_field("ab", 4), b"ab  ");
    }
}
