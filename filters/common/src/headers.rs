//! Header and cookie helpers. Every header is hostile input: nothing here
//! panics, allocates per byte, or trusts lengths.

/// Headers whose value meshguard must never overwrite or use as an output
/// slot: pseudo-headers, hop-by-hop and framing headers, and cookies.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "cookie",
    "set-cookie",
    "authorization",
];

/// Validates an HTTP header name from config and returns it lowercased (the
/// form Envoy stores and VirtualService matches use).
///
/// Rejects empty names, pseudo-headers (`:path`), characters outside the
/// RFC 9110 token set, and reserved headers the filter must not own.
pub fn validate_header_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("expected a header name, got an empty string".into());
    }
    if name.len() > 256 {
        return Err(format!(
            "header name is {} bytes long, expected at most 256",
            name.len()
        ));
    }
    if name.starts_with(':') {
        return Err(format!(
            "`{name}` is a pseudo-header; expected a regular header name"
        ));
    }
    if let Some(bad) = name.chars().find(|c| !is_token_char(*c)) {
        return Err(format!(
            "`{name}` is not a valid header name: character {bad:?} is not allowed (RFC 9110 token)"
        ));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED.contains(&lower.as_str()) {
        return Err(format!(
            "`{lower}` is a reserved header and cannot be used here"
        ));
    }
    Ok(lower)
}

/// Validates a cookie name (RFC 6265 `token`).
pub fn validate_cookie_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("expected a cookie name, got an empty string".into());
    }
    if name.len() > 128 {
        return Err(format!(
            "cookie name is {} bytes long, expected at most 128",
            name.len()
        ));
    }
    if let Some(bad) = name.chars().find(|c| !is_token_char(*c)) {
        return Err(format!(
            "`{name}` is not a valid cookie name: character {bad:?} is not allowed"
        ));
    }
    Ok(name.to_string())
}

/// RFC 9110 `tchar`.
pub fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// First value of header `name` (already lowercase) in a header list as the
/// proxy hands it over. Header keys from Envoy are lowercase; compare
/// case-insensitively anyway so a test double or HTTP/1 quirk cannot bypass.
pub fn get<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether header `name` is present (any value, possibly empty).
pub fn contains(headers: &[(String, String)], name: &str) -> bool {
    headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
}

/// Value of cookie `name` from every `cookie` header (HTTP/2 clients may
/// send several). First occurrence wins, as in browsers and Envoy.
pub fn cookie<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, v)| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k.trim() == name).then(|| strip_quotes(v.trim()))
        })
}

fn strip_quotes(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v)
}

/// Host part of an `:authority` value, lowercased, without port
/// (handles `[v6]:port`).
pub fn host_without_port(authority: &str) -> String {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        match authority.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        }
    };
    host.to_ascii_lowercase()
}

/// Path without query string or fragment.
pub fn path_only(path: &str) -> &str {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    path.get(..end).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn header_names() {
        assert_eq!(
            validate_header_name("X-AB-Variant").unwrap(),
            "x-ab-variant"
        );
        assert!(validate_header_name("").is_err());
        assert!(validate_header_name(":path").is_err());
        assert!(validate_header_name("x ab").unwrap_err().contains("' '"));
        assert!(validate_header_name("x-ab\n").is_err());
        assert!(validate_header_name("Host")
            .unwrap_err()
            .contains("reserved"));
        assert!(validate_header_name("x-é").is_err());
        assert!(validate_header_name(&"a".repeat(257)).is_err());
    }

    #[test]
    fn cookies() {
        let hs = h(&[
            ("cookie", "a=1; mg_visitor=abc ; b=\"q\""),
            ("cookie", "mg_visitor=second"),
        ]);
        assert_eq!(cookie(&hs, "mg_visitor"), Some("abc"));
        assert_eq!(cookie(&hs, "b"), Some("q"));
        assert_eq!(cookie(&hs, "missing"), None);
        assert_eq!(cookie(&h(&[("cookie", "junk;;=;x")]), "x"), None);
        assert_eq!(cookie(&h(&[("Cookie", "x=1")]), "x"), Some("1"));
    }

    #[test]
    fn hosts_and_paths() {
        assert_eq!(
            host_without_port("Shop.Example.com:8080"),
            "shop.example.com"
        );
        assert_eq!(host_without_port("[::1]:10000"), "::1");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(path_only("/a/b?x=1#f"), "/a/b");
        assert_eq!(path_only(""), "");
    }

    #[test]
    fn get_is_case_insensitive() {
        let hs = h(&[("X-User-Id", "u1"), ("x-user-id", "u2")]);
        assert_eq!(get(&hs, "x-user-id"), Some("u1"));
        assert!(contains(&hs, "x-user-id"));
        assert!(!contains(&hs, "x-other"));
    }
}
