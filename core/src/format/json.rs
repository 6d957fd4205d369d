//! JSON as 3.x writes it, byte for byte.
//!
//! * Meta and info files: Python `json.dumps(v, sort_keys=True, indent=4)`: keys sorted by
//!   code point, 4-space indent, `","` + newline between items, `": "` after keys, `[]` and
//!   `{}` for empty containers, no trailing newline.
//! * Version and registry files and json samples: Python `json.dumps(v)`: one line, `", "`
//!   and `": "` separators, keys in the map's own order.
//!
//! Both escape like Python's `ensure_ascii=True`: `\" \\ \n \r \t \b \f` short forms,
//! every other code point outside `0x20..=0x7e` as lowercase `\uXXXX` (surrogate pairs
//! above the BMP). Floats print like Python's `repr` (`1.0`, `1e-05`, `1e+16`).
//!
//! numpy arrays, bytes and compressed samples nested in json samples are objects tagged
//! `_hub_custom_type` (3.x `HubJsonEncoder`; observed in a 3.9.52 chunk):
//! `{"_hub_custom_type": "ndarray", "data": <base64>, "shape": [3], "dtype": "<f4"}`,
//! `{"_hub_custom_type": "bytes", "data": <base64>}`,
//! `{"_hub_custom_type": "Sample", "data": <base64>, "compression": "jpeg"}`.
//! [`decode_custom`] turns them back into values; [`ndarray_to_value`] and
//! [`bytes_to_value`] build them.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Number, Value};

use super::array::NdArray;
use super::dtype::Dtype;
use crate::error::Corruption;

/// Python `json.dumps(v, sort_keys=True, indent=4)`.
pub fn to_pretty(v: &Value) -> Vec<u8> {
    let mut out = String::new();
    write_pretty(&mut out, v, 0);
    out.into_bytes()
}

/// Python `json.dumps(v)` (separators `", "` and `": "`), as 3.x writes json samples.
pub fn to_compact(v: &Value) -> Vec<u8> {
    let mut out = String::new();
    write_compact(&mut out, v);
    out.into_bytes()
}

fn write_pretty(out: &mut String, v: &Value, depth: usize) {
    match v {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline_indent(out, depth + 1);
                write_pretty(out, item, depth + 1);
            }
            newline_indent(out, depth);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            // Sorted here rather than relying on the map: serde_json's `preserve_order`
            // feature may be switched on by another crate in the build.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                newline_indent(out, depth + 1);
                write_str(out, key);
                out.push_str(": ");
                write_pretty(out, value, depth + 1);
            }
            newline_indent(out, depth);
            out.push('}');
        }
        scalar_or_empty => write_compact(out, scalar_or_empty),
    }
}

fn newline_indent(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("    ");
    }
}

pub(crate) fn write_compact(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_compact(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (key, value)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, key);
                out.push_str(": ");
                write_compact(out, value);
            }
            out.push('}');
        }
    }
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(u) = n.as_u64() {
        let _ = write!(out, "{u}");
    } else if let Some(i) = n.as_i64() {
        let _ = write!(out, "{i}");
    } else if let Some(f) = n.as_f64() {
        write_float(out, f);
    } else {
        // Only reachable with serde_json's arbitrary_precision feature, whose numbers
        // keep their source text.
        out.push_str(&n.to_string());
    }
}

