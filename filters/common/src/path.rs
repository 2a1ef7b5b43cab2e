//! Request paths a filter can match rules on safely.
//!
//! A rule matches `:path` as the filter sees it; the upstream may read the
//! same bytes differently: `//api` as `/api`, `/public/../api` and
//! `/public/%2e%2e/api` as `/api`, `%2f` and `\` as `/`. Envoy normalizes
//! only when told to (`normalize_path`, `merge_slashes`,
//! `path_with_escaped_slashes_action`; Istio's `meshConfig.pathNormalization`),
//! so a filter that decides by path refuses what is not in normal form
//! rather than guess how the upstream will read it.

/// The path part of `:path` (before `?`) is in normal form: it starts with
/// `/`, has no empty segment (`//`), no `.` or `..` segment, no backslash,
/// no `;` (path parameters: `/public/..;/admin` is `/admin` to Tomcat and
/// Spring), no `#`, and no percent-encoding an upstream could decode into
/// another path: not of `.`, `/`, `\`, `;`, `?`, `#`, `%` followed by one
/// of those, control characters, or any unreserved character (letters,
/// digits, `-`, `.`, `_`, `~`: RFC 3986 says never to encode them, and
/// `/%61dmin` is `/admin` to most frameworks), nor the overlong UTF-8 lead
/// bytes `%c0`/`%c1`. `*` (the `OPTIONS *` target) is normal too. The
/// query is not looked at.
pub fn is_normal(path: &[u8]) -> bool {
    let end = path.iter().position(|&b| b == b'?').unwrap_or(path.len());
    let p = path.get(..end).unwrap_or_default();
    if p == b"*" {
        return true;
    }
    if p.first() != Some(&b'/') {
        return false;
    }
    // One pass, no allocation (it runs on every request): segments end at
    // `/` or at the end; only the last may be empty ("/" or "/a/").
    let mut seg_start = 1;
    let mut i = 1;
    loop {
        let b = p.get(i).copied();
        match b {
            None | Some(b'/') => {
                match p.get(seg_start..i).unwrap_or_default() {
                    b"" if b.is_some() => return false,
                    b"." | b".." => return false,
                    _ => {}
                }
                if b.is_none() {
                    return true;
                }
                seg_start = i + 1;
            }
            Some(b'\\' | b';' | b'#') => return false,
            Some(b'%') => {
                let Some(v) = p.get(i + 1..i + 3).and_then(hex_byte) else {
                    return false; // a lone or malformed escape
                };
                if !allowed_escape(v, p.get(i + 3..i + 5)) {
                    return false;
                }
                i += 3;
                continue;
            }
            Some(_) => {}
        }
        i += 1;
    }
}

/// The path part of `:path` (before `?` and `#`) as an upstream would most
/// likely read it, for filters that match and key on paths without
/// refusing requests (ratelimit): the path itself when [`is_normal`] (no
/// allocation), else a copy with escapes of structural or unreserved
/// characters decoded (repeatedly, so `%252e` is `.` too), `\` read as
/// `/`, `;` parameters dropped from each segment, empty and `.` segments
/// removed and `..` applied (RFC 3986 §5.2.4). It decodes at least as much
/// as any upstream does, so `//limited`, `/x/../limited`, `/%6cimited` and
/// `/limited;x` all match a rule for `/limited` and share its buckets.
pub fn normalized(path: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use std::borrow::Cow;
    let end = path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    let p = path.get(..end).unwrap_or_default();
    if p.first() != Some(&b'/') || is_normal(p) {
        return Cow::Borrowed(p);
    }
    // Decode to a fixed point, at most 8 rounds (each round shortens the
    // path; a deeper nesting is left as the 8th round made it).
    let mut text = p.to_vec();
    for _ in 0..8 {
        let mut out = Vec::with_capacity(text.len());
        let mut changed = false;
        let mut i = 0;
        while let Some(&b) = text.get(i) {
            if b == b'%' {
                if let Some(v) = text.get(i + 1..i + 3).and_then(hex_byte) {
                    let structural = v.is_ascii_alphanumeric()
                        || matches!(v, b'-' | b'.' | b'_' | b'~' | b'/' | b'\\' | b';' | b'%');
                    if structural {
                        out.push(v);
                        changed = true;
                        i += 3;
                        continue;
                    }
                }
            }
            out.push(b);
            i += 1;
        }
        text = out;
        if !changed {
            break;
        }
    }
    // Segments: `\` is `/`; `;` parameters dropped; dot segments applied.
    let trailing = {
        let last = text
            .rsplit(|&b| b == b'/' || b == b'\\')
            .next()
            .unwrap_or_default();
        let last = last.split(|&b| b == b';').next().unwrap_or_default();
        matches!(last, b"" | b"." | b"..")
    };
    let mut segments: Vec<&[u8]> = Vec::new();
    for seg in text.split(|&b| b == b'/' || b == b'\\') {
        let seg = seg.split(|&b| b == b';').next().unwrap_or_default();
        match seg {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(text.len());
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() || trailing {
        out.push(b'/');
    }
    Cow::Owned(out)
}

fn hex_byte(h: &[u8]) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16);
    match h {
        [a, b] => Some((digit(*a)? * 16 + digit(*b)?) as u8),
        _ => None,
    }
}

