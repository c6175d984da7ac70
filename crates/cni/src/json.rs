//! JSON decoding with Go's field matching.
//!
//! Runtimes and the reference plugins are written in Go, whose `encoding/json` matches an object key
//! to a struct field exactly if it can and otherwise case-insensitively: `"HostPort"`, `"hostport"`
//! and `"hostPort"` all fill `hostPort`. Configs in the wild depend on that, so plugin configs are
//! decoded through [`from_value`], which folds keys onto the field names serde asks for. Maps that
//! are not structs (`runtimeConfig` as a whole, `args`) keep their keys as they are, as in Go.
//!
//! Failures name the path to the offending value (`ipam.ranges[0][1].subnet: ...`) and carry
//! code 6 (decoding failure).

use crate::error::Error;
use serde::de::{self, DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Decodes `value` into `T`, matching struct fields as Go does.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(Folding(value)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." { Error::decode(inner.to_string()) } else { Error::decode(format!("{path}: {inner}")) }
    })
}

/// Parses bytes as JSON, then decodes like [`from_value`].
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| Error::decode(e.to_string()))?;
    from_value(&value)
}

/// Whether two keys are equal under Go's case folding (ASCII plus the Kelvin sign, which is all a
/// field name written in ASCII can fold to).
fn fold_eq(a: &str, b: &str) -> bool {
    a.chars().flat_map(char::to_lowercase).eq(b.chars().flat_map(char::to_lowercase))
}

/// A borrowed JSON value that deserializes structs with Go's key folding.
struct Folding<'a>(&'a Value);

impl<'de> de::Deserializer<'de> for Folding<'de> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => de::Deserializer::deserialize_any(n, visitor),
            Value::String(s) => visitor.visit_borrowed_str(s),
            Value::Array(items) => visit_array(items, visitor),
            Value::Object(map) => visitor.visit_map(FoldingMap::new(map, &[])),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(map) => visitor.visit_map(FoldingMap::new(map, fields)),
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        de::Deserializer::deserialize_enum(self.0, name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(_) => de::Unexpected::Other("number"),
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

fn visit_array<'de, V: Visitor<'de>>(items: &'de [Value], visitor: V) -> Result<V::Value, serde_json::Error> {
    let mut seq = FoldingSeq { items: items.iter() };
    let value = visitor.visit_seq(&mut seq)?;
    match seq.items.len() {
        0 => Ok(value),
        _ => Err(de::Error::invalid_length(items.len(), &"fewer elements in array")),
    }
}

struct FoldingSeq<'de> {
    items: std::slice::Iter<'de, Value>,
}

impl<'de> SeqAccess<'de> for FoldingSeq<'de> {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Self::Error> {
        self.items.next().map(|v| seed.deserialize(Folding(v))).transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct FoldingMap<'de> {
    entries: std::vec::IntoIter<(&'de str, &'de Value)>,
    pending: Option<&'de Value>,
}

