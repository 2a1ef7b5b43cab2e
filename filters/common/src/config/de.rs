//! A serde `Deserializer` over a parsed [`Value`] that records where an
//! error happened: each map and sequence level adds its key or index as the
//! error passes back up. It does what `serde_path_to_error` over
//! `serde_json::Value` did, with one instantiation of each config type's
//! visitor instead of a wrapper around every visitor, seed and access type:
//! the filters' wasm modules are ~35 KB smaller for it.
//!
//! Paths follow `serde_path_to_error`: a map key or struct field adds
//! `.key`, a sequence element `[i]`, an externally tagged enum's content
//! `.variant`; an unknown field or variant is reported at the unknown key.

use std::fmt;

use serde::de::{
    self, value::StringDeserializer, DeserializeSeed, Error as _, IntoDeserializer, Unexpected,
    Visitor,
};
use serde::forward_to_deserialize_any;
use serde_json::{Map, Value};

/// One step of a path, innermost first while an error travels up.
#[derive(Debug)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// A deserialization error and the path it happened at.
#[derive(Debug)]
pub(super) struct DeError {
    /// Innermost segment first.
    rev_path: Vec<Seg>,
    pub(super) message: String,
}

impl DeError {
    fn at(mut self, seg: Seg) -> Self {
        self.rev_path.push(seg);
        self
    }

    /// `.a[0].b` (empty at the root).
    pub(super) fn path_suffix(&self) -> String {
        let mut out = String::new();
        for seg in self.rev_path.iter().rev() {
            match seg {
                Seg::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Seg::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
            }
        }
        out
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self {
            rev_path: Vec::new(),
            message: msg.to_string(),
        }
    }

    // serde's defaults print a float with core's float formatting (~11 KB
    // of wasm); serde_json's `Number` prints it with the code it already
    // has. `null` is spelled as JSON spells it.
    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "invalid type: {}, expected {exp}",
            Shown(unexp)
        ))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::custom(format_args!(
            "invalid value: {}, expected {exp}",
            Shown(unexp)
        ))
    }
}

struct Shown<'a>(Unexpected<'a>);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Unexpected::Float(v) => match serde_json::Number::from_f64(v) {
                Some(n) => write!(f, "floating point `{n}`"),
                None => f.write_str("floating point number"),
            },
            Unexpected::Unit => f.write_str("null"),
            ref other => fmt::Display::fmt(other, f),
        }
    }
}

fn unexpected(v: &Value) -> Unexpected<'_> {
    match v {
        Value::Null => Unexpected::Unit,
        Value::Bool(b) => Unexpected::Bool(*b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Unexpected::Unsigned(u),
            (None, Some(i)) => Unexpected::Signed(i),
            _ => Unexpected::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Unexpected::Str(s),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

/// Deserializes `T` from `value`.
pub(super) fn from_value<T: de::DeserializeOwned>(value: Value) -> Result<T, DeError> {
    T::deserialize(ValueDe(value))
}

struct ValueDe(Value);

/// "invalid type: …, expected …" for `v` (not generic: one copy).
fn invalid(v: &Value, expected: &dyn de::Expected) -> DeError {
    DeError::invalid_type(unexpected(v), expected)
}

fn visit_array<'de, V: Visitor<'de>>(a: Vec<Value>, visitor: V) -> Result<V::Value, DeError> {
    let len = a.len();
    let mut seq = SeqDe {
        iter: a.into_iter(),
        index: 0,
    };
    let out = visitor.visit_seq(&mut seq)?;
    if seq.iter.len() == 0 {
        Ok(out)
    } else {
        Err(DeError::invalid_length(len, &"fewer elements in array"))
    }
}

fn visit_object<'de, V: Visitor<'de>>(
    m: Map<String, Value>,
    visitor: V,
) -> Result<V::Value, DeError> {
    let len = m.len();
    let mut map = MapDe {
        iter: m.into_iter(),
        pending: None,
    };
    let out = visitor.visit_map(&mut map)?;
    if map.iter.len() == 0 {
        Ok(out)
    } else {
        Err(DeError::invalid_length(len, &"fewer elements in map"))
    }
}

fn visit_number<'de, V: Visitor<'de>>(
    n: &serde_json::Number,
    visitor: V,
) -> Result<V::Value, DeError> {
    match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => visitor.visit_u64(u),
        (None, Some(i)) => visitor.visit_i64(i),
        _ => visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN)),
    }
}

