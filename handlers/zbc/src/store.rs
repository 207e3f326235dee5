//! Opening the backing file: what it holds, whether the cfgstring may use
//! it as it is, may reformat it, or must be refused — and formatting.
//!
//! All of this runs once, when the device opens, with plain synchronous
//! system calls on the worker thread (a few reads, and at worst a
//! `ftruncate` and one write of the metadata).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use rustix::fs::SeekFrom;
use tcmu_runtime::HandlerError;

use crate::config::ZbcOptions;
use crate::geometry::Geometry;
use crate::meta::{self, Header, ZoneRecord};

/// What a backing file holds.
#[derive(Debug)]
pub enum Found {
    /// Nothing: a new, empty or all-holes file.
    Nothing,
    /// A zoned disk, checked.
    Disk {
        /// Its header.
        header: Header,
        /// Its zone records, one per zone.
        records: Vec<ZoneRecord>,
    },
}

/// What to do with the file.
#[derive(Debug)]
pub enum Plan {
    /// Serve it as it is.
    Use(Geometry, Vec<ZoneRecord>),
    /// Serve it after rewriting its header (a new number of open zones, or
    /// tcmu-runner's version 0 brought to the current version); the string
    /// says what changed, for the log.
    RewriteHeader(Geometry, Vec<ZoneRecord>, String),
    /// Format it with this layout; the string says why, for the log.
    Format(Geometry, String),
}

fn refused(path: &Path, why: impl std::fmt::Display) -> HandlerError {
    HandlerError::refused(format!("zbc handler: {}: {why}", path.display()))
}

fn io_error(path: &Path, what: &str, e: io::Error) -> HandlerError {
    HandlerError::io(format!("zbc handler: cannot {what} {}", path.display()), e)
}

