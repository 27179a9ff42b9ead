//! Request bodies read as JSON strictly, in one place for every endpoint: a key given twice in
//! one object is refused (serde_json would keep the last one silently), and `-0` is read as 0.

use std::cell::RefCell;
use std::fmt;

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;
use serde_json::{Map, Number, Value};

use super::answer::ApiError;

/// Reads `body` as one JSON value. A duplicate key is refused with 400 naming the key (the
/// first one met, at any depth); other malformed JSON with 400 on `body`.
pub(crate) fn read_strict(body: &[u8]) -> Result<Value, ApiError> {
    let duplicate = RefCell::new(None);
    let mut reader = serde_json::Deserializer::from_slice(body);
    let read = Strict {
        duplicate: &duplicate,
    }
    .deserialize(&mut reader)
    .and_then(|value| reader.end().map(|()| value));
    read.map_err(|e| match duplicate.take() {
        Some(key) => ApiError::bad_request(&key, format!("duplicate key {key:?}")),
        None => ApiError::bad_request("body", format!("invalid JSON: {e}")),
    })
}

/// Builds a [`Value`] as serde_json's own reader does, but notes the first duplicate key in
/// `duplicate` (and stops there) and turns `-0.0` into `0`.
#[derive(Clone, Copy)]
struct Strict<'a> {
    duplicate: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, reader: D) -> Result<Value, D::Error> {
        reader.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        // `-0` and `-0.0` are 0: no negative zero reaches a handler, an answer or the audit.
        if v == 0.0 {
            return Ok(Value::from(0u64));
        }
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} is not a finite number")))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, reader: D) -> Result<Value, D::Error> {
        reader.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let message = format!("duplicate key {key:?}");
                *self.duplicate.borrow_mut() = Some(key);
                return Err(A::Error::custom(message));
            }
            let value = map.next_value_seed(self)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_twice_is_refused_by_name() {
        let e = read_strict(br#"{"percent": 10, "percent": 90}"#).expect_err("refused");
        assert_eq!(e.status.as_u16(), 400);
        assert_eq!(e.field.as_deref(), Some("percent"));
        assert_eq!(e.message, r#"duplicate key "percent""#);
        // At any depth, and through escapes that spell the same key.
        let e = read_strict(br#"{"a": [{"x": 1, "y": 2, "x": 3}]}"#).expect_err("refused");
        assert_eq!(e.field.as_deref(), Some("x"));
        let e = read_strict(br#"{"add": [], "\u0061dd": []}"#).expect_err("refused");
        assert_eq!(e.field.as_deref(), Some("add"));
        // The same key in two objects is no duplicate.
        let ok = read_strict(br#"{"a": {"x": 1}, "b": {"x": 2}}"#).expect("accepted");
        assert_eq!(ok["b"]["x"], 2);
    }

    #[test]
    fn negative_zero_reads_as_zero_and_numbers_are_kept() {
        for zero in ["-0", "-0.0", "0", "0.0", "-0e3"] {
            let v = read_strict(format!(r#"{{"p": {zero}}}"#).as_bytes()).expect(zero);
            assert_eq!(v["p"], Value::from(0u64), "{zero}");
            assert!(!v.to_string().contains('-'), "{zero}: {v}");
        }
        let v = read_strict(br#"{"p": 2.5, "n": -3, "b": true, "s": "x", "z": null}"#)
            .expect("accepted");
        assert_eq!(v["p"], 2.5);
        assert_eq!(v["n"], -3);
        assert_eq!(
            v,
            serde_json::json!({"p": 2.5, "n": -3, "b": true, "s": "x", "z": null})
        );
    }

    #[test]
    fn malformed_json_is_refused_on_the_body() {
        for bad in [&b"nope"[..], b"{\"a\": 1", b"{} {}", b""] {
            let e = read_strict(bad).expect_err("refused");
            assert_eq!(e.field.as_deref(), Some("body"), "{bad:?}");
            assert!(e.message.starts_with("invalid JSON: "), "{}", e.message);
        }
    }
}
