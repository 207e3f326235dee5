//! [`Qcow1`]: a qcow version 1 image (`qemu-img create -f qcow`), which
//! imago does not read.
//!
//! The format: a [header], an L1 table of big-endian u64 offsets of
//! L2 tables, L2 tables of u64 [entries](entry) mapping one cluster each
//! (unallocated, stored, or [compressed]). A backing file
//! (qcow, qcow2 or raw, probed by its magic; a relative name is relative
//! to the image's folder) supplies the unallocated clusters; without one
//! they read as zeroes. Encrypted images are refused.
//!
//! Writes allocate at the end of the file, cluster-aligned: a cluster
//! written for the first time (or a compressed one, which is inflated and
//! stored anew) is written whole (a partial write is completed with the
//! backing file's bytes), then its L2 entry, then, for a new L2 table,
//! the L1 entry: the file is consistent after every step, and a process
//! killed between two steps leaves at most an unreferenced cluster or
//! table. Metadata is written through (only a read cache of L2 tables is
//! kept), so [`Qcow1::flush`] is an `fdatasync`.
//!
//! Everything here is synchronous file I/O (`pread`/`pwrite`): the handler
//! runs it on the worker's blocking threads, as it runs imago. Reads and
//! writes to allocated clusters run concurrently; the metadata (L1 table,
//! L2 cache, end of file) sits behind one mutex, held while a cluster is
//! allocated so two writers never allocate the same cluster twice. Stored
//! clusters never move (only unallocated and compressed clusters get a new
//! place), so a mapping looked up outside the lock stays valid.

pub mod cache;
pub mod check;
pub mod compressed;
pub mod entry;
pub mod header;

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::backing::Backing;
use cache::L2Cache;
use entry::Cluster;
use header::{Header, HEADER_LEN};

/// Reads `buf.len()` bytes at `offset`, zeroes past the end of the file.
pub(crate) fn read_at_or_zero(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf[done..].fill(0);
    Ok(())
}

/// The big-endian u64 entries of an L1 or L2 table read from the file.
pub(crate) fn be_u64s(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|b| {
            let mut e = [0u8; 8];
            e.copy_from_slice(b);
            u64::from_be_bytes(e)
        })
        .collect()
}

/// An error about the image's contents.
fn invalid(why: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

/// The metadata writers change, behind the image's mutex.
#[derive(Debug)]
struct Meta {
    /// The L1 table: L2 table offsets (0: none yet).
    l1: Vec<u64>,
    /// Recently used L2 tables.
    l2: L2Cache,
    /// The end of the file: new clusters and tables go at or after it.
    end: u64,
}

impl Meta {
    /// Reserves `len` bytes at the first cluster boundary at or after the
    /// end of the file.
    fn allocate(&mut self, len: u64, cluster_size: u64) -> io::Result<u64> {
        let at = self
            .end
            .checked_next_multiple_of(cluster_size)
            .and_then(|at| at.checked_add(len).map(|end| (at, end)));
        match at {
            Some((at, end)) => {
                self.end = end;
                Ok(at)
            }
            None => Err(io::Error::other("the image file cannot grow further")),
        }
    }
}

/// A stretch of a request that maps the same way: unallocated clusters
/// in a row, stored clusters contiguous in the file, or part of one
/// compressed cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    /// Where it starts in the request's buffer.
    at: usize,
    /// Its guest offset.
    guest: u64,
    /// Its length.
    len: usize,
    /// Where its first byte is in its (first) cluster.
    in_cluster: usize,
    /// Its mapping; a stored run's offset is that of its first byte.
    cluster: Cluster,
}

