//! A small, stable content hash (FNV-1a, 64 bit) for cache stamps.
//!
//! `std`'s `DefaultHasher` may change between Rust releases; cache stamps
//! only need a hash that is stable and cheap, not a cryptographic one.

/// Incremental FNV-1a hasher.
pub struct Fnv(u64);

impl Fnv {
    /// Starts a new hash.
    pub fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    /// Feeds bytes, followed by a separator so that `("ab","c")` and
    /// `("a","bc")` differ.
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes.iter().chain(std::iter::once(&0xff)) {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    /// Returns the hash as 16 hex digits.
    pub fn hex(&self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Fnv;

    #[test]
    fn separator_matters() {
        let a = Fnv::new().update(b"ab").update(b"c").hex();
        let b = Fnv::new().update(b"a").update(b"bc").hex();
        assert_ne!(a, b);
    }
}
