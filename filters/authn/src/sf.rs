//! RFC 8941 Structured Field Values: the dictionaries RFC 9421
//! (`Signature-Input`, `Signature`) and RFC 9530 (`Content-Digest`) use.
//! A strict parser (anything the RFC's parsing algorithm rejects is an
//! error, never a guess) and the serializer `@signature-params` needs.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// Standard alphabet, padding optional.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A bare item (RFC 8941 §3.3).
#[derive(Debug, Clone, PartialEq)]
pub enum Bare {
    Integer(i64),
    /// Kept as its text (serialized back unchanged; never compared).
    Decimal(String),
    String(String),
    Token(String),
    Bytes(Vec<u8>),
    Boolean(bool),
}

pub type Params = Vec<(String, Bare)>;

/// A dictionary member's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Member {
    Item(Bare, Params),
    Inner(Vec<(Bare, Params)>, Params),
}

pub type Dictionary = Vec<(String, Member)>;

/// Longest field value parsed: bigger ones are refused, not scanned.
pub const MAX_FIELD: usize = 16 * 1024;
/// Most dictionary members, inner-list items and parameters per item
/// parsed (duplicates are found by a scan: the caps keep it linear in
/// practice; real signatures have a handful).
pub const MAX_MEMBERS: usize = 32;
pub const MAX_ITEMS: usize = 64;
pub const MAX_PARAMS: usize = 16;

struct P<'a> {
    s: &'a [u8],
    i: usize,
}

type R<T> = Result<T, &'static str>;

impl P<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn bump(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }
    fn sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }
    fn ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn key(&mut self) -> R<String> {
        match self.peek() {
            Some(c) if c.is_ascii_lowercase() || c == b'*' => {}
            _ => return Err("a key must start with a lower-case letter or `*`"),
        }
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.*".contains(&c) {
                self.i += 1;
            } else {
                break;
            }
        }
        Ok(String::from_utf8_lossy(self.s.get(start..self.i).unwrap_or_default()).into_owned())
    }

    fn params(&mut self) -> R<Params> {
        let mut out: Params = Vec::new();
        while self.peek() == Some(b';') {
            self.i += 1;
            self.sp();
            let k = self.key()?;
            let v = if self.peek() == Some(b'=') {
                self.i += 1;
                self.bare()?
            } else {
                Bare::Boolean(true)
            };
            // RFC 8941: a later duplicate overwrites the earlier one.
            if let Some(slot) = out.iter_mut().find(|(x, _)| *x == k) {
                slot.1 = v;
            } else if out.len() < MAX_PARAMS {
                out.push((k, v));
            } else {
                return Err("too many parameters");
            }
        }
        Ok(out)
    }

    fn bare(&mut self) -> R<Bare> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'"') => self.string(),
            Some(b':') => self.bytes(),
            Some(b'?') => {
                self.i += 1;
                match self.bump() {
                    Some(b'1') => Ok(Bare::Boolean(true)),
                    Some(b'0') => Ok(Bare::Boolean(false)),
                    _ => Err("a boolean is ?0 or ?1"),
                }
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'*' => self.token(),
            _ => Err("expected an item"),
        }
    }

    fn number(&mut self) -> R<Bare> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let digits = self.i;
        let mut dot = None;
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                self.i += 1;
            } else if c == b'.' && dot.is_none() {
                if self.i - digits > 12 {
                    return Err("a decimal has at most 12 integer digits");
                }
                dot = Some(self.i);
                self.i += 1;
            } else {
                break;
            }
            if dot.is_none() && self.i - digits > 15 {
                return Err("an integer has at most 15 digits");
            }
            if dot.is_some() && self.i - digits > 16 {
                return Err("a decimal is too long");
            }
        }
        let text = std::str::from_utf8(self.s.get(start..self.i).unwrap_or_default())
            .map_err(|_| "bad number")?;
        if self.i == digits {
            return Err("expected digits");
        }
        match dot {
            None => text
                .parse::<i64>()
                .map(Bare::Integer)
                .map_err(|_| "bad integer"),
            Some(d) => {
                let frac = self.i - d - 1;
                if frac == 0 || frac > 3 {
                    return Err("a decimal has 1 to 3 fractional digits");
                }
                Ok(Bare::Decimal(text.to_string()))
            }
        }
    }

    fn string(&mut self) -> R<Bare> {
        self.i += 1;
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err("unterminated string"),
                Some(b'"') => return Ok(Bare::String(out)),
                Some(b'\\') => match self.bump() {
                    Some(c @ (b'"' | b'\\')) => out.push(char::from(c)),
                    _ => return Err("bad escape in a string"),
                },
                Some(c) if (0x20..0x7f).contains(&c) => out.push(char::from(c)),
                Some(_) => return Err("a string holds printable ASCII only"),
            }
        }
    }

    fn token(&mut self) -> R<Bare> {
        let start = self.i;
        self.i += 1;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&c) {
                self.i += 1;
            } else {
                break;
            }
        }
        Ok(Bare::Token(
            String::from_utf8_lossy(self.s.get(start..self.i).unwrap_or_default()).into_owned(),
        ))
    }

    fn bytes(&mut self) -> R<Bare> {
        self.i += 1;
        let start = self.i;
        while let Some(c) = self.peek() {
            if c == b':' {
                break;
            }
            if !(c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=') {
                return Err("a byte sequence holds base64 only");
            }
            self.i += 1;
        }
        let text = self.s.get(start..self.i).unwrap_or_default();
        if self.bump() != Some(b':') {
            return Err("unterminated byte sequence");
        }
        // RFC 8941 §4.2.7: parsers SHOULD NOT fail on missing padding.
        LENIENT
            .decode(text)
            .map(Bare::Bytes)
            .map_err(|_| "bad base64 in a byte sequence")
    }

    fn inner(&mut self) -> R<Member> {
        self.i += 1;
        let mut items = Vec::new();
        loop {
            self.sp();
            if self.peek() == Some(b')') {
                self.i += 1;
                let params = self.params()?;
                return Ok(Member::Inner(items, params));
            }
            if items.len() >= MAX_ITEMS {
                return Err("too many inner-list items");
            }
            let item = self.bare()?;
            let params = self.params()?;
            items.push((item, params));
            match self.peek() {
                Some(b' ' | b')') => {}
                _ => return Err("expected a space or `)` in an inner list"),
            }
        }
    }
}

