//! Linked tensors on the dataset side: creds keys, verify at append, resolved reads.
//!
//! Contract:
//! * Creds keys are names only. `linked_creds.json` (root level, unversioned, as in 3.x)
//!   lists them; a link's creds encoder row holds `0` (no key) or `i` (`creds_keys[i-1]`).
//!   Names are only appended, so an index never changes meaning. The secrets live in the
//!   [`Linker`] and never reach storage.
//! * Appending a link whose creds key is not registered fails before anything changes.
//! * With `verify` (the default for link tensors, as in 3.x) every target of a batch is
//!   fetched (images: to read the shape from the header) or probed (other htypes: HEAD)
//!   through the linker, in parallel within its bound, before anything is appended. The
//!   first failure fails the whole batch, naming the tensor, the row and the redacted
//!   target. `verify=false` fetches nothing and, as in 3.x, the tensor has no
//!   `_shape`/`_info` companions.
//! * Resolved reads fetch the targets (bounded, parallel, cached by the linker) and return
//!   what a read of the inner htype gives: the target's bytes as `Sample::Encoded` with
//!   the sniffed codec and shape, or decoded arrays when asked. Sequences resolve per
//!   item.

use std::ops::Range;
use std::sync::OnceLock;

use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use super::encode::image_info;
use super::{Dataset, Prepared, ReadOptions};
use crate::error::{Error, Result};
use crate::format::array::{NdArray, Sample};
use crate::format::compression::{self, Compression};
use crate::format::dtype::Dtype;
use crate::format::htype::BaseHtype;
use crate::format::linked_creds::LinkedCreds;
use crate::link::{LinkCreds, LinkOptions, Linker, redact};
use crate::store::{Store, paths};

/// The linker of handles opened without one: one pool and one cache per process.
static DEFAULT_LINKER: OnceLock<Linker> = OnceLock::new();

/// What the verify step learned about one stored link item.
#[derive(Clone, Debug, Default)]
pub(super) struct LinkFact {
    creds: u32,
    /// `(shape, _info record)` when the target was verified.
    verified: Option<(Vec<u64>, Value)>,
}

pub(super) async fn load_linked_creds(store: &Store) -> Result<LinkedCreds> {
    match store.get_opt(paths::LINKED_CREDS).await? {
        Some(b) => LinkedCreds::decode(&b)
            .map_err(|c| c.at(format!("{}/{}", store.url(), paths::LINKED_CREDS))),
        None => Ok(LinkedCreds::default()),
    }
}

fn is_image_like(base: BaseHtype) -> bool {
    matches!(
        base,
        BaseHtype::Image | BaseHtype::ImageRgb | BaseHtype::ImageGray
    )
}

/// Adds the tensor and row to an error about one link.
fn at_row(e: Error, tensor: &str, row: u64) -> Error {
    match e {
        Error::Link {
            target,
            status,
            reason,
            retryable,
        } => Error::Link {
            target,
            status,
            reason: format!("tensor {tensor:?}, row {row}: {reason}"),
            retryable,
        },
        Error::InvalidInput { message } => Error::InvalidInput {
            message: format!("tensor {tensor:?}, row {row}: {message}"),
        },
        Error::Unsupported { message } => Error::Unsupported {
            message: format!("tensor {tensor:?}, row {row}: {message}"),
        },
        other => other,
    }
}

/// The link items of a batch in stored order (sequence items flattened): the row in the
/// batch, and the path with its creds key (`None` for an empty sample or one the encoder
/// will refuse).
type FlatLink = (usize, Option<(String, Option<String>)>);

