//! A small JSON writer for records: exactly one line per record, every
//! string escaped so that any byte a client sends stays inside its string.
//!
//! Escaping (RFC 8259 plus what line-based shippers and JavaScript need):
//! `"` and `\` are escaped; every control character (U+0000–U+001F) and
//! DEL (U+007F) becomes `\n`, `\r`, `\t`, `\b`, `\f` or `\u00XX`, so no raw
//! newline ever splits a line; U+2028 and U+2029 become `\u2028`/`\u2029`
//! (line terminators for JavaScript and some log viewers). Bytes that are
//! not UTF-8 become U+FFFD and the caller is told, so the record can say
//! which field was replaced.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Appends `s` as a JSON string (with quotes).
pub fn string(out: &mut String, s: &str) {
    out.push('"');
    escape_into(out, s);
    out.push('"');
}

/// Appends `b` as a JSON string; non-UTF-8 sequences become U+FFFD.
/// Returns true if anything was replaced.
pub fn bytes(out: &mut String, b: &[u8]) -> bool {
    out.push('"');
    let mut replaced = false;
    for chunk in b.utf8_chunks() {
        escape_into(out, chunk.valid());
        if !chunk.invalid().is_empty() {
            out.push('\u{FFFD}');
            replaced = true;
        }
    }
    out.push('"');
    replaced
}

fn escape_into(out: &mut String, s: &str) {
    // Copy runs of plain characters at once; escape the rest.
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc: Option<&str> = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '\n' => Some("\\n"),
            '\r' => Some("\\r"),
            '\t' => Some("\\t"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            '\u{2028}' => Some("\\u2028"),
            '\u{2029}' => Some("\\u2029"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => None,
            _ => continue,
        };
        out.push_str(s.get(start..i).unwrap_or_default());
        match esc {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
        }
        start = i + c.len_utf8();
    }
    out.push_str(s.get(start..).unwrap_or_default());
}

/// RFC 3339 UTC with milliseconds: `2025-06-01T12:00:00.123Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let millis = d.subsec_millis();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn escapes_what_would_break_a_line_or_a_string() {
        let mut out = String::new();
        string(
            &mut out,
            "a\"b\\c\nd\re\tf\u{0}g\u{1f}h\u{7f}i\u{2028}j\u{2029}k\u{8}\u{c}é",
        );
        assert_eq!(
            out,
            r#""a\"b\\c\nd\re\tf\u0000g\u001fh\u007fi\u2028j\u2029k\b\fé""#
        );
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(
            back,
            "a\"b\\c\nd\re\tf\u{0}g\u{1f}h\u{7f}i\u{2028}j\u{2029}k\u{8}\u{c}é"
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_and_reported() {
        let mut out = String::new();
        assert!(bytes(&mut out, b"ok\xff\xfe-\xe2\x82"));
        assert_eq!(out, "\"ok\u{FFFD}\u{FFFD}-\u{FFFD}\"");
        let mut out = String::new();
        assert!(!bytes(&mut out, "fine ☃".as_bytes()));
    }

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::from_millis(1_544_712_660_300);
        assert_eq!(rfc3339_millis(t), "2018-12-13T14:51:00.300Z");
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 86_399);
        assert_eq!(rfc3339_millis(t), "2000-02-29T23:59:59.000Z");
    }
}
