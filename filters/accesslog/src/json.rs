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
    // Nearly always valid: one fast check, the chunked walk only otherwise.
    if let Ok(s) = std::str::from_utf8(b) {
        escape_into(out, s);
        out.push('"');
        return false;
    }
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

/// Bytes that may need an escape (E2 only if U+2028/2029 follows), as a
/// table: one load per byte in the scan.
// Evaluated at compile time: an index out of range would fail the build,
// it cannot panic at run time.
#[allow(clippy::indexing_slicing)]
const CANDIDATE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t[0x7f] = true;
    t[0xe2] = true;
    t
};

fn needs_escape(c: u8) -> bool {
    CANDIDATE.get(usize::from(c)).copied().unwrap_or(true)
}

fn escape_into(out: &mut String, s: &str) {
    // Everything that needs escaping is ASCII except U+2028/2029
    // (E2 80 A8/A9): find the next candidate byte with a tight loop, copy
    // the run before it at once, then write the escape. In wasm a copy
    // call costs far more than a byte: a quote or backslash only gets a
    // `\` pushed and starts the next run.
    let b = s.as_bytes();
    // `start`: first byte not yet copied; `scan`: where to look next.
    // Both only ever sit on character boundaries: escapes are ASCII or a
    // whole E2 80 A8/A9, and an E2 lead byte is a boundary too.
    let mut start = 0;
    let mut scan = 0;
    loop {
        let rest = b.get(scan..).unwrap_or_default();
        let Some(off) = rest.iter().position(|c| needs_escape(*c)) else {
            break;
        };
        let i = scan + off;
        let c = rest.get(off).copied().unwrap_or_default();
        let esc: &str = match c {
            b'"' | b'\\' => {
                out.push_str(s.get(start..i).unwrap_or_default());
                out.push('\\');
                start = i;
                scan = i + 1;
                continue;
            }
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0xe2 => match (b.get(i + 1), b.get(i + 2)) {
                (Some(0x80), Some(0xa8)) => "\\u2028",
                (Some(0x80), Some(0xa9)) => "\\u2029",
                // Another character starting with E2: part of the run.
                _ => {
                    scan = i + 1;
                    continue;
                }
            },
            _ => "",
        };
        out.push_str(s.get(start..i).unwrap_or_default());
        if esc.is_empty() {
            out.push_str("\\u00");
            out.push(hex(c >> 4));
            out.push(hex(c & 0xf));
        } else {
            out.push_str(esc);
        }
        start = i + if c == 0xe2 { 3 } else { 1 };
        scan = start;
    }
    out.push_str(s.get(start..).unwrap_or_default());
}

fn hex(n: u8) -> char {
    char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
}

pub use meshguard_common::num::push_u64;

fn push_2(out: &mut String, n: u64) {
    out.push(char::from(b'0' + (n / 10 % 10) as u8));
    out.push(char::from(b'0' + (n % 10) as u8));
}

/// RFC 3339 UTC with milliseconds: `2025-06-01T12:00:00.123Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let mut out = String::with_capacity(24);
    push_rfc3339_millis(&mut out, t);
    out
}

/// Appends [`rfc3339_millis`] without the formatting machinery.
pub fn push_rfc3339_millis(out: &mut String, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let millis = u64::from(d.subsec_millis());
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let y = y.clamp(0, 9999) as u64;
    push_2(out, y / 100);
    push_2(out, y % 100);
    out.push('-');
    push_2(out, u64::from(m));
    out.push('-');
    push_2(out, u64::from(day));
    out.push('T');
    push_2(out, rem / 3600);
    out.push(':');
    push_2(out, (rem % 3600) / 60);
    out.push(':');
    push_2(out, rem % 60);
    out.push('.');
    out.push(char::from(b'0' + (millis / 100) as u8));
    push_2(out, millis % 100);
    out.push('Z');
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
    fn other_characters_starting_with_e2_are_kept() {
        let text = "€…→\u{2028}—\u{2029}‰";
        let mut out = String::new();
        string(&mut out, text);
        assert_eq!(out, "\"€…→\\u2028—\\u2029‰\"");
        let back: String = serde_json::from_str(&out).unwrap();
        assert_eq!(back, text);
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
        let mut n = String::new();
        for v in [0u64, 7, 10, 12345, u64::MAX] {
            n.clear();
            push_u64(&mut n, v);
            assert_eq!(n, v.to_string());
        }
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 86_399);
        assert_eq!(rfc3339_millis(t), "2000-02-29T23:59:59.000Z");
    }
}
