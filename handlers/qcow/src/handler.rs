//! [`QcowHandler`]: one device served from a qcow2 image.
//!
//! Each command goes through a bounce buffer: [`imago`] resolves guest
//! offsets to clusters (allocating on write, reading through to backing
//! images, inflating compressed clusters) and reads or writes that buffer,
//! which is then copied to or from the ring. Image I/O is synchronous
//! inside imago's file storage, so a command occupies its worker thread
//! while the image file is read or written, as the `file` handler's inline
//! copies do for files in memory.

use std::io;
use std::path::PathBuf;

use async_trait::async_trait;
use imago::file::File;
use imago::qcow2::Qcow2;
use imago::{FormatAccess, FormatDriverBuilder, PermissiveImplicitOpenGate};
use tcmu_core::buf::{gather, scatter, total_len};
use tcmu_core::DataBuf;
use tcmu_runtime::{BlockError, BlockHandler, DeviceConfig, ReconfigRequest};

use crate::config::QcowConfig;

/// A [`BlockHandler`] over a qcow2 image.
pub struct QcowHandler {
    /// The device's name (for log lines).
    name: String,
    /// The image file.
    path: PathBuf,
    /// The image, with its metadata caches.
    image: FormatAccess<File>,
}

impl std::fmt::Debug for QcowHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QcowHandler")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("virtual_size", &self.image.size())
            .finish()
    }
}

impl QcowHandler {
    /// Opens the image named by `config`'s cfgstring for reading and
    /// writing (backing images read-only). Refuses a device larger than the
    /// image's virtual size.
    pub async fn open(config: &DeviceConfig) -> Result<Self, String> {
        let checked = QcowConfig::check(&config.cfgstring).map_err(|e| e.to_string())?;
        let path = checked.path;
        let image = Qcow2::<File>::builder_path(&path)
            .write(true)
            .open(PermissiveImplicitOpenGate::default())
            .await
            .map_err(|e| format!("qcow handler: cannot open {}: {e}", path.display()))?;
        let image = FormatAccess::new(image);
        let virtual_size = image.size();
        if config.size > virtual_size {
            return Err(format!(
                "qcow handler: device {} ({} bytes) is larger than the virtual size of {} ({virtual_size} bytes)",
                config.name,
                config.size,
                path.display()
            ));
        }
        tracing::info!(
            device = %config.name,
            image = %path.display(),
            version = checked.version,
            virtual_size,
            "qcow handler: image opened"
        );
        Ok(Self {
            name: config.name.clone(),
            path,
            image,
        })
    }

    /// Writes imago's cached metadata (L2 tables, refcount blocks) to the
    /// image, then makes the image file durable (`fsync`).
    async fn write_out(&self) -> io::Result<()> {
        self.image.flush().await?;
        self.image.sync().await
    }

    /// The image's virtual size in bytes.
    pub fn virtual_size(&self) -> u64 {
        self.image.size()
    }
}

/// The error of an image operation, with the image named in the log.
fn image_error(name: &str, what: &str, offset: u64, e: io::Error) -> BlockError {
    tracing::error!(device = %name, offset, "qcow handler: {what} failed: {e}");
    BlockError::Io(e)
}

#[async_trait(?Send)]
impl BlockHandler for QcowHandler {
    async fn read(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let mut bounce = vec![0u8; total_len(&bufs)];
        self.image
            .read(&mut bounce[..], offset)
            .await
            .map_err(|e| image_error(&self.name, "read", offset, e))?;
        scatter(&bufs, &bounce);
        Ok(())
    }

    async fn write(&self, offset: u64, bufs: Vec<DataBuf>) -> Result<(), BlockError> {
        let bounce = gather(&bufs, usize::MAX);
        self.image
            .write(&bounce[..], offset)
            .await
            .map_err(|e| image_error(&self.name, "write", offset, e))
    }

    async fn flush(&self) -> Result<(), BlockError> {
        self.write_out()
            .await
            .map_err(|e| image_error(&self.name, "flush", 0, e))
    }

    fn sees_commands(&self) -> bool {
        false
    }

    fn has_write_cache(&self) -> bool {
        true
    }

    async fn reconfig(&self, change: &ReconfigRequest) -> Result<(), String> {
        match change {
            ReconfigRequest::Size(size) if *size > self.image.size() => Err(format!(
                "qcow handler: {size} bytes is larger than the virtual size of {} ({} bytes); \
                 grow the image first (qemu-img resize)",
                self.path.display(),
                self.image.size()
            )),
            ReconfigRequest::Config(cfg)
                if QcowConfig::check(cfg).map(|c| c.path).ok().as_ref() != Some(&self.path) =>
            {
                Err("qcow handler: the image of a running device cannot be changed".into())
            }
            _ => Ok(()),
        }
    }

