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
    use super::is_normal;

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
