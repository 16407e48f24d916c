//! Counters and settings in log lines as `key=value` pairs (logfmt), the way people and
//! log shippers read them, instead of Rust's `Debug` form (`TailStats { files_followed: 1,
//! … }`).
//!
//! A small `serde` serializer (not `serde_json::Value`, whose maps are sorted): the pairs
//! keep the struct's field order, which groups related counters.

use std::fmt::Write as _;

use serde::Serialize;
use serde::ser::{self, Impossible};

/// `value` (a struct of counters) as `key=value` pairs separated by spaces, in field
/// order. Nested structs and lists of structs get dotted keys (`channels.0.events=3`);
/// lists of plain values are joined with commas; absent values (`None`) are left out; a
/// value with a space, `=`, a quote or nothing in it is quoted as a JSON string.
pub fn logfmt<T: Serialize + ?Sized>(value: &T) -> String {
    let mut w = Writer {
        out: String::new(),
        path: Vec::new(),
        pairs: 0,
    };
    if let Err(e) = value.serialize(&mut w) {
        w.path.clear();
        w.pair("error", &e.0);
    }
    w.out
}

struct Writer {
    out: String,
    path: Vec<String>,
    /// Pairs written.
    pairs: usize,
}

impl Writer {
    fn pair(&mut self, last: &str, text: &str) {
        if !self.out.is_empty() {
            self.out.push(' ');
        }
        self.pairs += 1;
        let mut key = self.path.join(".");
        if !last.is_empty() {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(last);
        }
        let _ = write!(self.out, "{key}={}", quoted(text));
    }

    fn scalar(&mut self, text: &str) -> Result<(), Error> {
        self.pair("", text);
        Ok(())
    }
}

/// `s` as it is when it needs no quotes, else as a JSON string.
fn quoted(s: &str) -> String {
    if s.is_empty()
        || s.chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '=' | '"'))
    {
        serde_json::to_string(s).unwrap_or_default()
    } else {
        s.to_owned()
    }
}

/// What cannot be written as pairs (maps with keys that are not text, and the like).
#[derive(Debug)]
struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

macro_rules! display_scalars {
    ($($f:ident: $t:ty),*) => {
        $(fn $f(self, v: $t) -> Result<(), Error> {
            self.scalar(&v.to_string())
        })*
    };
}

impl<'a> ser::Serializer for &'a mut Writer {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Seq<'a>;
    type SerializeTuple = Seq<'a>;
    type SerializeTupleStruct = Seq<'a>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), Error>;

    display_scalars!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16,
        serialize_i32: i32, serialize_i64: i64, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_f32: f32, serialize_f64: f64,
        serialize_char: char, serialize_str: &str);

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        self.scalar(&String::from_utf8_lossy(v))
    }
    fn serialize_none(self) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, v: &'static str) -> Result<(), Error> {
        self.scalar(v)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Seq<'a>, Error> {
        Ok(Seq {
            w: self,
            plain: Vec::new(),
            nested: 0,
        })
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Seq<'a>, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(Error("a tuple variant".into()))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(Error("a map".into()))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Error> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(Error("a struct variant".into()))
    }
}

impl ser::SerializeStruct for &mut Writer {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.path.push(key.to_owned());
        let r = value.serialize(&mut **self);
        self.path.pop();
        r
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

/// A list: plain values are collected and written joined by commas; structs inside are
/// written under their index.
struct Seq<'a> {
    w: &'a mut Writer,
    plain: Vec<String>,
    nested: usize,
}

impl Seq<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        // Written on a scratch writer: a plain value comes back as "=text".
        let mut probe = Writer {
            out: String::new(),
            path: Vec::new(),
            pairs: 0,
        };
        value.serialize(&mut probe)?;
        if let Some(text) = probe.out.strip_prefix('=').filter(|_| probe.pairs == 1) {
            let text: String = if text.starts_with('"') {
                serde_json::from_str(text).unwrap_or_default()
            } else {
                text.to_owned()
            };
            self.plain.push(text);
        } else {
            self.w.path.push(self.nested.to_string());
            let r = value.serialize(&mut *self.w);
            self.w.path.pop();
            r?;
        }
        self.nested += 1;
        Ok(())
    }

    fn finish(self) -> Result<(), Error> {
        if !self.plain.is_empty() {
            let joined = self.plain.join(",");
            self.w.scalar(&joined)?;
        }
        Ok(())
    }
}

impl ser::SerializeSeq for Seq<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeTuple for Seq<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Seq<'_> {
    type Ok = ();
    type Error = Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.element(value)
    }
    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Channel {
        name: &'static str,
        events: u64,
    }

    #[derive(Serialize)]
    struct Stats {
        files_followed: usize,
        records: u64,
        last_error: Option<String>,
        queue_error: Option<String>,
        paths: Vec<&'static str>,
        channels: Vec<Channel>,
        ok: bool,
    }

    #[test]
    fn counters_become_key_value_pairs_in_field_order() {
        let s = Stats {
            files_followed: 1,
            records: 20,
            last_error: Some("connection refused (os error 111)".into()),
            queue_error: None,
            paths: vec!["/var/log/a.log", "/var/log/b c.log"],
            channels: vec![
                Channel {
                    name: "Security",
                    events: 3,
                },
                Channel {
                    name: "System",
                    events: 0,
                },
            ],
            ok: true,
        };
        assert_eq!(
            logfmt(&s),
            "files_followed=1 records=20 last_error=\"connection refused (os error 111)\" \
             paths=\"/var/log/a.log,/var/log/b c.log\" channels.0.name=Security \
             channels.0.events=3 channels.1.name=System channels.1.events=0 ok=true"
        );
        let empty: Vec<u8> = Vec::new();
        assert_eq!(logfmt(&empty), "");
    }
}