/// Python `float.__repr__` as `json` uses it: the shortest digits that round-trip,
/// positional notation when the decimal exponent is in `-4..16`, otherwise `d.ddde±XX`.
fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    // serde_json prints floats with Ryu: the shortest digits that round-trip, the closest
    // to the exact value, ties to even, which is what CPython's `repr` picks too (Rust's
    // `{:e}` breaks ties upwards: 1012128239658013.25 would print as ...013.3). Only the
    // layout differs, so take Ryu's digits and lay them out the Python way.
    let ryu = Number::from_f64(f)
        .map(|n| n.to_string())
        .unwrap_or_default();
    let (negative, ryu) = match ryu.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, ryu.as_str()),
    };
    let (mantissa, exp) = ryu.split_once(['e', 'E']).unwrap_or((ryu, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = format!("{int_part}{frac_part}");
    let significant = all.trim_start_matches('0');
    // Python's `decpt`: the value is 0.DIGITS * 10^decpt.
    let mut decpt = int_part.len() as i32 + exp - (all.len() - significant.len()) as i32;
    let mut digits = significant.trim_end_matches('0').to_owned();
    if digits.is_empty() {
        digits.push('0');
        decpt = 1;
    }
    if negative {
        out.push('-');
    }
    let n = digits.len() as i32;
    if decpt <= -4 || decpt > 16 {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let e = decpt - 1;
        let _ = write!(
            out,
            "e{}{:02}",
            if e < 0 { '-' } else { '+' },
            e.unsigned_abs()
        );
    } else if decpt <= 0 {
        out.push_str("0.");
        for _ in 0..-decpt {
            out.push('0');
        }
        out.push_str(&digits);
    } else if decpt < n {
        let (int_part, frac) = digits.split_at(decpt as usize);
        out.push_str(int_part);
        out.push('.');
        out.push_str(frac);
    } else {
        out.push_str(&digits);
        for _ in 0..decpt - n {
            out.push('0');
        }
        out.push_str(".0");
    }
}

pub(crate) fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// The key that marks a 3.x custom value inside a json sample.
pub const CUSTOM_TYPE_KEY: &str = "_hub_custom_type";

/// A value 3.x nests in json samples that plain JSON cannot hold.
#[derive(Clone, Debug, PartialEq)]
pub enum CustomValue {
    /// `numpy.ndarray`.
    NdArray(NdArray),
    /// Python `bytes`.
    Bytes(Vec<u8>),
    /// A `deeplake.read(...)` sample kept in its file encoding (`compression` as 3.x
    /// names it, e.g. `"jpeg"`).
    Sample { bytes: Vec<u8>, compression: String },
}

/// The `_hub_custom_type` tag of `v`, if `v` is a tagged object.
pub fn custom_type(v: &Value) -> Option<&str> {
    v.as_object()?.get(CUSTOM_TYPE_KEY)?.as_str()
}

/// Decodes `v` if it is a tagged custom value; `Ok(None)` for any other value (3.x
/// leaves objects with an unknown tag as plain dicts, and so do we).
pub fn decode_custom(v: &Value) -> Result<Option<CustomValue>, Corruption> {
    let Some(map) = v.as_object() else {
        return Ok(None);
    };
    match map.get(CUSTOM_TYPE_KEY).and_then(Value::as_str) {
        Some("ndarray") => decode_ndarray(map).map(|a| Some(CustomValue::NdArray(a))),
        Some("bytes") => Ok(Some(CustomValue::Bytes(base64_field(map, "bytes")?))),
        Some("Sample") => {
            let bytes = base64_field(map, "Sample")?;
            let compression = map
                .get("compression")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    Corruption::new("json Sample value: missing string \"compression\"")
                })?
                .to_owned();
            Ok(Some(CustomValue::Sample { bytes, compression }))
        }
        _ => Ok(None),
    }
}

fn base64_field(map: &Map<String, Value>, what: &str) -> Result<Vec<u8>, Corruption> {
    let data = map
        .get("data")
        .and_then(Value::as_str)
        .ok_or_else(|| Corruption::new(format!("json {what} value: missing string \"data\"")))?;
    BASE64
        .decode(data)
        .map_err(|e| Corruption::new(format!("json {what} value: bad base64 in \"data\": {e}")))
}

