//! Compressed clusters: raw deflate streams (no zlib header), each
//! inflating to exactly one cluster.

use std::io;

use miniz_oxide::inflate::core::inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
use miniz_oxide::inflate::core::{decompress, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

/// Inflates `stream` into `cluster`, which it must fill exactly. Output
/// that would go beyond the cluster is an error too, except that (as QEMU
/// does) a stream whose end marker lies past a full cluster is accepted.
pub fn inflate(stream: &[u8], cluster: &mut [u8]) -> io::Result<()> {
    let mut state = DecompressorOxide::new();
    let (status, _, written) = decompress(
        &mut state,
        stream,
        cluster,
        0,
        TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
    );
    match status {
        TINFLStatus::Done | TINFLStatus::HasMoreOutput if written == cluster.len() => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "a compressed cluster does not inflate to {} bytes ({status:?} after {written})",
                cluster.len()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn inflates_a_raw_deflate_stream_to_one_cluster() {
        let data: Vec<u8> = (0..4096u32).map(|i| (i / 64) as u8).collect();
        let stream = miniz_oxide::deflate::compress_to_vec(&data, 6);
        let mut out = vec![0u8; 4096];
        inflate(&stream, &mut out).unwrap();
        assert_eq!(out, data);
        // Too short a stream, or garbage: an error, not a panic.
        let mut big = vec![0u8; 8192];
        assert!(inflate(&stream, &mut big).is_err());
        assert!(inflate(&[0xff; 16], &mut out).is_err());
        assert!(inflate(&[], &mut out).is_err());
    }
}