/// Parses a dictionary field value (several field lines joined with `,`).
/// Duplicate keys: the last wins, as RFC 8941 says.
pub fn dictionary(value: &[u8]) -> Result<Dictionary, &'static str> {
    if value.len() > MAX_FIELD {
        return Err("the field is too long");
    }
    let mut p = P { s: value, i: 0 };
    let mut out: Dictionary = Vec::new();
    p.sp();
    if p.done() {
        return Ok(out);
    }
    loop {
        let k = p.key()?;
        let m = if p.peek() == Some(b'=') {
            p.i += 1;
            if p.peek() == Some(b'(') {
                p.inner()?
            } else {
                let b = p.bare()?;
                Member::Item(b, p.params()?)
            }
        } else {
            Member::Item(Bare::Boolean(true), p.params()?)
        };
        if let Some(slot) = out.iter_mut().find(|(x, _)| *x == k) {
            slot.1 = m;
        } else if out.len() < MAX_MEMBERS {
            out.push((k, m));
        } else {
            return Err("too many dictionary members");
        }
        p.ows();
        if p.done() {
            return Ok(out);
        }
        if p.bump() != Some(b',') {
            return Err("expected `,` between dictionary members");
        }
        p.ows();
        if p.done() {
            return Err("a trailing `,`");
        }
    }
}

/// Serializes a bare item (RFC 8941 §4.1).
pub fn write_bare(b: &Bare, out: &mut String) {
    match b {
        Bare::Integer(n) => out.push_str(&n.to_string()),
        Bare::Decimal(d) => out.push_str(&canonical_decimal(d)),
        Bare::String(s) => {
            out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        Bare::Token(t) => out.push_str(t),
        Bare::Bytes(b) => {
            out.push(':');
            out.push_str(&STANDARD.encode(b));
            out.push(':');
        }
        Bare::Boolean(true) => out.push_str("?1"),
        Bare::Boolean(false) => out.push_str("?0"),
    }
}

/// RFC 8941 §4.1.5: no leading zeros, at most three fractional digits
/// without trailing zeros, at least one (`01.50` → `1.5`, `2.000` → `2.0`).
fn canonical_decimal(d: &str) -> String {
    let (neg, d) = match d.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, d),
    };
    let (int, frac) = d.split_once('.').unwrap_or((d, "0"));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let mut out = String::with_capacity(d.len() + 2);
    if neg && !(int.is_empty() && frac.is_empty()) {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    out.push('.');
    out.push_str(if frac.is_empty() { "0" } else { frac });
    out
}

