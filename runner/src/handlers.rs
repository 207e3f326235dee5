//! The handlers compiled into this binary (cargo features).

use tcmu_runtime::Registry;

/// A registry with every compiled-in handler.
pub fn registry() -> Registry {
    #[allow(unused_mut)]
    let mut r = Registry::new();
    #[cfg(feature = "file")]
    r.register(std::sync::Arc::new(tcmu_handler_file::FileFactory));
    #[cfg(feature = "ram")]
    r.register(std::sync::Arc::new(tcmu_handler_ram::RamFactory));
    #[cfg(feature = "qcow")]
    r.register(std::sync::Arc::new(tcmu_handler_qcow::QcowFactory));
    #[cfg(feature = "rbd")]
    r.register(std::sync::Arc::new(tcmu_handler_rbd::RbdFactory::default()));
    #[cfg(feature = "zbc")]
    r.register(std::sync::Arc::new(tcmu_handler_zbc::ZbcFactory));
    #[cfg(feature = "fbo")]
    r.register(std::sync::Arc::new(tcmu_handler_fbo::FboFactory));
    #[cfg(feature = "glfs")]
    r.register(std::sync::Arc::new(tcmu_handler_glfs::GlfsFactory));
    r
}