/// Splits the request (`len` bytes at `offset`, over `clusters`, one per
/// cluster touched) into runs.
fn runs(offset: u64, len: usize, cluster_size: u64, clusters: &[Cluster]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    let mut at = 0usize;
    for &cluster in clusters {
        if at >= len {
            break;
        }
        let guest = offset + at as u64;
        let in_cluster = guest % cluster_size;
        // At most one cluster (64 KiB): fits usize.
        let n = (cluster_size - in_cluster).min((len - at) as u64) as usize;
        let cluster = match cluster {
            Cluster::Data(host) => Cluster::Data(host + in_cluster),
            other => other,
        };
        if let Some(last) = out.last_mut() {
            let merges = match (last.cluster, cluster) {
                (Cluster::Unallocated, Cluster::Unallocated) => true,
                (Cluster::Data(a), Cluster::Data(b)) => a + last.len as u64 == b,
                _ => false,
            };
            if merges {
                last.len += n;
                at += n;
                continue;
            }
        }
        out.push(Run {
            at,
            guest,
            len: n,
            in_cluster: in_cluster as usize,
            cluster,
        });
        at += n;
    }
    out
}

/// A qcow version 1 image, open for reading (and writing, if asked).
pub struct Qcow1 {
    /// The image file's path (for messages).
    path: PathBuf,
    /// The image file.
    file: File,
    /// Its header.
    header: Header,
    /// Whether writes are allowed (backing images are read-only).
    writable: bool,
    /// Where unallocated clusters come from.
    backing: Option<Backing>,
    /// L1 table, L2 cache, end of file.
    meta: Mutex<Meta>,
}

impl std::fmt::Debug for Qcow1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow1")
            .field("path", &self.path)
            .field("header", &self.header)
            .field("writable", &self.writable)
            .field("backing", &self.backing)
            .finish()
    }
}

impl Qcow1 {
    /// Opens the image at `path` (read-write if `writable`), and its
    /// backing chain read-only.
    pub fn open(path: &Path, writable: bool) -> io::Result<Self> {
        Self::open_in_chain(path, writable, 0)
    }