impl<'de> FoldingMap<'de> {
    /// Renames each key that folds onto one of `fields` to that field's exact name. Where two keys
    /// land on one field, the later one in the document wins, as in Go (`"bridge":"a",
    /// "Bridge":"b"` is `b`); serde_json keeps document order for that (`preserve_order`).
    ///
    /// Only keys that land on a field can collide (the map's keys are distinct), so where each
    /// field's key went is kept by field: an object of 200,000 keys costs 200,000 steps, not
    /// 200,000 squared.
    fn new(map: &'de Map<String, Value>, fields: &'static [&'static str]) -> FoldingMap<'de> {
        let mut entries: Vec<(&'de str, &'de Value)> = Vec::with_capacity(map.len());
        let mut slots: Vec<Option<usize>> = vec![None; fields.len()];
        for (key, value) in map {
            let exact = fields.iter().position(|f| *f == key.as_str());
            let Some(field) = exact.or_else(|| fields.iter().position(|f| fold_eq(f, key))) else {
                entries.push((key, value));
                continue;
            };
            match slots[field] {
                Some(i) => entries[i] = (fields[field], value),
                None => {
                    slots[field] = Some(entries.len());
                    entries.push((fields[field], value));
                }
            }
        }
        FoldingMap { entries: entries.into_iter(), pending: None }
    }
}

impl<'de> MapAccess<'de> for FoldingMap<'de> {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Self::Error> {
        match self.entries.next() {
            Some((key, value)) => {
                self.pending = Some(value);
                let key = de::value::BorrowedStrDeserializer::<serde_json::Error>::new(key);
                seed.deserialize(key).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Self::Error> {
        let value = self.pending.take().ok_or_else(|| de::Error::custom("value is missing"))?;
        seed.deserialize(Folding(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Mapping {
        host_port: u16,
        container_port: u16,
        #[serde(default)]
        protocol: String,
        #[serde(rename = "hostIP", default)]
        host_ip: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Conf {
        #[serde(default)]
        port_mappings: Vec<Mapping>,
        #[serde(default)]
        extra: std::collections::BTreeMap<String, Value>,
        #[serde(default)]
        is_gateway: bool,
    }

    #[test]
    fn folds_struct_keys_like_go() {
        let v = json!({
            "PortMappings": [
                {"HostPort": 8080, "ContainerPort": 80, "Protocol": "tcp", "HostIP": "127.0.0.1"},
                {"hostport": 53, "containerport": 53, "protocol": "udp"}
            ],
            "ISGATEWAY": true,
            "extra": {"KeepMe": 1}
        });
        let c: Conf = from_value(&v).unwrap();
        assert_eq!(c.port_mappings[0].host_port, 8080);
        assert_eq!(c.port_mappings[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(c.port_mappings[1].protocol, "udp");
        assert!(c.is_gateway);
        // Plain maps keep their keys.
        assert!(c.extra.contains_key("KeepMe"));
    }

    #[test]
    fn the_later_key_wins_as_in_go() {
        let c: Conf = from_slice(br#"{"isGateway": true, "IsGateway": false}"#).unwrap();
        assert!(!c.is_gateway);
        let c: Conf = from_slice(br#"{"ISGATEWAY": false, "isGateway": true}"#).unwrap();
        assert!(c.is_gateway);
        let c: Conf = from_slice(br#"{"isGateway": false, "isGateway": true}"#).unwrap();
        assert!(c.is_gateway);
    }

    #[test]
    fn errors_name_the_path() {
        let v = json!({"portMappings": [{"hostPort": 70000, "containerPort": 80}]});
        let e = from_value::<Conf>(&v).unwrap_err();
        assert_eq!(e.code, crate::Code::Decode);
        assert!(e.msg.starts_with("portMappings[0].hostPort: "), "{}", e.msg);

        let e = from_value::<Conf>(&json!({"isGateway": "yes"})).unwrap_err();
        assert!(e.msg.starts_with("isGateway: invalid type: string \"yes\""), "{}", e.msg);

        let e = from_value::<Conf>(&json!([1, 2])).unwrap_err();
        assert!(e.msg.contains("invalid type: sequence"), "{}", e.msg);
    }

    #[test]
    fn options_and_values_pass_through() {
        #[derive(Deserialize)]
        struct Holder {
            a: Option<u32>,
            raw: Value,
        }
        let h: Holder = from_value(&json!({"A": null, "RAW": {"X": [1, "two", null, 1.5]}})).unwrap();
        assert_eq!(h.a, None);
        assert_eq!(h.raw, json!({"X": [1, "two", null, 1.5]}));
    }

    #[test]
    fn from_slice_reports_syntax_errors_as_decode() {
        let e = from_slice::<Conf>(b"{\"isGateway\": ").unwrap_err();
        assert_eq!(e.code, crate::Code::Decode);
    }
}
