//! The L2 tables recently used, kept in memory.
//!
//! Metadata is written through (an entry reaches the file before the cache
//! sees it), so the cache never holds anything the file lacks and can drop
//! a table at any time. It holds tables up to a byte budget and drops the
//! least recently used one when full.

use std::collections::HashMap;
use std::fs::File;
use std::io;

use super::read_at_or_zero;

/// Bytes of L2 tables kept in memory (at least four tables are kept).
const BUDGET: usize = 4 << 20;

/// L2 tables by their offset in the image file.
#[derive(Debug)]
pub struct L2Cache {
    /// Offset → (table, last use).
    tables: HashMap<u64, (Vec<u64>, u64)>,
    /// How many tables fit.
    capacity: usize,
    /// Entries per table.
    entries: usize,
    /// A counter for "last use".
    clock: u64,
}

impl L2Cache {
    /// An empty cache for tables of `entries` entries.
    pub fn new(entries: usize) -> Self {
        Self {
            tables: HashMap::new(),
            capacity: (BUDGET / (entries * 8).max(1)).max(4),
            entries,
            clock: 0,
        }
    }

    /// The table at `offset`, read from `file` unless cached. (Beyond the
    /// end of the file a table reads as zeroes, as QEMU reads it.)
    pub fn get(&mut self, file: &File, offset: u64) -> io::Result<&mut [u64]> {
        self.clock += 1;
        let now = self.clock;
        if !self.tables.contains_key(&offset) {
            let mut bytes = vec![0u8; self.entries * 8];
            read_at_or_zero(file, &mut bytes, offset)?;
            let table = super::be_u64s(&bytes);
            self.insert(offset, table);
        }
        match self.tables.get_mut(&offset) {
            Some((table, used)) => {
                *used = now;
                Ok(table)
            }
            None => Err(io::Error::other("an L2 table vanished from the cache")),
        }
    }

    /// Caches `table` (just written) at `offset`.
    pub fn insert(&mut self, offset: u64, table: Vec<u64>) {
        if self.tables.len() >= self.capacity && !self.tables.contains_key(&offset) {
            let oldest = self
                .tables
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(&at, _)| at);
            if let Some(at) = oldest {
                self.tables.remove(&at);
            }
        }
        self.clock += 1;
        self.tables.insert(offset, (table, self.clock));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn reads_tables_and_evicts_the_least_recently_used() {
        let f = tempfile::tempfile().unwrap();
        // Tables of 2^16 entries (512 KiB): eight fit the budget.
        let entries = 1 << 16;
        for t in 0..10u64 {
            f.write_all_at(&(t + 1).to_be_bytes(), t * 8 * entries)
                .unwrap();
        }
        let mut cache = L2Cache::new(entries as usize);
        assert_eq!(cache.capacity, 8);
        for t in 0..10u64 {
            assert_eq!(cache.get(&f, t * 8 * entries).unwrap()[0], t + 1);
            // Table 0 stays in use.
            cache.get(&f, 0).unwrap();
        }
        assert_eq!(cache.tables.len(), 8);
        assert!(cache.tables.contains_key(&0));
        // The two oldest after table 0 went.
        assert!(!cache.tables.contains_key(&(8 * entries)));
        assert!(!cache.tables.contains_key(&(2 * 8 * entries)));
        assert!(cache.tables.contains_key(&(9 * 8 * entries)));
        // Past the end of the file: zeroes.
        assert!(cache.get(&f, 1 << 30).unwrap().iter().all(|&e| e == 0));
    }
}