/// Whether `%XX` decoding to `v` is safe to leave encoded; `next` is what
/// follows it (for `%25` + an escape of a dangerous character).
fn allowed_escape(v: u8, next: Option<&[u8]>) -> bool {
    let unreserved = v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~');
    let dangerous = matches!(v, b'/' | b'\\' | b';' | b'?' | b'#') || v < 0x20 || v == 0x7f;
    let overlong = matches!(v, 0xc0 | 0xc1);
    if unreserved || dangerous || overlong {
        return false;
    }
    if v == b'%' {
        // Double encoding of a character refused above: %252e, %252f, %255c.
        if let Some(n) = next.and_then(|n| n.get(..2)).and_then(hex_byte) {
            return allowed_escape(n, None) && n != b'%';
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::{is_normal, normalized};

    #[test]
    fn normalized_reads_paths_as_an_upstream_would() {
        for (p, want) in [
            ("/limited", "/limited"),
            ("/limited?x=//y/..", "/limited"),
            ("/limited#frag", "/limited"),
            ("//limited", "/limited"),
            ("/a//limited/", "/a/limited/"),
            ("/x/../limited", "/limited"),
            ("/x/%2e%2e/limited", "/limited"),
            ("/x/%2E%2E%2Flimited", "/limited"),
            ("/x/%252e%252e/limited", "/limited"),
            ("/%6cimited", "/limited"),
            ("/%256cimited", "/limited"),
            ("/limited;jsessionid=1", "/limited"),
            ("/x/..;/limited", "/limited"),
            ("/x\\..\\limited", "/limited"),
            ("/x/%5c../limited", "/limited"),
            ("/./limited/.", "/limited/"),
            ("/../../limited", "/limited"),
            ("/limited/x/..", "/limited/"),
            ("/..", "/"),
            ("//", "/"),
            ("/caf%C3%A9//x%20y", "/caf%C3%A9/x%20y"),
            ("*", "*"),
            ("api", "api"),
        ] {
            assert_eq!(
                String::from_utf8_lossy(&normalized(p.as_bytes())),
                want,
                "{p}"
            );
        }
        // Normal paths come back as they are, without a copy.
        assert!(matches!(
            normalized(b"/api/items?q=1"),
            std::borrow::Cow::Borrowed(b"/api/items")
        ));
    }

    #[test]
    fn normalized_is_idempotent_and_normal() {
        let parts = [
            "/", "//", "a", ".", "..", "%2e", "%2F", "%5c", ";x", "%25", "2e", "%41", "\\", "%20",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut p = String::from("/");
            for _ in 0..(seed % 9) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                p.push_str(parts[(seed % parts.len() as u64) as usize]);
            }
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let once = normalized(p.as_bytes()).into_owned();
            assert_eq!(normalized(&once).as_ref(), once.as_slice(), "{p}");
            assert!(once.starts_with(b"/"), "{p}");
            assert!(!once.windows(2).any(|w| w == b"//"), "{p}");
        }
    }

    #[test]
    fn normal_paths_pass() {
        for p in [
            "/",
            "*",
            "/api/items",
            "/api/items/",
            "/a.b/..c/.d/e..",
            "/api?next=//x/../y&q=%2e%2f;#",
            "/caf%C3%A9/x%20y",
            "/%25/a",
            "/a%20b/%22q%22/%40me",
        ] {
            assert!(is_normal(p.as_bytes()), "{p}");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for p in [
            "",
            "api",
            "//api/items",
            "/api//items",
            "/public/../api/items",
            "/public/./api",
            "/public/..",
            "/public/.",
            "/public/%2e%2e/api",
            "/public/%2E%2E/api",
            "/public/.%2e/api",
            "/public%2f..%2fapi",
            "/public%2F..%2Fapi",
            "/public\\..\\api",
            "/public/%5c../api",
            "/public/%5C../api",
            "/./api",
            "/../api",
            "/public/..;/admin",
            "/admin;x",
            "/public/.;x/admin",
            "/%61dmin",
            "/%41dmin",
            "/a%2Db",
            "/x%00y",
            "/x%0a",
            "/x%3b",
            "/x%3F",
            "/x%23",
            "/public#/../admin",
            "/x%252e%252e/y",
            "/x%252F",
            "/%c0%ae%c0%ae/x",
            "/x%",
            "/x%2",
            "/x%zz",
        ] {
            assert!(!is_normal(p.as_bytes()), "{p}");
        }
    }
}
