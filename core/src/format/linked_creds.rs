//! `linked_creds.json`: the names of the credential sets link tensors use (never the
//! secrets), as 3.x writes it: `{"creds_keys": [...], "managed_creds_keys": [...],
//! "used_creds_keys": [...]}` on one line (`json.dumps`).
//!
//! A link's creds encoder row holds `0` for "no creds key" and `i >= 1` for
//! `creds_keys[i - 1]`, so the order of `creds_keys` is part of the format: names are
//! only ever appended.

use serde_json::{Value, json};

use super::json::to_compact;
use crate::error::Corruption;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkedCreds {
    pub creds_keys: Vec<String>,
    /// Keys whose secrets a hosted service holds (3.x's managed creds); kept as read.
    pub managed_creds_keys: Vec<String>,
    pub used_creds_keys: Vec<String>,
}

impl LinkedCreds {
    pub fn decode(bytes: &[u8]) -> Result<LinkedCreds, Corruption> {
        if bytes.is_empty() {
            return Ok(LinkedCreds::default());
        }
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| Corruption::new(format!("linked_creds.json: {e}")))?;
        let list = |field: &str| -> Result<Vec<String>, Corruption> {
            match v.get(field) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_str().map(str::to_owned).ok_or_else(|| {
                            Corruption::new(format!(
                                "linked_creds.json: {field} holds a non-string"
                            ))
                        })
                    })
                    .collect(),
                Some(_) => Err(Corruption::new(format!(
                    "linked_creds.json: {field} is not a list"
                ))),
            }
        };
        let mut out = LinkedCreds {
            creds_keys: list("creds_keys")?,
            managed_creds_keys: list("managed_creds_keys")?,
            used_creds_keys: list("used_creds_keys")?,
        };
        // 3.x puts "ENV" first when a sample used it without registering it.
        if out.used_creds_keys.iter().any(|k| k == "ENV")
            && !out.creds_keys.iter().any(|k| k == "ENV")
        {
            out.creds_keys.insert(0, "ENV".to_owned());
        }
        Ok(out)
    }

    pub fn encode(&self) -> Vec<u8> {
        to_compact(&json!({
            "creds_keys": self.creds_keys,
            "managed_creds_keys": self.managed_creds_keys,
            "used_creds_keys": self.used_creds_keys,
        }))
    }

    /// The creds encoder value of `key` (`None` -> 0); `None` when the key is unknown.
    pub fn encoding(&self, key: Option<&str>) -> Option<u32> {
        match key {
            None => Some(0),
            Some(k) => self
                .creds_keys
                .iter()
                .position(|x| x == k)
                .and_then(|i| u32::try_from(i + 1).ok()),
        }
    }

    /// The key of a creds encoder value; `Err` for a value past the list.
    pub fn key_of(&self, encoding: u32) -> Result<Option<&str>, Corruption> {
        if encoding == 0 {
            return Ok(None);
        }
        self.creds_keys
            .get(encoding as usize - 1)
            .map(|s| Some(s.as_str()))
            .ok_or_else(|| {
                Corruption::new(format!(
                    "creds encoder value {encoding} but linked_creds.json lists {} keys",
                    self.creds_keys.len()
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_3x_layout() {
        let text =
            br#"{"creds_keys": ["a", "b"], "managed_creds_keys": [], "used_creds_keys": ["b"]}"#;
        let c = LinkedCreds::decode(text).unwrap();
        assert_eq!(c.creds_keys, ["a", "b"]);
        assert_eq!(c.encode(), text.to_vec());
        assert_eq!(c.encoding(Some("b")), Some(2));
        assert_eq!(c.encoding(None), Some(0));
        assert_eq!(c.encoding(Some("zz")), None);
        assert_eq!(c.key_of(1).unwrap(), Some("a"));
        assert!(c.key_of(3).is_err());
        assert!(LinkedCreds::decode(b"{\"creds_keys\": 3}").is_err());
        assert!(LinkedCreds::decode(b"not json").is_err());
        let env = LinkedCreds::decode(
            br#"{"creds_keys": ["x"], "managed_creds_keys": [], "used_creds_keys": ["ENV"]}"#,
        )
        .unwrap();
        assert_eq!(env.creds_keys, ["ENV", "x"]);
    }
}
