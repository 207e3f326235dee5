//! Out-of-process handlers: subtypes another process serves, registered
//! over D-Bus with `RegisterHandler`. The D-Bus service fills this set;
//! the control loop reads it to leave those subtypes' devices to their
//! owner (no attach, no netlink reply: the owner replies).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// One registered out-of-process handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    /// Its `ConfigDesc`, as given to `RegisterHandler`.
    pub cfg_desc: String,
    /// The unique bus name owning
    /// `org.kernel.TCMUService1.HandlerManager1.<subtype>`.
    pub owner: String,
}

/// Registered out-of-process handlers by subtype; cloning shares the set.
#[derive(Debug, Clone, Default)]
pub struct ExternalHandlers {
    inner: Arc<RwLock<BTreeMap<String, External>>>,
}

impl ExternalHandlers {
    /// Whether `subtype` is served by another process.
    pub fn contains(&self, subtype: &str) -> bool {
        self.inner
            .read()
            .map(|m| m.contains_key(subtype))
            .unwrap_or(false)
    }

    /// Registers (or re-registers) `subtype`.
    pub fn insert(&self, subtype: &str, external: External) {
        if let Ok(mut m) = self.inner.write() {
            m.insert(subtype.to_owned(), external);
        }
    }

    /// Drops `subtype` if `owner` still owns it; returns whether it did.
    pub fn remove_if_owner(&self, subtype: &str, owner: &str) -> bool {
        let Ok(mut m) = self.inner.write() else {
            return false;
        };
        if m.get(subtype).is_some_and(|e| e.owner == owner) {
            m.remove(subtype);
            true
        } else {
            false
        }
    }

    /// Drops `subtype` whoever owns it; returns whether it was registered.
    pub fn remove(&self, subtype: &str) -> bool {
        self.inner
            .write()
            .map(|mut m| m.remove(subtype).is_some())
            .unwrap_or(false)
    }

    /// Every registration, ordered by subtype.
    pub fn list(&self) -> Vec<(String, External)> {
        self.inner
            .read()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_and_drop_by_owner() {
        let set = ExternalHandlers::default();
        let ext = |owner: &str| External {
            cfg_desc: "desc".into(),
            owner: owner.into(),
        };
        set.insert("glfs", ext(":1.5"));
        assert!(set.contains("glfs"));
        assert!(!set.contains("file"));
        set.insert("glfs", ext(":1.7"));
        assert!(!set.remove_if_owner("glfs", ":1.5"), "an old owner leaving");
        assert_eq!(set.list(), vec![("glfs".to_owned(), ext(":1.7"))]);
        assert!(set.remove_if_owner("glfs", ":1.7"));
        assert!(set.list().is_empty());
        set.insert("x", ext(":1.9"));
        assert!(set.remove("x"));
        assert!(!set.remove("x"));
    }
}
