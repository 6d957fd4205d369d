//! Reading the input (stdin in the process) without stalls: a reader thread moves
//! whole lines in blocks, a parse thread turns each block into typed messages on the
//! rayon pool (records become rows of typed cells of their stream's columns), and the
//! writer receives them in order.
//!
//! ```text
//! input --(blocks of whole lines, bounded)--> parse thread (rayon, per line)
//!       --(Vec<Parsed>, bounded)--> writer (batches, flushes, STATE echo)
//! ```
//!
//! Both channels are bounded, so memory is a few blocks plus the writer's batches, and
//! a line of any length is accepted (a block grows until the line ends).

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use rayon::prelude::*;
use serde_json::Value;

use crate::protocol::{Envelope, StreamKey, drop_nulls};
use crate::schema::{Cell, Kind, to_cell, typecast_change};

/// Blocks are cut at the first line end after this many bytes.
const BLOCK: usize = 4 << 20;
/// ... or at the last line end seen once the input was idle this long.
const IDLE: std::time::Duration = std::time::Duration::from_millis(50);

/// How one stream's records are read.
pub struct Route {
    pub fields: Vec<(String, Kind)>,
    /// Primary-key paths (append_dedup streams only).
    pub pk: Option<Vec<Vec<String>>>,
    /// Top-level keys of `data` that are read: the fields, and primary-key roots that
    /// are not fields. Every other key is skipped unparsed.
    keys: HashMap<String, Slot>,
    /// Primary-key roots that are not fields, in `Slot::PkRoot` order.
    pk_roots: usize,
}

#[derive(Clone, Copy)]
enum Slot {
    /// Column `i` of `fields`.
    Field(usize),
    /// A primary-key root that is no field.
    PkRoot(usize),
}

impl Route {
    pub fn new(fields: Vec<(String, Kind)>, pk: Option<Vec<Vec<String>>>) -> Route {
        let mut keys = HashMap::new();
        for (i, (f, _)) in fields.iter().enumerate() {
            keys.entry(f.clone()).or_insert(Slot::Field(i));
        }
        let mut pk_roots = 0;
        for p in pk.iter().flatten() {
            if let Some(root) = p.first()
                && !keys.contains_key(root)
            {
                keys.insert(root.clone(), Slot::PkRoot(pk_roots));
                pk_roots += 1;
            }
        }
        Route {
            fields,
            pk,
            keys,
            pk_roots,
        }
    }

    /// The value at `root` of this record's `data`.
    fn root<'a>(&self, data: &'a Data, root: &str) -> Option<&'a Value> {
        match self.keys.get(root)? {
            Slot::Field(i) => data.fields.get(*i)?.as_ref(),
            Slot::PkRoot(i) => data.pk_roots.get(*i)?.as_ref(),
        }
    }
}

/// The parts of one record's `data` object that its route reads.
struct Data {
    fields: Vec<Option<Value>>,
    pk_roots: Vec<Option<Value>>,
}

/// Reads a `data` object straight into its route's slots: no map is built, and keys
/// no column reads are skipped without building their values. A key given twice keeps
/// its last value, as a JSON object would.
struct DataVisitor<'r>(&'r Route);

impl<'de> serde::de::Visitor<'de> for DataVisitor<'_> {
    type Value = Data;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Data, A::Error> {
        let route = self.0;
        let mut data = Data {
            fields: vec![None; route.fields.len()],
            pk_roots: vec![None; route.pk_roots],
        };
        while let Some(slot) = m.next_key_seed(KeySeed(route))? {
            match slot {
                Some(Slot::Field(i)) => data.fields[i] = Some(m.next_value()?),
                Some(Slot::PkRoot(i)) => data.pk_roots[i] = Some(m.next_value()?),
                None => {
                    m.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(data)
    }
}

/// A key of `data`, looked up without allocating.
struct KeySeed<'r>(&'r Route);

impl<'de> serde::de::DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<Slot>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<Slot>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeySeed<'_> {
    type Value = Option<Slot>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, k: &str) -> Result<Option<Slot>, E> {
        Ok(self.0.keys.get(k).copied())
    }
}