    async fn close(&self) {
        if let Err(e) = self.write_out().await {
            tracing::error!(device = %self.name, image = %self.path.display(), "qcow handler: cannot write the image's metadata out on close: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::path::Path;
    use std::process::Command;

    const MIB: u64 = 1 << 20;

    /// Runs qemu-img (from qemu-utils, which the project's set-up installs).
    fn qemu_img(args: &[&str]) -> String {
        let out = Command::new("qemu-img")
            .args(args)
            .output()
            .expect("qemu-img must be installed (Debian's qemu-utils)");
        assert!(
            out.status.success(),
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn config(path: &Path, size: u64) -> DeviceConfig {
        DeviceConfig {
            name: "q0".into(),
            cfgstring: path.to_str().unwrap().into(),
            size,
            block_size: 512,
            write_cache: true,
        }
    }

    fn scratch_with(bytes: &[u8]) -> DataBuf {
        let buf = DataBuf::scratch(bytes.len()).unwrap();
        buf.copy_from(0, bytes);
        buf
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn writes_read_back_and_leave_a_consistent_image() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "16M"]);
        block_on(async {
            let h = QcowHandler::open(&config(&img, 16 * MIB)).await.unwrap();
            assert_eq!(h.virtual_size(), 16 * MIB);
            let data: Vec<u8> = (0..96 * 1024).map(|i| (i * 7 % 251) as u8).collect();
            // Two ring buffers for one command, the second starting mid-cluster.
            let (a, b) = data.split_at(40 * 1024);
            h.write(3 * MIB + 512, vec![scratch_with(a), scratch_with(b)])
                .await
                .unwrap();
            h.flush().await.unwrap();
            let got = DataBuf::scratch(data.len()).unwrap();
            h.read(3 * MIB + 512, vec![got.alias()]).await.unwrap();
            assert_eq!(got.to_vec(), data);
            // Never written: zeroes.
            let zeros = DataBuf::scratch(4096).unwrap();
            zeros.copy_from(0, &[0xAA; 4096]);
            h.read(9 * MIB, vec![zeros.alias()]).await.unwrap();
            assert!(zeros.to_vec().iter().all(|&b| b == 0));
            h.close().await;
        });
        // qemu-img finds the image consistent and the data where it was written.
        qemu_img(&["check", "-q", img.to_str().unwrap()]);
        let raw = dir.path().join("disk.raw");
        qemu_img(&[
            "convert",
            "-O",
            "raw",
            img.to_str().unwrap(),
            raw.to_str().unwrap(),
        ]);
        let bytes = std::fs::read(&raw).unwrap();
        let at = (3 * MIB + 512) as usize;
        assert_eq!(bytes[at], 0);
        assert_eq!(bytes[at + 1], 7);
        assert_eq!(bytes[at + 96 * 1024 - 1], ((96 * 1024 - 1) * 7 % 251) as u8);
    }

    #[test]
    fn reads_through_to_a_backing_image() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.raw");
        let mut content = vec![0u8; 4 * MIB as usize];
        content[MIB as usize..MIB as usize + 4].copy_from_slice(b"BASE");
        std::fs::write(&base, &content).unwrap();
        let top = dir.path().join("top.qcow2");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            "-F",
            "raw",
            top.to_str().unwrap(),
        ]);
        block_on(async {
            let h = QcowHandler::open(&config(&top, 4 * MIB)).await.unwrap();
            let got = DataBuf::scratch(512).unwrap();
            h.read(MIB, vec![got.alias()]).await.unwrap();
            assert_eq!(&got.to_vec()[..4], b"BASE");
            h.write(MIB, vec![scratch_with(&[b'T'; 512])])
                .await
                .unwrap();
            h.read(MIB, vec![got.alias()]).await.unwrap();
            assert_eq!(&got.to_vec()[..4], b"TTTT");
            h.close().await;
        });
        // The backing file is untouched.
        assert_eq!(&std::fs::read(&base).unwrap()[MIB as usize..][..4], b"BASE");
        qemu_img(&["check", "-q", top.to_str().unwrap()]);
    }

    #[test]
    fn refuses_a_device_larger_than_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("small.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "8M"]);
        let err = block_on(QcowHandler::open(&config(&img, 16 * MIB))).unwrap_err();
        assert!(err.contains("is larger than the virtual size"), "{err}");
        // Smaller is fine: the device sees the image's first bytes.
        block_on(async {
            let h = QcowHandler::open(&config(&img, 4 * MIB)).await.unwrap();
            let e = h
                .reconfig(&ReconfigRequest::Size(32 * MIB))
                .await
                .unwrap_err();
            assert!(e.contains("qemu-img resize"), "{e}");
            h.reconfig(&ReconfigRequest::Size(8 * MIB)).await.unwrap();
            h.close().await;
        });
    }
}
