//! Request paths a filter can match rules on safely.
//!
//! A rule matches `:path` as the filter sees it; the upstream may read the
//! same bytes differently: `//api` as `/api`, `/public/../api` and
//! `/public/%2e%2e/api` as `/api`, `%2f` and `\` as `/`. Envoy normalizes
//! only when told to (`normalize_path`, `merge_slashes`,
//! `path_with_escaped_slashes_action`; Istio's `meshConfig.pathNormalization`),
//! so a filter that decides by path refuses what is not in normal form
//! rather than guess how the upstream will read it.

/// The path part of `:path` (before `?` or `#`) is in normal form: it
/// starts with `/`, has no empty segment (`//`), no `.` or `..` segment, no
/// backslash, and no percent-encoded `.`, `/` or `\` (`%2e`, `%2f`, `%5c`,
/// either case). `*` (the `OPTIONS *` target) is normal too. The query is
/// not looked at.
pub fn is_normal(path: &[u8]) -> bool {
    let end = path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    let p = path.get(..end).unwrap_or_default();
    if p == b"*" {
        return true;
    }
    let Some(rest) = p.strip_prefix(b"/") else {
        return false;
    };
    if p.contains(&b'\\') {
        return false;
    }
    // Percent-encoded '.', '/' or '\'.
    if p.windows(3).any(|w| {
        matches!(
            w,
            [b'%', b'2', b'e' | b'E' | b'f' | b'F'] | [b'%', b'5', b'c' | b'C']
        )
    }) {
        return false;
    }
    // "/" alone is fine; otherwise every segment is non-empty and not a dot
    // segment (a trailing "/" leaves one empty last segment, which is fine).
    if rest.is_empty() {
        return true;
    }
    let segments: Vec<&[u8]> = rest.split(|&b| b == b'/').collect();
    let last = segments.len().saturating_sub(1);
    segments.iter().enumerate().all(|(i, s)| match *s {
        b"" => i == last,
        b"." | b".." => false,
        _ => true,
    })
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
            "/api?next=//x/../y&q=%2e%2f",
            "/api#frag/../x",
            "/caf%C3%A9/x%20y",
            "/%25/a",
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
        ] {
            assert!(!is_normal(p.as_bytes()), "{p}");
        }
    }
}