/// `data` of a record, read for `route`; `None` if it is not a JSON object.
fn read_data(raw: &serde_json::value::RawValue, route: &Route) -> Option<Data> {
    let text = raw.get();
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let mut de = serde_json::Deserializer::from_str(text);
    serde::Deserializer::deserialize_map(&mut de, DataVisitor(route)).ok()
}

/// Which stream a record belongs to, and how to read it.
pub struct Router {
    /// Streams by name: their namespaces and indices.
    by_name: HashMap<String, Vec<(Option<String>, usize)>>,
    pub routes: Vec<Route>,
    pub link_prefixes: Vec<String>,
}

impl Router {
    pub fn new(
        streams: &HashMap<StreamKey, usize>,
        routes: Vec<Route>,
        link_prefixes: Vec<String>,
    ) -> Router {
        let mut by_name: HashMap<String, Vec<(Option<String>, usize)>> = HashMap::new();
        for ((ns, name), i) in streams {
            by_name
                .entry(name.clone())
                .or_default()
                .push((ns.clone(), *i));
        }
        Router {
            by_name,
            routes,
            link_prefixes,
        }
    }

    /// The stream a record names. Looked up without building a key: this runs for
    /// every record.
    pub fn find(&self, namespace: Option<&str>, name: &str) -> Option<usize> {
        let candidates = self.by_name.get(name)?;
        if let Some((_, i)) = candidates.iter().find(|(ns, _)| ns.as_deref() == namespace) {
            return Some(*i);
        }
        // A record without a namespace may name a stream that has one, when the name
        // alone is unambiguous.
        match (namespace, candidates.as_slice()) {
            (None, [(_, i)]) => Some(*i),
            _ => None,
        }
    }
}

#[derive(Debug)]
pub struct RecordIn {
    pub stream: usize,
    pub emitted_at: i64,
    pub cells: Vec<Cell>,
    /// `_airbyte_meta.changes`: the source's and ours.
    pub changes: Vec<Value>,
    /// Canonical primary key (append_dedup streams).
    pub pk: Option<String>,
    pub raw_id: String,
}

#[derive(Debug)]
pub enum Parsed {
    Record(Box<RecordIn>),
    /// A record of a known stream whose `data` is not an object.
    Rejected {
        stream: usize,
    },
    /// A record of a stream that is not in the catalog.
    Unknown {
        key: StreamKey,
    },
    State(Value),
    Status {
        key: StreamKey,
        status: String,
    },
    /// LOG, CONTROL, other TRACE messages, blank lines.
    Ignored,
    /// Not a JSON message: a short preview for the log.
    Bad(String),
}

fn uuid4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(HEX[usize::from(x >> 4)] as char);
        s.push(HEX[usize::from(x & 0xf)] as char);
    }
    s
}

fn preview(line: &[u8]) -> String {
    let s = String::from_utf8_lossy(&line[..line.len().min(120)]).into_owned();
    if line.len() > 120 {
        format!("{s}...")
    } else {
        s
    }
}

