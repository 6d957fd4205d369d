//! The process edge of the Airbyte protocol: one JSON message per stdout line, and the
//! tolerant parsing of what arrives on stdin.
//!
//! stdout is the protocol channel: nothing but whole messages is written there, each
//! as one line, flushed before the call returns (a STATE is acknowledged only once its
//! line has left the process). Logs are LOG messages on stdout as the protocol asks.
//! A sync sends every message through the [`Emit`] it was given: the process gives
//! [`Emit::stdout`], tests that run a sync in-process give one that collects them.
//!
//! Input follows the protocol's tolerance rules: unknown keys are ignored, `null` is
//! absent, anything but RECORD, STATE and TRACE STREAM_STATUS is passed over, and a
//! line that is not a JSON message is skipped (the caller logs it).

use std::io::Write;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::Failure;

static STDOUT: Mutex<()> = Mutex::new(());

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as f64)
        .unwrap_or(0.0)
}

/// Writes one message as one line and flushes.
pub fn emit(msg: &Value) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let _guard = STDOUT.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = std::io::stdout().lock();
    out.write_all(&line)?;
    out.flush()
}

type Sink = dyn Fn(&Value) -> std::io::Result<()> + Send + Sync;

/// Where the messages of one sync go. Sending returns once the message has left for
/// good (for stdout: written and flushed), so a STATE sent is a STATE acknowledged.
#[derive(Clone)]
pub struct Emit(Arc<Sink>);

impl Emit {
    pub fn new(sink: impl Fn(&Value) -> std::io::Result<()> + Send + Sync + 'static) -> Emit {
        Emit(Arc::new(sink))
    }

    /// The protocol channel of the process.
    pub fn stdout() -> Emit {
        Emit::new(emit)
    }

    pub fn message(&self, msg: &Value) -> std::io::Result<()> {
        (self.0)(msg)
    }

    pub fn log(&self, level: &str, message: impl Into<String>) {
        // A closed channel leaves nobody to tell.
        let _ = self
            .message(&json!({"type": "LOG", "log": {"level": level, "message": message.into()}}));
    }

    pub fn info(&self, message: impl Into<String>) {
        self.log("INFO", message);
    }

    pub fn warn(&self, message: impl Into<String>) {
        self.log("WARN", message);
    }
}

/// Reports a failure as a TRACE ERROR message.
pub fn trace_error(f: &Failure) {
    let mut error = json!({"message": f.message, "failure_type": f.kind.as_str()});
    if let Some(i) = &f.internal {
        error["internal_message"] = json!(i);
    }
    let _ = emit(&json!({
        "type": "TRACE",
        "trace": {"type": "ERROR", "emitted_at": now_ms(), "error": error}
    }));
}

/// `(namespace, name)` of a stream; a null namespace is `None`.
pub type StreamKey = (Option<String>, String);

#[derive(Deserialize)]
pub struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub record: Option<RawRecord<'a>>,
    pub state: Option<Value>,
    pub trace: Option<RawTrace>,
}

#[derive(Deserialize)]
pub struct RawRecord<'a> {
    #[serde(borrow)]
    pub stream: Option<std::borrow::Cow<'a, str>>,
    pub namespace: Option<String>,
    /// Read later, with the stream's columns at hand (`input::parse_line`).
    #[serde(borrow)]
    pub data: Option<&'a serde_json::value::RawValue>,
    pub emitted_at: Option<f64>,
    pub meta: Option<RawMeta>,
}

#[derive(Deserialize)]
pub struct RawMeta {
    pub changes: Option<Vec<Value>>,
}

#[derive(Deserialize)]
pub struct RawTrace {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub stream_status: Option<RawStatus>,
}

#[derive(Deserialize)]
pub struct RawStatus {
    pub stream_descriptor: Option<Descriptor>,
    pub status: Option<String>,
}

#[derive(Deserialize, Clone, Debug, Default)]
pub struct Descriptor {
    pub name: Option<String>,
    pub namespace: Option<String>,
}

/// Drops `null`-valued keys, recursively (`"k": null` means absent).
pub fn drop_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k, drop_nulls(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(drop_nulls).collect()),
        other => other,
    }
}

/// The scope a STATE orders within: one stream, or every stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StateScope {
    Stream(StreamKey),
    Global,
}

/// Scope of a (null-dropped) state message.
pub fn state_scope(state: &Value) -> StateScope {
    let kind = state
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("LEGACY");
    if kind == "STREAM" {
        let sd = state
            .get("stream")
            .and_then(|s| s.get("stream_descriptor"))
            .cloned()
            .unwrap_or(Value::Null);
        let name = sd
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let ns = sd
            .get("namespace")
            .and_then(Value::as_str)
            .map(str::to_owned);
        StateScope::Stream((ns, name))
    } else {
        StateScope::Global
    }
}

/// The state as echoed: as received (null keys dropped, unknown keys kept) with
/// `destinationStats` set. Counts are JSON numbers with a decimal point, like `100.0`.
pub fn echo_state(mut state: Value, records: u64, rejected: u64) -> Value {
    let mut stats = serde_json::Map::new();
    stats.insert("recordCount".into(), json!(records as f64));
    if rejected > 0 {
        stats.insert("rejectedRecordCount".into(), json!(rejected as f64));
    }
    if let Some(m) = state.as_object_mut() {
        m.insert("destinationStats".into(), Value::Object(stats));
    }
    json!({"type": "STATE", "state": state})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn envelopes_ignore_unknown_keys_and_nulls() {
        let e: Envelope = serde_json::from_str(
            r#"{"type":"RECORD","extra":1,"record":{"stream":"s","namespace":null,"data":{"a":1},"emitted_at":5,"meta":null,"x":[]}}"#,
        )
        .unwrap();
        let r = e.record.unwrap();
        assert_eq!(r.stream.as_deref(), Some("s"));
        assert!(r.namespace.is_none() && r.meta.is_none());
        assert_eq!(r.emitted_at, Some(5.0));
    }

    #[test]
    fn echo_keeps_unknown_fields_and_writes_float_counts() {
        let s = drop_nulls(
            json!({"type":"GLOBAL","id":7,"global":{"shared_state":{"c":1},"stream_states":[]},"global_":null}),
        );
        assert_eq!(state_scope(&s), StateScope::Global);
        let out = echo_state(s, 100, 2);
        let text = serde_json::to_string(&out).unwrap();
        assert!(text.contains(r#""recordCount":100.0"#), "{text}");
        assert!(text.contains(r#""rejectedRecordCount":2.0"#), "{text}");
        assert!(text.contains(r#""id":7"#) && !text.contains("global_"));
        let st =
            json!({"type":"STREAM","stream":{"stream_descriptor":{"name":"a","namespace":"n"}}});
        assert_eq!(
            state_scope(&st),
            StateScope::Stream((Some("n".into()), "a".into()))
        );
        assert_eq!(state_scope(&json!({"data": {}})), StateScope::Global);
    }
}