    /// Opens the image at `path`, `depth` images down a backing chain.
    pub(crate) fn open_in_chain(path: &Path, writable: bool, depth: usize) -> io::Result<Self> {
        let file = File::options().read(true).write(writable).open(path)?;
        let file_len = file.metadata()?.len();
        let mut bytes = [0u8; HEADER_LEN];
        let got = (file_len.min(HEADER_LEN as u64)) as usize;
        read_at_or_zero(&file, &mut bytes[..got], 0)?;
        let header = Header::parse(&bytes[..got]).map_err(invalid)?;
        let l1_bytes = header.l1_entries * 8;
        if header.l1_table_offset + l1_bytes > file_len {
            return Err(invalid(format_args!(
                "the L1 table ({l1_bytes} bytes at {:#x}) ends past the end of the file ({file_len} bytes)",
                header.l1_table_offset
            )));
        }
        let mut raw = vec![0u8; l1_bytes as usize];
        file.read_exact_at(&mut raw, header.l1_table_offset)?;
        let l1 = be_u64s(&raw);
        let backing = if header.has_backing_file() {
            let mut name = vec![0u8; header.backing_file_size as usize];
            file.read_exact_at(&mut name, header.backing_file_offset)
                .map_err(|e| invalid(format_args!("cannot read the backing file name: {e}")))?;
            let name = Path::new(OsStr::from_bytes(&name));
            let resolved = match path.parent() {
                Some(dir) if name.is_relative() => dir.join(name),
                _ => name.to_owned(),
            };
            let backing = Backing::open(&resolved, depth + 1).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open its backing file {}: {e}", resolved.display()),
                )
            })?;
            Some(backing)
        } else {
            None
        };
        Ok(Self {
            path: path.to_owned(),
            file,
            writable,
            backing,
            meta: Mutex::new(Meta {
                l1,
                l2: L2Cache::new(header.l2_entries() as usize),
                end: file_len,
            }),
            header,
        })
    }

    /// The virtual size in bytes.
    pub fn size(&self) -> u64 {
        self.header.size
    }

    /// The cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        self.header.cluster_size()
    }

    /// The backing file, if any.
    pub fn backing(&self) -> Option<&Backing> {
        self.backing.as_ref()
    }

    /// The image file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads `buf.len()` bytes at guest offset `offset`.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.check_range(offset, buf.len())?;
        let clusters = self.lookup(offset, buf.len())?;
        for run in runs(offset, buf.len(), self.cluster_size(), &clusters) {
            let chunk = &mut buf[run.at..run.at + run.len];
            match run.cluster {
                Cluster::Unallocated => self.read_unallocated(chunk, run.guest)?,
                Cluster::Data(host) => read_at_or_zero(&self.file, chunk, host)?,
                Cluster::Compressed { offset, len } => {
                    let mut cluster = vec![0u8; self.cluster_size() as usize];
                    self.inflate(offset, len, &mut cluster)?;
                    chunk.copy_from_slice(&cluster[run.in_cluster..run.in_cluster + run.len]);
                }
            }
        }
        Ok(())
    }

    /// Writes `buf` at guest offset `offset`, allocating clusters as
    /// needed.
    pub fn write(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is open read-only", self.path.display()),
            ));
        }
        self.check_range(offset, buf.len())?;
        let cluster_size = self.cluster_size();
        let clusters = self.lookup(offset, buf.len())?;
        for run in runs(offset, buf.len(), cluster_size, &clusters) {
            let data = &buf[run.at..run.at + run.len];
            if let Cluster::Data(host) = run.cluster {
                self.file.write_all_at(data, host)?;
                continue;
            }
            let mut done = 0;
            while done < run.len {
                let guest = run.guest + done as u64;
                let in_cluster = guest % cluster_size;
                let n = (cluster_size - in_cluster).min((run.len - done) as u64) as usize;
                self.write_new_cluster(
                    guest - in_cluster,
                    in_cluster as usize,
                    &data[done..done + n],
                )?;
                done += n;
            }
        }
        Ok(())
    }

    /// Makes everything written so far durable: metadata is written
    /// through, so this is an `fdatasync` of the image file.
    pub fn flush(&self) -> io::Result<()> {
        if self.writable {
            self.file.sync_data()?;
        }
        Ok(())
    }

    /// Refuses a request reaching past the virtual size.
    fn check_range(&self, offset: u64, len: usize) -> io::Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{len} bytes at {offset} reach past the virtual size of {} ({} bytes)",
                    self.path.display(),
                    self.size()
                ),
            )),
        }
    }

    /// The metadata, locked.
    fn meta(&self) -> io::Result<MutexGuard<'_, Meta>> {
        self.meta
            .lock()
            .map_err(|_| io::Error::other("the qcow metadata lock was poisoned by a panic"))
    }

    /// The mappings of the clusters `len` bytes at `offset` touch.
    fn lookup(&self, offset: u64, len: usize) -> io::Result<Vec<Cluster>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let first = offset >> self.header.cluster_bits;
        let last = (offset + len as u64 - 1) >> self.header.cluster_bits;
        let mut meta = self.meta()?;
        (first..=last)
            .map(|index| self.cluster(&mut meta, index))
            .collect()
    }

    /// The L1 and L2 indexes of cluster `index`.
    fn indexes(&self, index: u64) -> (usize, usize) {
        let l1 = (index >> self.header.l2_bits) as usize;
        let l2 = (index & (self.header.l2_entries() - 1)) as usize;
        (l1, l2)
    }

    /// The mapping of cluster `index` (of the guest's clusters).
    fn cluster(&self, meta: &mut Meta, index: u64) -> io::Result<Cluster> {
        let (l1, l2) = self.indexes(index);
        let table = match meta.l1.get(l1) {
            Some(0) => return Ok(Cluster::Unallocated),
            Some(&table) => table,
            None => {
                return Err(invalid(format_args!(
                    "{}: cluster {index} is beyond the L1 table",
                    self.path.display()
                )))
            }
        };
        let entry = meta.l2.get(&self.file, table)?[l2];
        Ok(Cluster::decode(entry, self.header.cluster_bits))
    }

    /// Reads unallocated guest bytes: the backing file's, or zeroes.
    fn read_unallocated(&self, buf: &mut [u8], guest: u64) -> io::Result<()> {
        match &self.backing {
            Some(backing) => backing.read(buf, guest),
            None => {
                buf.fill(0);
                Ok(())
            }
        }
    }

    /// Inflates the compressed cluster of `len` bytes at `offset`.
    fn inflate(&self, offset: u64, len: usize, cluster: &mut [u8]) -> io::Result<()> {
        let mut stream = vec![0u8; len];
        self.file.read_exact_at(&mut stream, offset)?;
        compressed::inflate(&stream, cluster).map_err(|e| {
            invalid(format_args!(
                "{}: the compressed cluster at {offset:#x}: {e}",
                self.path.display()
            ))
        })
    }

    /// Writes `data` at `in_cluster` of the guest cluster at `start`,
    /// which was unallocated or compressed when looked up: allocates it
    /// (unless a concurrent write just did), written whole, then links it.
    fn write_new_cluster(&self, start: u64, in_cluster: usize, data: &[u8]) -> io::Result<()> {
        let cluster_size = self.cluster_size();
        let index = start >> self.header.cluster_bits;
        let mut meta = self.meta()?;
        let old = self.cluster(&mut meta, index)?;
        if let Cluster::Data(host) = old {
            // Allocated meanwhile by another command.
            return self.file.write_all_at(data, host + in_cluster as u64);
        }
        let content: Cow<'_, [u8]> = if data.len() as u64 == cluster_size {
            Cow::Borrowed(data)
        } else {
            let mut whole = vec![0u8; cluster_size as usize];
            if let Cluster::Compressed { offset, len } = old {
                self.inflate(offset, len, &mut whole)?;
            } else {
                let valid = (self.size() - start).min(cluster_size) as usize;
                self.read_unallocated(&mut whole[..valid], start)?;
            }
            whole[in_cluster..in_cluster + data.len()].copy_from_slice(data);
            Cow::Owned(whole)
        };
        let host = meta.allocate(cluster_size, cluster_size)?;
        self.file.write_all_at(&content, host)?;
        self.link(&mut meta, index, host)
    }

    /// Points cluster `index`'s L2 entry at `host` (the cluster's data is
    /// in place), making a new L2 table if there is none yet.
    fn link(&self, meta: &mut Meta, index: u64, host: u64) -> io::Result<()> {
        let (l1, l2) = self.indexes(index);
        let table = meta.l1.get(l1).copied().unwrap_or(0);
        if table != 0 {
            self.file
                .write_all_at(&host.to_be_bytes(), table + 8 * l2 as u64)?;
            meta.l2.get(&self.file, table)?[l2] = host;
            return Ok(());
        }
        let entries = self.header.l2_entries() as usize;
        let mut new = vec![0u64; entries];
        new[l2] = host;
        let bytes: Vec<u8> = new.iter().flat_map(|e| e.to_be_bytes()).collect();
        let at = meta.allocate(bytes.len() as u64, self.cluster_size())?;
        self.file.write_all_at(&bytes, at)?;
        self.file.write_all_at(
            &at.to_be_bytes(),
            self.header.l1_table_offset + 8 * l1 as u64,
        )?;
        if let Some(slot) = meta.l1.get_mut(l1) {
            *slot = at;
        }
        meta.l2.insert(at, new);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_what_maps_alike() {
        use Cluster::*;
        let cs = 4096;
        // 3 clusters from mid-cluster: two stored back to back, then an
        // unallocated one, then a compressed one.
        let clusters = [
            Data(0x10000),
            Data(0x11000),
            Unallocated,
            Compressed {
                offset: 0x2200,
                len: 38,
            },
        ];
        let got = runs(4096 + 100, 3 * 4096, cs, &clusters);
        assert_eq!(
            got,
            vec![
                Run {
                    at: 0,
                    guest: 4196,
                    len: 8092,
                    in_cluster: 100,
                    cluster: Data(0x10064)
                },
                Run {
                    at: 8092,
                    guest: 12288,
                    len: 4096,
                    in_cluster: 0,
                    cluster: Unallocated
                },
                Run {
                    at: 12188,
                    guest: 16384,
                    len: 100,
                    in_cluster: 0,
                    cluster: Compressed {
                        offset: 0x2200,
                        len: 38
                    }
                },
            ]
        );
        // Stored clusters apart in the file stay apart.
        let got = runs(0, 8192, cs, &[Data(0x10000), Data(0x30000)]);
        assert_eq!(got.len(), 2);
        assert_eq!(runs(0, 0, cs, &[]), vec![]);
    }
}