/// Parses one input line.
pub fn parse_line(line: &[u8], router: &Router) -> Parsed {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return Parsed::Ignored;
    }
    let env: Envelope = match serde_json::from_slice(line) {
        Ok(e) => e,
        Err(_) => return Parsed::Bad(preview(line)),
    };
    match env.kind.as_deref() {
        Some("RECORD") => {
            let Some(rec) = env.record else {
                return Parsed::Bad(preview(line));
            };
            let Some(name) = rec.stream else {
                return Parsed::Bad(preview(line));
            };
            let Some(si) = router.find(rec.namespace.as_deref(), &name) else {
                return Parsed::Unknown {
                    key: (rec.namespace, name.into_owned()),
                };
            };
            let route = &router.routes[si];
            let Some(data) = rec.data.and_then(|raw| read_data(raw, route)) else {
                return Parsed::Rejected { stream: si };
            };
            let mut changes: Vec<Value> = rec
                .meta
                .and_then(|m| m.changes)
                .unwrap_or_default()
                .into_iter()
                .filter(|c| !c.is_null())
                .collect();
            let pk = route.pk.as_ref().map(|paths| {
                let key: Vec<&Value> = paths
                    .iter()
                    .map(|p| {
                        let mut v: Option<&Value> = None;
                        for (i, part) in p.iter().enumerate() {
                            v = if i == 0 {
                                route.root(&data, part)
                            } else {
                                v.and_then(|x| x.get(part))
                            };
                        }
                        v.unwrap_or(&Value::Null)
                    })
                    .collect();
                serde_json::to_string(&key).unwrap_or_default()
            });
            let cells = route
                .fields
                .iter()
                .zip(data.fields)
                .map(|((f, kind), v)| match v {
                    None => Cell::Null,
                    Some(v) => to_cell(kind, v, &router.link_prefixes).unwrap_or_else(|()| {
                        changes.push(typecast_change(f));
                        Cell::Null
                    }),
                })
                .collect();
            Parsed::Record(Box::new(RecordIn {
                stream: si,
                emitted_at: rec.emitted_at.map_or(0, |t| t as i64),
                cells,
                changes,
                pk,
                raw_id: uuid4(),
            }))
        }
        Some("STATE") => match env.state {
            Some(s @ Value::Object(_)) => Parsed::State(drop_nulls(s)),
            _ => Parsed::Bad(preview(line)),
        },
        Some("TRACE") => {
            let Some(t) = env.trace else {
                return Parsed::Ignored;
            };
            match (t.kind.as_deref(), t.stream_status) {
                (Some("STREAM_STATUS"), Some(ss)) => {
                    let sd = ss.stream_descriptor.unwrap_or_default();
                    Parsed::Status {
                        key: (sd.namespace, sd.name.unwrap_or_default()),
                        status: ss.status.unwrap_or_default(),
                    }
                }
                _ => Parsed::Ignored,
            }
        }
        _ => Parsed::Ignored,
    }
}

