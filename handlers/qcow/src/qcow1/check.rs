//! A consistency check of a qcow version 1 image, standing in for
//! `qemu-img check`, which does not support the format ("This image format
//! does not support checks").
//!
//! Every L2 table, stored cluster and compressed stream the L1 and L2
//! tables reference must lie inside the file, and no two of them, nor the
//! header, the backing file name or the L1 table, may overlap. Space no
//! one references (left by a process killed mid-allocation) is not an
//! error; [`CheckReport::referenced`] says how much is referenced.

use std::fs::File;
use std::io;
use std::path::Path;

use super::entry::Cluster;
use super::header::{Header, HEADER_LEN};
use super::read_at_or_zero;

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// The L2 tables referenced.
    pub l2_tables: u64,
    /// The stored (uncompressed) clusters referenced.
    pub data_clusters: u64,
    /// The compressed clusters referenced.
    pub compressed_clusters: u64,
    /// Bytes of the file referenced by any structure.
    pub referenced: u64,
    /// The problems found, one sentence each (empty: consistent).
    pub problems: Vec<String>,
}

/// A referenced byte range of the file, and what it is.
struct Extent {
    start: u64,
    end: u64,
    what: String,
}

/// Checks the image at `path` (read-only; its backing file is not read).
pub fn check(path: &Path) -> io::Result<CheckReport> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut bytes = [0u8; HEADER_LEN];
    read_at_or_zero(&file, &mut bytes, 0)?;
    let header = Header::parse(&bytes[..(file_len.min(HEADER_LEN as u64) as usize)])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let cluster_size = header.cluster_size();
    let l2_bytes = header.l2_entries() * 8;
    let mut report = CheckReport::default();
    let mut extents = vec![Extent {
        start: 0,
        end: HEADER_LEN as u64,
        what: "the header".into(),
    }];
    if header.has_backing_file() {
        extents.push(Extent {
            start: header.backing_file_offset,
            end: header.backing_file_offset + u64::from(header.backing_file_size),
            what: "the backing file name".into(),
        });
    }
    let l1_start = header.l1_table_offset;
    extents.push(Extent {
        start: l1_start,
        end: l1_start + header.l1_entries * 8,
        what: "the L1 table".into(),
    });
    let mut raw = vec![0u8; (header.l1_entries * 8) as usize];
    read_at_or_zero(&file, &mut raw, l1_start)?;
    for (l1, table) in super::be_u64s(&raw).into_iter().enumerate() {
        if table == 0 {
            continue;
        }
        report.l2_tables += 1;
        extents.push(Extent {
            start: table,
            end: table.saturating_add(l2_bytes),
            what: format!("L2 table {l1}"),
        });
        if table % 8 != 0 || table.saturating_add(l2_bytes) > file_len {
            report.problems.push(format!(
                "L2 table {l1} at {table:#x} is misaligned or past the end of the file"
            ));
            continue;
        }
        let mut raw = vec![0u8; l2_bytes as usize];
        read_at_or_zero(&file, &mut raw, table)?;
        for (l2, entry) in super::be_u64s(&raw).into_iter().enumerate() {
            let what = format!("cluster {l1}/{l2}");
            let (start, len) = match Cluster::decode(entry, header.cluster_bits) {
                Cluster::Unallocated => continue,
                Cluster::Data(host) => {
                    report.data_clusters += 1;
                    if host % cluster_size != 0 {
                        report
                            .problems
                            .push(format!("{what} at {host:#x} is not cluster-aligned"));
                    }
                    (host, cluster_size)
                }
                Cluster::Compressed { offset, len } => {
                    report.compressed_clusters += 1;
                    (offset, len as u64)
                }
            };
            let end = start.saturating_add(len);
            if end > file_len {
                report.problems.push(format!(
                    "{what} ({len} bytes at {start:#x}) ends past the end of the file ({file_len} bytes)"
                ));
            }
            extents.push(Extent { start, end, what });
        }
    }
    extents.sort_by_key(|e| (e.start, e.end));
    // Sorted by start: an extent overlaps another exactly when it starts
    // before the furthest end seen so far.
    let mut furthest: Option<&Extent> = None;
    for e in &extents {
        if let Some(f) = furthest {
            if e.start < f.end {
                report.problems.push(format!(
                    "{} ({:#x}..{:#x}) overlaps {} ({:#x}..{:#x})",
                    f.what, f.start, f.end, e.what, e.start, e.end
                ));
            }
        }
        if furthest.is_none_or(|f| e.end > f.end) {
            furthest = Some(e);
        }
    }
    report.referenced = extents.iter().map(|e| e.end - e.start).sum();
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::os::unix::fs::FileExt;

    /// A 1 MiB image of 4 KiB clusters, 512-entry L2 tables (one L1
    /// entry), its L2 table at 4 KiB.
    fn image() -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut h = vec![0u8; 56];
        h[..8].copy_from_slice(b"QFI\xfb\0\0\0\x01");
        h[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes());
        h[32] = 12;
        h[33] = 9;
        h[40..48].copy_from_slice(&48u64.to_be_bytes());
        h[48..56].copy_from_slice(&4096u64.to_be_bytes());
        f.as_file().write_all_at(&h, 0).unwrap();
        f.as_file().write_all_at(&[0u8; 4096], 4096).unwrap();
        f
    }

    #[test]
    fn finds_clusters_that_overlap_or_lie_outside_the_file() {
        let f = image();
        let set = |l2: u64, entry: u64| {
            f.as_file()
                .write_all_at(&entry.to_be_bytes(), 4096 + 8 * l2)
                .unwrap()
        };
        assert_eq!(check(f.path()).unwrap().problems, Vec::<String>::new());
        // A stored cluster right after the table: consistent.
        f.as_file().write_all_at(&[1u8; 4096], 8192).unwrap();
        set(0, 8192);
        let r = check(f.path()).unwrap();
        assert_eq!((r.l2_tables, r.data_clusters), (1, 1));
        assert!(r.problems.is_empty(), "{r:?}");
        // A second cluster on top of the L2 table, a third past the end.
        set(1, 4096);
        set(2, 1 << 30);
        let problems = check(f.path()).unwrap().problems;
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("ends past the end of the file"));
        assert!(problems[1].contains("overlaps"));
    }
}
