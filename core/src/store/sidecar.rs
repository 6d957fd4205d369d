//! Sidecar logs: small immutable records a caller keeps beside its datasets, for a
//! commit point of its own that spans several datasets.
//!
//! A record is created with create-if-absent and synced before `create` returns, so its
//! existence is the commit: a caller writes its data (flushes each dataset, naming the
//! record id it is about to create), then creates the record; on restart, a dataset that
//! names a record that does not exist holds changes that never committed. Records are
//! never rewritten; they are removed only by their owner once nothing names them.

use bytes::Bytes;

use super::{Store, paths};
use crate::error::{Error, Result};

/// One named log of records under a store's root.
#[derive(Clone)]
pub struct Sidecar {
    store: Store,
    log: String,
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn check(what: &str, s: &str) -> Result<()> {
    if name_ok(s) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "sidecar {what} {s:?} is not valid: use 1..=128 letters, digits, '_', '-', '.'"
        )))
    }
}

impl Sidecar {
    pub fn new(store: &Store, log: &str) -> Result<Sidecar> {
        check("log name", log)?;
        Ok(Sidecar {
            store: store.clone(),
            log: log.to_owned(),
        })
    }

    /// Creates record `id`, durably; an existing `id` is a `Conflict`.
    pub async fn create(&self, id: &str, data: impl Into<Bytes>) -> Result<()> {
        check("record id", id)?;
        self.store
            .put_if_absent(&paths::sidecar(&self.log, id), data)
            .await?;
        self.store.sync().await
    }

    /// Record `id`, if it exists.
    pub async fn get(&self, id: &str) -> Result<Option<Bytes>> {
        check("record id", id)?;
        self.store.get_opt(&paths::sidecar(&self.log, id)).await
    }

    pub async fn exists(&self, id: &str) -> Result<bool> {
        check("record id", id)?;
        self.store.exists(&paths::sidecar(&self.log, id)).await
    }

    /// Ids of every record of the log, sorted.
    pub async fn ids(&self) -> Result<Vec<String>> {
        let prefix = paths::sidecar_prefix(&self.log);
        Ok(self
            .store
            .list(&prefix)
            .await?
            .into_iter()
            .filter_map(|(k, _)| {
                k.strip_prefix(&prefix)?
                    .strip_prefix('/')?
                    .strip_suffix(".json")
                    .filter(|id| name_ok(id))
                    .map(str::to_owned)
            })
            .collect())
    }

    pub async fn delete(&self, id: &str) -> Result<()> {
        check("record id", id)?;
        self.store.delete(&paths::sidecar(&self.log, id)).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::StoreOptions;

    #[tokio::test]
    async fn records_are_created_once_listed_and_deleted() {
        let url = format!("memory://sidecar-{:016x}", rand::random::<u64>());
        let store = Store::create(&url, &StoreOptions::default()).unwrap();
        let log = Sidecar::new(&store, "commits").unwrap();
        assert!(!log.exists("a1").await.unwrap());
        log.create("a1", b"{}".to_vec()).await.unwrap();
        assert!(matches!(
            log.create("a1", b"{}".to_vec()).await,
            Err(Error::Conflict { .. })
        ));
        log.create("b2", b"[1]".to_vec()).await.unwrap();
        assert_eq!(log.ids().await.unwrap(), ["a1", "b2"]);
        assert_eq!(log.get("b2").await.unwrap().unwrap(), Bytes::from("[1]"));
        log.delete("a1").await.unwrap();
        assert_eq!(log.ids().await.unwrap(), ["b2"]);
        assert!(Sidecar::new(&store, "../x").is_err());
        assert!(log.create("a/b", b"".to_vec()).await.is_err());
    }
}