/// Starts the reader and parse threads over `input`; parsed blocks arrive on the
/// returned channel, which closes at end of input.
pub fn spawn(
    router: Arc<Router>,
    input: impl Read + Send + 'static,
) -> tokio::sync::mpsc::Receiver<Vec<Parsed>> {
    let (block_tx, block_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<Parsed>>(2);
    std::thread::spawn(move || read_blocks(input, block_tx));
    std::thread::spawn(move || {
        for block in block_rx {
            let lines: Vec<&[u8]> = block.split(|b| *b == b'\n').collect();
            let parsed: Vec<Parsed> = lines
                .par_iter()
                .with_min_len(256)
                .map(|l| parse_line(l, &router))
                .filter(|p| !matches!(p, Parsed::Ignored))
                .collect();
            if tx.blocking_send(parsed).is_err() {
                return;
            }
        }
    });
    rx
}

/// Moves whole lines from `input` in blocks of about [`BLOCK`] bytes. A block is also
/// handed on once no bytes came for [`IDLE`]: a source that trickles records (or sends
/// a STATE and waits) must not wait for a full block before its STATE can be
/// acknowledged (`flush_interval_seconds`).
fn read_blocks(input: impl Read + Send + 'static, tx: std::sync::mpsc::SyncSender<Vec<u8>>) {
    use std::sync::mpsc::RecvTimeoutError;
    // The raw reads come through their own thread so that waiting for input can time out.
    let (raw_tx, raw_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    std::thread::spawn(move || read_raw(input, raw_tx));
    let mut carry: Vec<u8> = Vec::new();
    let mut eof = false;
    while !eof {
        let mut buf = std::mem::take(&mut carry);
        // Where the last line end seen so far is (each byte is looked at once).
        let mut last_nl = buf.iter().rposition(|b| *b == b'\n');
        let cut = loop {
            match raw_rx.recv_timeout(IDLE) {
                Ok(chunk) => {
                    if let Some(p) = chunk.iter().rposition(|b| *b == b'\n') {
                        last_nl = Some(buf.len() + p);
                    }
                    buf.extend_from_slice(&chunk);
                    if buf.len() >= BLOCK
                        && let Some(p) = last_nl
                    {
                        break p + 1;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Some(p) = last_nl {
                        break p + 1;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    eof = true;
                    break buf.len();
                }
            }
        };
        carry = buf.split_off(cut);
        if !buf.is_empty() && tx.send(buf).is_err() {
            return;
        }
    }
}

/// Reads `input` to its end (or first error) in chunks of what each read returned.
fn read_raw(mut input: impl Read, tx: std::sync::mpsc::SyncSender<Vec<u8>>) {
    let mut chunk = vec![0u8; BLOCK / 4];
    loop {
        let n = match input.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => 0,
        };
        if n == 0 || tx.send(chunk[..n].to_vec()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn router() -> Router {
        Router::new(
            &[((None, "s".to_owned()), 0)].into_iter().collect(),
            vec![Route::new(
                vec![("id".into(), Kind::Int), ("name".into(), Kind::Text)],
                Some(vec![vec!["id".into()]]),
            )],
            vec![],
        )
    }

    #[test]
    fn lines_become_messages() {
        let r = router();
        let p = parse_line(
            br#"{"type":"RECORD","record":{"stream":"s","data":{"id":"x","name":"a","new":1},"emitted_at":7}}"#,
            &r,
        );
        let Parsed::Record(rec) = p else {
            panic!("{p:?}")
        };
        assert_eq!(rec.cells, [Cell::Null, Cell::Text("a".into())]);
        assert_eq!(rec.changes.len(), 1);
        assert_eq!(rec.pk.as_deref(), Some(r#"["x"]"#));
        assert!(matches!(
            parse_line(
                br#"{"type":"RECORD","record":{"stream":"s","data":[1],"emitted_at":7}}"#,
                &r
            ),
            Parsed::Rejected { stream: 0 }
        ));
        assert!(matches!(
            parse_line(
                br#"{"type":"RECORD","record":{"stream":"t","data":{},"emitted_at":7}}"#,
                &r
            ),
            Parsed::Unknown { .. }
        ));
        assert!(matches!(parse_line(b"hello", &r), Parsed::Bad(_)));
        assert!(matches!(
            parse_line(
                br#"{"type":"LOG","log":{"level":"INFO","message":"x"}}"#,
                &r
            ),
            Parsed::Ignored
        ));
        assert!(matches!(
            parse_line(br#"{"type":"TRACE","trace":{"type":"STREAM_STATUS","emitted_at":1.0,"stream_status":{"stream_descriptor":{"name":"s","namespace":null},"status":"COMPLETE"}}}"#, &r),
            Parsed::Status { .. }
        ));
    }

    #[test]
    fn blocks_hold_whole_lines_of_any_length() {
        let long = "x".repeat(3 * BLOCK);
        let text = format!("a\n{long}\nb\nc");
        let (tx, rx) = std::sync::mpsc::sync_channel(100);
        read_blocks(std::io::Cursor::new(text.clone().into_bytes()), tx);
        let blocks: Vec<Vec<u8>> = rx.iter().collect();
        let joined: Vec<u8> = blocks.concat();
        assert_eq!(joined, text.as_bytes());
        for b in &blocks[..blocks.len() - 1] {
            assert_eq!(b.last(), Some(&b'\n'));
        }
    }

    /// A pipe that gives two lines, then nothing for a while: the lines are handed on
    /// without waiting for a full block or the end of input.
    #[test]
    fn idle_input_hands_on_the_lines_read() {
        let (r, mut w) = std::io::pipe().unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(100);
        std::thread::spawn(move || read_blocks(r, tx));
        std::io::Write::write_all(&mut w, b"a\nb\npart").unwrap();
        let first = rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(first, b"a\nb\n");
        std::io::Write::write_all(&mut w, b"ial\n").unwrap();
        drop(w);
        let rest: Vec<Vec<u8>> = rx.iter().collect();
        assert_eq!(rest.concat(), b"partial\n");
    }
}