pub fn write_params(params: &Params, out: &mut String) {
    for (k, v) in params {
        out.push(';');
        out.push_str(k);
        if *v != Bare::Boolean(true) {
            out.push('=');
            write_bare(v, out);
        }
    }
}

/// Serializes an inner list with its parameters.
pub fn write_inner(items: &[(Bare, Params)], params: &Params, out: &mut String) {
    out.push('(');
    for (i, (b, p)) in items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        write_bare(b, out);
        write_params(p, out);
    }
    out.push(')');
    write_params(params, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc9421_examples() {
        let d = dictionary(
            br#"sig1=("@method" "@authority" "@path" "content-digest" "content-length" "content-type");created=1618884473;keyid="test-key-rsa-pss""#,
        )
        .unwrap();
        let Member::Inner(items, params) = &d[0].1 else {
            panic!()
        };
        assert_eq!(d[0].0, "sig1");
        assert_eq!(items.len(), 6);
        assert_eq!(items[0].0, Bare::String("@method".into()));
        assert_eq!(params[0], ("created".into(), Bare::Integer(1618884473)));
        let mut s = String::new();
        write_inner(items, params, &mut s);
        assert_eq!(
            s,
            r#"("@method" "@authority" "@path" "content-digest" "content-length" "content-type");created=1618884473;keyid="test-key-rsa-pss""#
        );
        let d = dictionary(b"sig-b21=:dGVzdA==:, sig2=:AAEC:").unwrap();
        assert_eq!(d[0].1, Member::Item(Bare::Bytes(b"test".to_vec()), vec![]));
        assert_eq!(d.len(), 2);
        let d = dictionary(b"sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:").unwrap();
        assert_eq!(d[0].0, "sha-256");
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            &b"sig1=(\"@method\""[..],
            b"sig1=(\"@method\")x",
            b"Sig1=:AA==:",
            b"sig1=:AA==",
            b"sig1=:A!A=:",
            b"sig1=\"unterminated",
            b"sig1=(\"a\"\"b\")",
            b"a=1,",
            b"a=1;;b",
            b"a=1 b=2",
            b"a=\"\x01\"",
            b"a=1234567890123456",
            b"a=1.2345",
            b"a=?2",
        ] {
            assert!(
                dictionary(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(dictionary(&vec![b'a'; MAX_FIELD + 1]).is_err());
    }

    #[test]
    fn many_members_are_refused_not_scanned() {
        let many: String = (0..40)
            .map(|i| format!("k{i}=1"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(dictionary(many.as_bytes()).is_err());
        let params: String = (0..20).map(|i| format!(";p{i}=1")).collect();
        assert!(dictionary(format!("a=1{params}").as_bytes()).is_err());
        let items: String = (0..70)
            .map(|i| format!("\"c{i}\""))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(dictionary(format!("a=({items})").as_bytes()).is_err());
        // A 16 KiB field of the same key: the last wins, in linear time.
        let same: String = vec!["a=1"; 3000].join(",");
        assert!(dictionary(same.as_bytes()).is_ok());
    }

    #[test]
    fn unpadded_bytes_parse_and_decimals_serialize_canonically() {
        let d = dictionary(b"a=:dGVzdA:").unwrap();
        assert_eq!(d[0].1, Member::Item(Bare::Bytes(b"test".to_vec()), vec![]));
        for (text, want) in [
            ("1.50", "1.5"),
            ("01.000", "1.0"),
            ("-0.0", "0.0"),
            ("-2.5", "-2.5"),
        ] {
            let mut s = String::new();
            write_bare(&Bare::Decimal(text.into()), &mut s);
            assert_eq!(s, want, "{text}");
        }
    }

    #[test]
    fn duplicate_keys_keep_the_last() {
        let d = dictionary(b"a=1, a=2").unwrap();
        assert_eq!(
            d,
            vec![("a".into(), Member::Item(Bare::Integer(2), vec![]))]
        );
    }
}