fn decode_ndarray(map: &Map<String, Value>) -> Result<NdArray, Corruption> {
    let err = |m: &str| Corruption::new(format!("json ndarray value: {m}"));
    let typestr = map
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or_else(|| err("missing string \"dtype\""))?;
    let (order, code) = match typestr.as_bytes().first() {
        Some(b'<' | b'>' | b'|' | b'=') => typestr.split_at(1),
        _ => ("", typestr),
    };
    let dtype = Dtype::ALL
        .into_iter()
        .find(|d| &d.typestr()[1..] == code)
        .ok_or_else(|| err(&format!("unsupported dtype {typestr:?}")))?;
    let shape = map
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| err("missing array \"shape\""))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| err("\"shape\" holds a non-integer or negative dimension"))?;
    let mut data = base64_field(map, "ndarray")?;
    let expected = shape
        .iter()
        .try_fold(dtype.size(), |acc, d| acc.checked_mul(*d))
        .ok_or_else(|| err("shape overflows"))?;
    if data.len() != expected {
        return Err(err(&format!(
            "shape {shape:?} of {typestr} needs {expected} bytes, \"data\" holds {}",
            data.len()
        )));
    }
    if order == ">" && dtype.size() > 1 {
        for element in data.chunks_exact_mut(dtype.size()) {
            element.reverse();
        }
    }
    NdArray::new(dtype, shape, data).map_err(|e| err(&e.to_string()))
}

/// The tagged object 3.x writes for a numpy array inside a json sample.
pub fn ndarray_to_value(arr: &NdArray) -> Value {
    let mut map = Map::new();
    map.insert(CUSTOM_TYPE_KEY.to_owned(), Value::from("ndarray"));
    map.insert("data".to_owned(), Value::from(BASE64.encode(&arr.data)));
    map.insert(
        "shape".to_owned(),
        Value::from(arr.shape.iter().map(|d| *d as u64).collect::<Vec<u64>>()),
    );
    map.insert("dtype".to_owned(), Value::from(arr.dtype.typestr()));
    Value::Object(map)
}