// Each method accepts only the JSON kinds its type can come from (what
// serde_json's own `Value` deserializer does): a config type's visitor is
// then compiled with the few `visit_*` paths it can take, not all of them.
impl<'de> de::Deserializer<'de> for ValueDe {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => visit_number(&n, visitor),
            Value::String(s) => visitor.visit_string(s),
            Value::Array(a) => visit_array(a, visitor),
            Value::Object(m) => visit_object(m, visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Bool(b) => visitor.visit_bool(b),
            other => Err(invalid(&other, &visitor)),
        }
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Number(n) => visit_number(&n, visitor),
            other => Err(invalid(&other, &visitor)),
        }
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::String(s) => visitor.visit_string(s),
            other => Err(invalid(&other, &visitor)),
        }
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_string(visitor)
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_string(visitor)
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            other => Err(invalid(&other, &visitor)),
        }
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Array(a) => visit_array(a, visitor),
            other => Err(invalid(&other, &visitor)),
        }
    }
    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Object(m) => visit_object(m, visitor),
            other => Err(invalid(&other, &visitor)),
        }
    }
    /// Only a JSON object makes a struct (serde_json would also take an
    /// array of the fields in order; no config is written that way).
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match self.0 {
            Value::String(s) => {
                let unit: StringDeserializer<DeError> = s.into_deserializer();
                visitor.visit_enum(unit)
            }
            Value::Object(m) if m.len() == 1 => match m.into_iter().next() {
                Some((variant, value)) => visitor.visit_enum(EnumDe { variant, value }),
                None => Err(DeError::custom("expected one key")),
            },
            Value::Object(_) => Err(DeError::invalid_value(
                Unexpected::Map,
                &"map with a single key",
            )),
            other => Err(invalid(&other, &"string or map")),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        i128 u128 bytes byte_buf
    }
}

struct SeqDe {
    iter: std::vec::IntoIter<Value>,
    index: usize,
}

impl<'de> de::SeqAccess<'de> for SeqDe {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(value) = self.iter.next() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        seed.deserialize(ValueDe(value))
            .map(Some)
            .map_err(|e| e.at(Seg::Index(index)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapDe {
    iter: <Map<String, Value> as IntoIterator>::IntoIter,
    /// The key just given out and its value, for `next_value_seed`.
    pending: Option<(String, Value)>,
}

impl<'de> de::MapAccess<'de> for MapDe {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.iter.next() else {
            return Ok(None);
        };
        let de: StringDeserializer<DeError> = key.clone().into_deserializer();
        match seed.deserialize(de) {
            Ok(k) => {
                self.pending = Some((key, value));
                Ok(Some(k))
            }
            Err(e) => Err(e.at(Seg::Key(key))),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, value)) = self.pending.take() else {
            return Err(DeError::custom("value is missing"));
        };
        seed.deserialize(ValueDe(value))
            .map_err(|e| e.at(Seg::Key(key)))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct EnumDe {
    variant: String,
    value: Value,
}

impl<'de> de::EnumAccess<'de> for EnumDe {
    type Error = DeError;
    type Variant = VariantDe;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, VariantDe), DeError> {
        let de: StringDeserializer<DeError> = self.variant.clone().into_deserializer();
        let v = seed.deserialize(de)?;
        Ok((
            v,
            VariantDe {
                variant: self.variant,
                value: self.value,
            },
        ))
    }
}

struct VariantDe {
    variant: String,
    value: Value,
}

impl<'de> de::VariantAccess<'de> for VariantDe {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match self.value {
            Value::Null => Ok(()),
            other => Err(DeError::invalid_type(unexpected(&other), &"unit variant")
                .at(Seg::Key(self.variant))),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(ValueDe(self.value))
            .map_err(|e| e.at(Seg::Key(self.variant)))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(ValueDe(self.value), visitor)
            .map_err(|e| e.at(Seg::Key(self.variant)))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(ValueDe(self.value), visitor)
            .map_err(|e| e.at(Seg::Key(self.variant)))
    }
}