fn flat_links(samples: &[Sample], is_sequence: bool) -> Vec<FlatLink> {
    fn one(s: &Sample) -> Option<(String, Option<String>)> {
        match s {
            Sample::Link { path, creds_key } => Some((path.clone(), creds_key.clone())),
            Sample::Text(path) => Some((path.clone(), None)),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(samples.len());
    for (row, s) in samples.iter().enumerate() {
        match s {
            Sample::Sequence(items) if is_sequence => {
                out.extend(items.iter().map(|i| (row, one(i))));
            }
            Sample::Empty if is_sequence => {}
            other => out.push((row, one(other))),
        }
    }
    out
}

/// Sets each prepared link item's creds value, shape and info from `facts` (one per
/// item, in stored order).
pub(super) fn apply_link_facts(prepared: &mut [Prepared], facts: Vec<LinkFact>) -> Result<()> {
    let mut facts = facts.into_iter();
    for p in prepared.iter_mut() {
        let items = match p {
            Prepared::Item(it) => std::slice::from_mut(it),
            Prepared::Sequence(items) => items.as_mut_slice(),
        };
        for it in items {
            let f = facts
                .next()
                .ok_or_else(|| Error::internal("fewer link facts than link items"))?;
            it.creds = f.creds;
            if let Some((shape, info)) = f.verified {
                it.logical_shape = shape;
                it.info = Some(info);
            }
        }
    }
    if facts.next().is_some() {
        return Err(Error::internal("more link facts than link items"));
    }
    Ok(())
}

/// Shape and `_info` of a fetched image target; `None` when the bytes are no image.
fn image_facts(bytes: &[u8], path: &str) -> Option<(Vec<u64>, Value)> {
    let c = Compression::sniff(bytes).filter(Compression::is_image)?;
    // Codecs whose header this build does not parse keep an unknown shape.
    let shape = compression::image_shape(bytes, &c).unwrap_or_default();
    let mut info = image_info(&shape, c.name());
    if let Some(o) = info.as_object_mut() {
        o.insert("filename".into(), Value::String(path.to_owned()));
    }
    Some((shape.into_iter().map(|d| d as u64).collect(), info))
}

/// A fetched target as a read of the inner htype gives it.
fn resolved_sample(bytes: bytes::Bytes, decode: bool) -> Result<Sample> {
    match Compression::sniff(&bytes) {
        Some(c) if c.is_image() => {
            let shape = compression::image_shape(&bytes, &c).ok();
            match (&shape, decode && c.can_decode()) {
                (Some(s), true) => Ok(Sample::Array(compression::decode_sample(
                    &bytes,
                    &c,
                    Dtype::U8,
                    s,
                )?)),
                _ => Ok(Sample::Encoded {
                    bytes,
                    compression: c,
                    shape,
                }),
            }
        }
        Some(c) => Ok(Sample::Encoded {
            bytes,
            compression: c,
            shape: None,
        }),
        // Bytes of no known codec read as what they are.
        None => Ok(Sample::Array(NdArray::new(
            Dtype::U8,
            vec![bytes.len()],
            bytes,
        )?)),
    }
}

impl Dataset {
    /// The linker this handle fetches link targets with: the one given at open, or the
    /// process-wide default (creds from `DEEPLAKE_LINK_CREDS[_FILE]`).
    pub fn linker(&self) -> Result<Linker> {
        if let Some(l) = &self.linker {
            return Ok(l.clone());
        }
        if let Some(l) = DEFAULT_LINKER.get() {
            return Ok(l.clone());
        }
        let made = Linker::new(LinkOptions {
            creds: LinkCreds::from_env()?,
            ..LinkOptions::default()
        })?;
        Ok(DEFAULT_LINKER.get_or_init(|| made).clone())
    }

    /// Turns the verify step off for this handle, whatever the tensors say: links are
    /// stored unchecked, with an unknown shape (a writer that checks links its own way).
    pub fn set_link_verify(&mut self, on: bool) {
        self.link_verify = on;
    }

    /// Names of the creds keys links of this dataset may use, in encoder order.
    pub fn creds_keys(&self) -> &[String] {
        &self.linked_creds.creds_keys
    }

    /// Names of the creds keys some link uses.
    pub fn used_creds_keys(&self) -> &[String] {
        &self.linked_creds.used_creds_keys
    }

    /// Registers a creds key name (3.x's `ds.add_creds_key(name)`); only the name is
    /// stored. The secrets are given to the linker at run time.
    pub async fn add_creds_key(&mut self, name: &str) -> Result<()> {
        self.check_writable()?;
        if name.trim().is_empty() || name.chars().any(char::is_control) {
            return Err(Error::invalid(format!("bad creds key name {name:?}")));
        }
        if self.linked_creds.creds_keys.iter().any(|k| k == name) {
            return Err(Error::invalid(format!("creds key {name:?} already exists")));
        }
        self.linked_creds.creds_keys.push(name.to_owned());
        self.save_linked_creds().await
    }

    /// Writes `linked_creds.json`, merged with what another writer may have added since
    /// it was read: names are only appended, so one list must extend the other.
    pub(super) async fn save_linked_creds(&mut self) -> Result<()> {
        let stored = load_linked_creds(&self.store).await?;
        let ours = &self.linked_creds;
        let (short, long) = if stored.creds_keys.len() <= ours.creds_keys.len() {
            (&stored.creds_keys, &ours.creds_keys)
        } else {
            (&ours.creds_keys, &stored.creds_keys)
        };
        if long[..short.len()] != short[..] {
            return Err(Error::Conflict {
                path: format!("{}/{}", self.store.url(), paths::LINKED_CREDS),
                message: "another writer registered different creds keys meanwhile; reopen \
                          the dataset and retry"
                    .to_owned(),
                retryable: true,
            });
        }
        let mut merged = LinkedCreds {
            creds_keys: long.clone(),
            managed_creds_keys: stored.managed_creds_keys.clone(),
            used_creds_keys: stored.used_creds_keys.clone(),
        };
        for k in &ours.used_creds_keys {
            if !merged.used_creds_keys.contains(k) {
                merged.used_creds_keys.push(k.clone());
            }
        }
        for k in &ours.managed_creds_keys {
            if !merged.managed_creds_keys.contains(k) {
                merged.managed_creds_keys.push(k.clone());
            }
        }
        self.store.put(paths::LINKED_CREDS, merged.encode()).await?;
        self.linked_creds = merged;
        self.linked_creds_dirty = false;
        Ok(())
    }

    /// Checks the creds keys of a batch of links for tensor `key` and verifies the
    /// targets when the tensor asks for it (module docs). `None` for other tensors.
    pub(super) async fn link_facts(
        &mut self,
        key: &str,
        tensor: &str,
        samples: &[Sample],
    ) -> Result<Option<Vec<LinkFact>>> {
        let Some(t) = self.tensors.get(key) else {
            return Err(Error::not_found("tensor", tensor));
        };
        if !t.htype.is_link {
            return Ok(None);
        }
        let verify =
            self.link_verify && t.meta.verify && t.meta.links.keys().any(|k| k.ends_with("_shape"));
        let image = is_image_like(t.htype.base);
        let is_sequence = t.htype.is_sequence;
        let first_row = t
            .seq
            .as_ref()
            .map(|s| s.num_sequences())
            .unwrap_or(t.meta.length);
        let flat = flat_links(samples, is_sequence);
        let mut facts = Vec::with_capacity(flat.len());
        let mut used = Vec::new();
        for (row, l) in &flat {
            let creds = match l {
                Some((_, Some(k))) => {
                    let code = self.linked_creds.encoding(Some(k)).ok_or_else(|| {
                        Error::invalid(format!(
                            "tensor {tensor:?}, row {}: creds key {k:?} is not registered; \
                             add it with add_creds_key first (known: {:?})",
                            first_row + *row as u64,
                            self.linked_creds.creds_keys
                        ))
                    })?;
                    if !used.contains(k) {
                        used.push(k.clone());
                    }
                    code
                }
                _ => 0,
            };
            facts.push(LinkFact {
                creds,
                verified: None,
            });
        }
        if verify {
            let linker = self.linker()?;
            let bound = linker.options().concurrency;
            let checks = flat.iter().enumerate().filter_map(|(i, (row, l))| match l {
                Some((path, ck)) if !path.is_empty() => Some((i, *row, path.clone(), ck.clone())),
                _ => None,
            });
            // Owned, so the futures borrow nothing (a borrowing stream future is not
            // `Send` for every lifetime, which callers spawning it need).
            let name: std::sync::Arc<str> = tensor.into();
            let checks: Vec<_> = checks.collect();
            let learned: Vec<(usize, (Vec<u64>, Value))> = futures::stream::iter(checks)
                .map(|(i, row, path, ck)| {
                    let linker = linker.clone();
                    let tensor = name.clone();
                    async move {
                        let tensor = &*tensor;
                        let abs = first_row + row as u64;
                        let fact = if image {
                            let bytes = linker
                                .fetch(&path, ck.as_deref())
                                .await
                                .map_err(|e| verify_error(e, tensor, abs))?;
                            let p = path.clone();
                            crate::runtime::spawn_cpu(move || Ok(image_facts(&bytes, &p)))
                                .await?
                                .ok_or_else(|| {
                                    Error::invalid(format!(
                                        "tensor {tensor:?}, row {abs}: link {} is not an image",
                                        redact(&path)
                                    ))
                                })?
                        } else {
                            linker
                                .size(&path, ck.as_deref())
                                .await
                                .map_err(|e| verify_error(e, tensor, abs))?;
                            (Vec::new(), serde_json::json!({}))
                        };
                        Ok::<_, Error>((i, fact))
                    }
                })
                // Each result carries its index: no need to wait for them in order.
                .buffer_unordered(bound)
                .try_collect()
                .await?;
            for (i, f) in learned {
                if let Some(slot) = facts.get_mut(i) {
                    slot.verified = Some(f);
                }
            }
        }
        for k in used {
            if !self.linked_creds.used_creds_keys.contains(&k) {
                self.linked_creds.used_creds_keys.push(k);
                self.linked_creds_dirty = true;
            }
        }
        Ok(Some(facts))
    }

    /// Reads rows `range` of link tensor `tensor` and fetches their targets (module
    /// docs). `decode` turns images this build decodes into arrays; otherwise each
    /// target comes back as `Sample::Encoded` with its original bytes.
    pub async fn read_resolved(
        &self,
        tensor: &str,
        range: Range<u64>,
        decode: bool,
    ) -> Result<Vec<Sample>> {
        let rows: Vec<u64> = range.collect();
        self.read_resolved_rows(tensor, &rows, decode).await
    }

    /// [`Dataset::read_resolved`] of rows `rows` (any order, repeats allowed), as a
    /// stream's batch asks for them.
    pub async fn read_resolved_rows(
        &self,
        tensor: &str,
        rows: &[u64],
        decode: bool,
    ) -> Result<Vec<Sample>> {
        if !self.tensor_htype(tensor)?.is_link {
            return Err(Error::invalid(format!(
                "tensor {tensor:?} is not a link tensor"
            )));
        }
        let stored = self
            .read_rows_with(
                tensor,
                rows,
                &ReadOptions {
                    decode: false,
                    ..ReadOptions::default()
                },
            )
            .await?;
        let abs_rows: std::sync::Arc<[u64]> = rows.into();
        let linker = self.linker()?;
        let bound = linker.options().concurrency;
        // (row, item or None for a plain sample, link)
        let mut flat = Vec::new();
        let mut shape = Vec::with_capacity(stored.len());
        for (row, s) in stored.into_iter().enumerate() {
            match s {
                Sample::Sequence(items) => {
                    shape.push(Some(items.len()));
                    flat.extend(items.into_iter().map(|i| (row, i)));
                }
                other => {
                    shape.push(None);
                    flat.push((row, other));
                }
            }
        }
        let name: std::sync::Arc<str> = tensor.into();
        // Unordered, so one slow target does not hold a slot that a later one could use;
        // the results are put back in order after.
        let mut resolved: Vec<(usize, Sample)> =
            futures::stream::iter(flat.into_iter().enumerate())
                .map(|(k, (row, s))| {
                    let linker = linker.clone();
                    let tensor = name.clone();
                    let abs = abs_rows[row];
                    async move {
                        let tensor = &*tensor;
                        let out = match s {
                            Sample::Link { path, creds_key } if !path.is_empty() => {
                                let bytes = linker
                                    .fetch(&path, creds_key.as_deref())
                                    .await
                                    .map_err(|e| at_row(e, tensor, abs))?;
                                crate::runtime::spawn_cpu(move || resolved_sample(bytes, decode))
                                    .await
                                    .map_err(|e| at_row(e, tensor, abs))
                            }
                            Sample::Link { .. } => Ok(Sample::Empty),
                            other => Ok(other),
                        };
                        out.map(|s| (k, s))
                    }
                })
                .buffer_unordered(bound)
                .try_collect()
                .await?;
        resolved.sort_unstable_by_key(|(k, _)| *k);
        let mut it = resolved.into_iter().map(|(_, s)| s);
        Ok(shape
            .into_iter()
            .map(|n| match n {
                None => it.next().unwrap_or(Sample::Empty),
                Some(n) => Sample::Sequence(it.by_ref().take(n).collect()),
            })
            .collect())
    }
}

/// A failed verify: a target that is missing or refused is the caller's to fix (bad
/// input); one that may come back stays a link error (the target's side).
fn verify_error(e: Error, tensor: &str, row: u64) -> Error {
    match e {
        Error::Link {
            target,
            status,
            reason,
            retryable: false,
        } => Error::invalid(format!(
            "tensor {tensor:?}, row {row}: link {target} cannot be read ({reason}{}); fix \
             it, or create the tensor with verify=false to store links unchecked",
            status.map(|s| format!(", status {s}")).unwrap_or_default()
        )),
        other => at_row(other, tensor, row),
    }
}