/// The tagged object 3.x writes for Python `bytes` inside a json sample.
pub fn bytes_to_value(bytes: &[u8]) -> Value {
    let mut map = Map::new();
    map.insert(CUSTOM_TYPE_KEY.to_owned(), Value::from("bytes"));
    map.insert("data".to_owned(), Value::from(BASE64.encode(bytes)));
    Value::Object(map)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn floats() -> Value {
        json!([
            1.0,
            0.1,
            1e-05,
            0.0001,
            1e+20,
            1e16,
            1e15,
            123456789.125,
            1.5e-300,
            1.7976931348623157e308,
            5e-324,
            -2.5,
            0.0,
            -0.0,
            1234567890123456.8,
            12345678901234567.0,
            100.0,
            6.02214,
            2.5e-5,
            0.001,
            1e23
        ])
    }

    fn tricky() -> Value {
        json!({
            "floats": floats(),
            "ints": [0, -1, u64::MAX, i64::MIN, 9007199254740993u64],
            "strs": ["", "ascii", "tab\there\r\n\u{8}\u{c}", "\u{2028}", "日本", "😀", "\u{0}", "\u{1f}", "\u{7f}", "\u{80}", "~", "q\"b\\s/"],
            "keys": {"b": 1, "B": 2, "á": 3, "a": 4, "_": 5, "10": 6, "9": 7, "😀": 8, "\u{ffff}": 9},
            "empty_list": [],
            "empty_obj": {},
            "nested": [[], [{}], {"x": [null, true, false]}],
            "null": null
        })
    }

    /// `json.dumps(v, sort_keys=True, indent=4)` of the same value, from CPython 3.11.
    const PRETTY: &str = r#"{
    "empty_list": [],
    "empty_obj": {},
    "floats": [
        1.0,
        0.1,
        1e-05,
        0.0001,
        1e+20,
        1e+16,
        1000000000000000.0,
        123456789.125,
        1.5e-300,
        1.7976931348623157e+308,
        5e-324,
        -2.5,
        0.0,
        -0.0,
        1234567890123456.8,
        1.2345678901234568e+16,
        100.0,
        6.02214,
        2.5e-05,
        0.001,
        1e+23
    ],
    "ints": [
        0,
        -1,
        18446744073709551615,
        -9223372036854775808,
        9007199254740993
    ],
    "keys": {
        "10": 6,
        "9": 7,
        "B": 2,
        "_": 5,
        "a": 4,
        "b": 1,
        "\u00e1": 3,
        "\uffff": 9,
        "\ud83d\ude00": 8
    },
    "nested": [
        [],
        [
            {}
        ],
        {
            "x": [
                null,
                true,
                false
            ]
        }
    ],
    "null": null,
    "strs": [
        "",
        "ascii",
        "tab\there\r\n\b\f",
        "\u2028",
        "\u65e5\u672c",
        "\ud83d\ude00",
        "\u0000",
        "\u001f",
        "\u007f",
        "\u0080",
        "~",
        "q\"b\\s/"
    ]
}"#;

    /// `json.dumps(v, sort_keys=True)` (serde_json maps iterate sorted here).
    const COMPACT: &str = r#"{"empty_list": [], "empty_obj": {}, "floats": [1.0, 0.1, 1e-05, 0.0001, 1e+20, 1e+16, 1000000000000000.0, 123456789.125, 1.5e-300, 1.7976931348623157e+308, 5e-324, -2.5, 0.0, -0.0, 1234567890123456.8, 1.2345678901234568e+16, 100.0, 6.02214, 2.5e-05, 0.001, 1e+23], "ints": [0, -1, 18446744073709551615, -9223372036854775808, 9007199254740993], "keys": {"10": 6, "9": 7, "B": 2, "_": 5, "a": 4, "b": 1, "\u00e1": 3, "\uffff": 9, "\ud83d\ude00": 8}, "nested": [[], [{}], {"x": [null, true, false]}], "null": null, "strs": ["", "ascii", "tab\there\r\n\b\f", "\u2028", "\u65e5\u672c", "\ud83d\ude00", "\u0000", "\u001f", "\u007f", "\u0080", "~", "q\"b\\s/"]}"#;

    #[test]
    fn pretty_matches_python() {
        assert_eq!(String::from_utf8(to_pretty(&tricky())).unwrap(), PRETTY);
    }

    #[test]
    fn compact_matches_python() {
        assert_eq!(String::from_utf8(to_compact(&tricky())).unwrap(), COMPACT);
    }

    #[test]
    fn scalars_and_empty_containers() {
        assert_eq!(to_pretty(&json!([])), b"[]");
        assert_eq!(to_pretty(&json!({})), b"{}");
        assert_eq!(to_pretty(&json!(null)), b"null");
        assert_eq!(to_pretty(&json!("é")), br#""\u00e9""#);
        assert_eq!(to_compact(&json!([1, [2, {}]])), b"[1, [2, {}]]");
    }

    #[test]
    fn non_finite_floats_do_not_panic() {
        let mut s = String::new();
        write_float(&mut s, f64::INFINITY);
        write_float(&mut s, f64::NEG_INFINITY);
        write_float(&mut s, f64::NAN);
        assert_eq!(s, "Infinity-InfinityNaN");
    }

    #[test]
    fn float_repr_boundaries() {
        let cases = [
            (1e16, "1e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (0.00001, "1e-05"),
            (1.5e100, "1.5e+100"),
            (-1e-7, "-1e-07"),
            // A tie between two shortest candidates: CPython rounds half to even.
            (1012128239658013.0 + 0.25, "1012128239658013.2"),
            (-884081604317110.0 - 0.25, "-884081604317110.2"),
        ];
        for (f, want) in cases {
            let mut s = String::new();
            write_float(&mut s, f);
            assert_eq!(s, want, "{f}");
        }
    }

    /// The json chunk payload 3.9.52 wrote for
    /// `{"a": np.arange(3, dtype="float32"), "b": b"\x00\x01hi", "c": "é"}`.
    const SAMPLE_3X: &str = r#"{"a": {"_hub_custom_type": "ndarray", "data": "AAAAAAAAgD8AAABA", "shape": [3], "dtype": "<f4"}, "b": {"_hub_custom_type": "bytes", "data": "AAFoaQ=="}, "c": "\u00e9"}"#;

    #[test]
    fn decodes_custom_values_written_by_3x() {
        let v: Value = serde_json::from_str(SAMPLE_3X).unwrap();
        let a = decode_custom(&v["a"]).unwrap().unwrap();
        assert_eq!(
            a,
            CustomValue::NdArray(NdArray::from_slice(vec![3], &[0f32, 1.0, 2.0]).unwrap())
        );
        assert_eq!(
            decode_custom(&v["b"]).unwrap(),
            Some(CustomValue::Bytes(b"\x00\x01hi".to_vec()))
        );
        assert_eq!(decode_custom(&v["c"]).unwrap(), None);
        assert_eq!(decode_custom(&v).unwrap(), None);
        assert_eq!(custom_type(&v["a"]), Some("ndarray"));
    }

    #[test]
    fn builds_custom_values_that_round_trip() {
        let arr = NdArray::from_slice(vec![2, 2], &[1i16, -2, 3, 4]).unwrap();
        let v = ndarray_to_value(&arr);
        assert_eq!(v["dtype"], "<i2");
        assert_eq!(v["shape"], json!([2, 2]));
        assert_eq!(decode_custom(&v).unwrap(), Some(CustomValue::NdArray(arr)));
        let v = bytes_to_value(b"\x00\x01hi");
        assert_eq!(v, json!({"_hub_custom_type": "bytes", "data": "AAFoaQ=="}));
        let s = json!({"_hub_custom_type": "Sample", "data": "/9j/", "compression": "jpeg"});
        assert_eq!(
            decode_custom(&s).unwrap(),
            Some(CustomValue::Sample {
                bytes: vec![0xff, 0xd8, 0xff],
                compression: "jpeg".into()
            })
        );
    }

    #[test]
    fn big_endian_and_bool_arrays() {
        let v = json!({"_hub_custom_type": "ndarray", "data": BASE64.encode([0u8, 1, 0, 2]), "shape": [2], "dtype": ">u2"});
        let Some(CustomValue::NdArray(a)) = decode_custom(&v).unwrap() else {
            panic!()
        };
        assert_eq!(a, NdArray::from_slice(vec![2], &[1u16, 2]).unwrap());
        let v =
            json!({"_hub_custom_type": "ndarray", "data": "AQA=", "shape": [2], "dtype": "|b1"});
        let Some(CustomValue::NdArray(a)) = decode_custom(&v).unwrap() else {
            panic!()
        };
        assert_eq!(a, NdArray::from_slice(vec![2], &[true, false]).unwrap());
    }

    #[test]
    fn malformed_custom_values_are_errors() {
        let bad = [
            json!({"_hub_custom_type": "ndarray", "data": "AAAA", "shape": [3], "dtype": "<f4"}),
            json!({"_hub_custom_type": "ndarray", "data": "AAAA", "shape": [-1], "dtype": "|u1"}),
            json!({"_hub_custom_type": "ndarray", "data": "AAAA", "shape": [3], "dtype": "<U1"}),
            json!({"_hub_custom_type": "ndarray", "data": "!!", "shape": [1], "dtype": "|u1"}),
            json!({"_hub_custom_type": "ndarray", "data": "", "shape": [u64::MAX, u64::MAX], "dtype": "|u1"}),
            json!({"_hub_custom_type": "ndarray", "shape": [0], "dtype": "|u1"}),
            json!({"_hub_custom_type": "bytes"}),
            json!({"_hub_custom_type": "Sample", "data": ""}),
        ];
        for v in bad {
            assert!(decode_custom(&v).is_err(), "{v}");
        }
        assert_eq!(
            decode_custom(&json!({"_hub_custom_type": "other"})).unwrap(),
            None
        );
    }
}