/// Whether `file` has data (not holes) in bytes `from..to`. A file system
/// without `SEEK_DATA` reports everything as data.
pub fn has_data(file: &File, from: u64, to: u64) -> io::Result<bool> {
    if from >= to {
        return Ok(false);
    }
    match rustix::fs::seek(file, SeekFrom::Data(from)) {
        Ok(at) => Ok(at < to),
        Err(rustix::io::Errno::NXIO) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Reads and checks what `file` (of `len` bytes) holds. A file without
/// the zbc magic number that holds data, and a zoned disk whose metadata
/// does not hold together, are refused with the reason: neither is ever
/// formatted over.
pub fn inspect(path: &Path, file: &File, len: u64) -> Result<Found, HandlerError> {
    if len == 0 {
        return Ok(Found::Nothing);
    }
    let mut head = [0u8; meta::HEADER_LEN];
    let got = read_at_most(file, &mut head, 0).map_err(|e| io_error(path, "read", e))?;
    if !Header::has_magic(&head[..got]) {
        let data = has_data(file, 0, len).map_err(|e| io_error(path, "look into", e))?;
        if data {
            return Err(refused(
                path,
                "holds data but no zbc metadata: not formatting over it (remove it, or name another file)",
            ));
        }
        return Ok(Found::Nothing);
    }
    let header = Header::decode(&head[..got])
        .map_err(|why| refused(path, format!("damaged zbc metadata: {why}")))?;
    let g = &header.geometry;
    let expected = meta::meta_size(g.nr_zones) + g.size_bytes();
    if len != expected {
        return Err(refused(
            path,
            format!(
                "damaged zbc metadata: the file is {len} bytes, its metadata describes {expected} ({g}, {} blocks)",
                g.capacity
            ),
        ));
    }
    let mut table = vec![0u8; meta::ZONE_LEN * g.nr_zones as usize];
    file.read_exact_at(&mut table, meta::zone_offset(0))
        .map_err(|e| io_error(path, "read the zone table of", e))?;
    let records = table
        .chunks(meta::ZONE_LEN)
        .zip(0..g.nr_zones)
        .map(|(b, i)| ZoneRecord::decode(b, g, i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|why| refused(path, format!("damaged zbc metadata: {why}")))?;
    Ok(Found::Disk { header, records })
}

/// Reads up to `buf.len()` bytes at `at`; returns how many.
fn read_at_most(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], at + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Decides what to do with what the file holds, given the cfgstring's
/// options and the device size: use it if it is what they ask for;
/// change only the open zone limit in place; reformat it if it holds no
/// data; refuse otherwise, saying what differs and what holds data.
pub fn plan(
    path: &Path,
    file: &File,
    found: Found,
    options: &ZbcOptions,
    dev_size: u64,
) -> Result<Plan, HandlerError> {
    let (header, records) = match found {
        Found::Nothing => {
            let g = Geometry::from_options(options, dev_size).map_err(|why| refused(path, why))?;
            return Ok(Plan::Format(g, "a new backing file".into()));
        }
        Found::Disk { header, records } => (header, records),
    };
    let have = header.geometry;
    let want = have
        .with_options(options, dev_size)
        .map_err(|why| refused(path, why))?;
    if want == have && header.version == meta::VERSION {
        return Ok(Plan::Use(have, records));
    }
    if want == have {
        return Ok(Plan::RewriteHeader(
            want,
            records,
            format!(
                "metadata version {} (tcmu-runner's) brought to version {}, which tcmu-runner still reads",
                header.version,
                meta::VERSION
            ),
        ));
    }
    if want.same_but_open(&have) {
        let why = format!(
            "open-{} (the file had open-{}): changed in place",
            want.max_open, have.max_open
        );
        return Ok(Plan::RewriteHeader(want, records, why));
    }
    let differences = want.differences(&have).join(", ");
    let written = records.iter().filter(|r| r.has_data()).count();
    let data_off = meta::meta_size(have.nr_zones);
    let conv_end = data_off + have.zone_start(have.nr_conv) * u64::from(have.lba_size);
    let conv_data =
        has_data(file, data_off, conv_end).map_err(|e| io_error(path, "look into", e))?;
    if written == 0 && !conv_data {
        return Ok(Plan::Format(
            want,
            format!("it held no data; asked for {differences}"),
        ));
    }
    let mut holds = Vec::new();
    if written > 0 {
        holds.push(format!(
            "{written} of {} sequential zones written",
            have.seq_zones()
        ));
    }
    if conv_data {
        holds.push("data in conventional zones".to_owned());
    }
    Err(refused(
        path,
        format!(
            "holds a zoned disk ({have}, {} bytes) with data ({}); the device asks for {differences}: \
             not reformatting it. Use the options it was made with (or none), or remove the file to start afresh",
            have.size_bytes(),
            holds.join(", "),
        ),
    ))
}

/// Formats `file` as a new disk laid out as `g`: its old content dropped
/// (a sparse file of the right size), a header and a zone table of EMPTY
/// zones, made durable. Returns the zone records.
pub fn format(path: &Path, file: &File, g: &Geometry) -> Result<Vec<ZoneRecord>, HandlerError> {
    let data_off = meta::meta_size(g.nr_zones);
    file.set_len(0)
        .and_then(|()| file.set_len(data_off + g.size_bytes()))
        .map_err(|e| io_error(path, "size", e))?;
    let records: Vec<ZoneRecord> = (0..g.nr_zones).map(|i| ZoneRecord::fresh(g, i)).collect();
    let mut bytes = Vec::with_capacity(meta::HEADER_LEN + meta::ZONE_LEN * records.len());
    bytes.extend_from_slice(&Header::new(g.clone()).encode());
    for r in &records {
        bytes.extend_from_slice(&r.encode());
    }
    file.write_all_at(&bytes, 0)
        .map_err(|e| io_error(path, "write the metadata of", e))?;
    file.sync_data().map_err(|e| io_error(path, "sync", e))?;
    Ok(records)
}

/// Rewrites the header (the current version, `g`'s layout).
pub fn write_header(path: &Path, file: &File, g: &Geometry) -> Result<(), HandlerError> {
    file.write_all_at(&Header::new(g.clone()).encode(), 0)
        .and_then(|()| file.sync_data())
        .map_err(|e| io_error(path, "write the header of", e))
}
