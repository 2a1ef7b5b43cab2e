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

/// Read access to request headers, whatever holds them: Envoy's serialized
/// map read in place ([`PairsView`], no copies) or a plain list (tests, CLI).
/// Names compare case-insensitively; values are raw bytes because a header
/// value may hold any byte Envoy accepts (obs-text), not only UTF-8.
pub trait HeaderSource {
    /// Every `(name, value)` pair in order.
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_;

    /// First value of `name`.
    fn first(&self, name: &str) -> Option<&[u8]> {
        self.pairs()
            .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// Whether `name` is present (any value, possibly empty).
    fn contains(&self, name: &str) -> bool {
        self.first(name).is_some()
    }

    /// First value of each of `names` (lowercase), in one pass over the
    /// headers: `out[i]` gets the first value of `names[i]`. Cheaper than
    /// one [`HeaderSource::first`] per name when a filter needs several.
    fn first_many<'s, N: AsRef<str>>(&'s self, names: &[N], out: &mut [Option<&'s [u8]>]) {
        let mut missing = names.len().min(out.len());
        if missing == 0 {
            return;
        }
        // Most headers are none of the names: reject them by length first.
        let mut lengths: u64 = 0;
        for name in names {
            lengths |= 1u64.checked_shl(name.as_ref().len() as u32).unwrap_or(1);
        }
        for (k, v) in self.pairs() {
            if lengths & 1u64.checked_shl(k.len() as u32).unwrap_or(1) == 0 {
                continue;
            }
            for (name, slot) in names.iter().zip(out.iter_mut()) {
                let name = name.as_ref().as_bytes();
                if slot.is_none() && name.len() == k.len() && k.eq_ignore_ascii_case(name) {
                    *slot = Some(v);
                    missing -= 1;
                }
            }
            if missing == 0 {
                break;
            }
        }
    }
}

impl HeaderSource for [(String, String)] {
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes()))
    }
}

impl HeaderSource for Vec<(String, String)> {
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.as_slice().pairs()
    }
}

/// A header map in the proxy-wasm pairs encoding (`u32 n`, n × (`u32
/// key_len`, `u32 value_len`), then `key\0value\0`…), read in place. The
/// entry offsets are decoded once, so repeated lookups are plain slice
/// comparisons.
#[derive(Debug, Clone)]
pub struct PairsView<'a> {
    buf: &'a [u8],
    /// (key start, key end, value start, value end) per entry.
    entries: Vec<(usize, usize, usize, usize)>,
}

#[inline]
fn word(buf: &[u8], at: usize) -> Option<usize> {
    let b = buf.get(at..at.checked_add(4)?)?;
    let arr: [u8; 4] = b.try_into().ok()?;
    Some(u32::from_le_bytes(arr) as usize)
}

impl<'a> PairsView<'a> {
    /// Checks the whole encoding once; `None` if it is inconsistent. An
    /// empty buffer is an empty map. `#[inline]` (as the lookups): compiled
    /// in the crate that reads headers, at that crate's opt-level (the
    /// stage pipeline's, 3), not this crate's (`z` in the size-budgeted
    /// modules).
    #[inline]
    pub fn parse(buf: &'a [u8]) -> Option<Self> {
        if buf.is_empty() {
            return Some(Self::empty());
        }
        let count = word(buf, 0)?;
        let mut data = count.checked_mul(8)?.checked_add(4)?;
        if data > buf.len() {
            return None;
        }
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let k = word(buf, 4 + i * 8)?;
            let v = word(buf, 8 + i * 8)?;
            let key_end = data.checked_add(k)?;
            let value_start = key_end.checked_add(1)?;
            let value_end = value_start.checked_add(v)?;
            if value_end >= buf.len() {
                return None;
            }
            entries.push((data, key_end, value_start, value_end));
            data = value_end + 1;
        }
        Some(Self { buf, entries })
    }

    pub fn empty() -> Self {
        Self {
            buf: &[],
            entries: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + '_ {
        let buf = self.buf;
        self.entries
            .iter()
            .filter_map(move |(ks, ke, vs, ve)| Some((buf.get(*ks..*ke)?, buf.get(*vs..*ve)?)))
    }
}

/// Encodes header pairs in the proxy-wasm pairs encoding, the inverse of
/// [`PairsView::parse`] (local replies, callouts, test doubles).
pub fn encode_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Vec<u8> {
    encode_pairs_from(pairs.iter().map(|(k, v)| (k.as_ref(), v.as_ref())))
}

/// [`encode_pairs`] from an iterator (walked twice: sizes, then bytes), so
/// a caller need not collect its pairs first: one allocation in all.
pub fn encode_pairs_from<'a>(pairs: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone) -> Vec<u8> {
    let (n, data) = pairs.clone().fold((0usize, 0usize), |(n, d), (k, v)| {
        (n + 1, d + k.len() + v.len() + 2)
    });
    let mut out = Vec::with_capacity(4 + n * 8 + data);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

impl HeaderSource for PairsView<'_> {
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.iter()
    }

    /// Rejects entries by key length before touching their bytes: most
    /// lookups compare one or two keys, not every header.
    #[inline]
    fn first(&self, name: &str) -> Option<&[u8]> {
        let want = name.as_bytes();
        let buf = self.buf;
        self.entries
            .iter()
            .find(|(ks, ke, _, _)| {
                ke.wrapping_sub(*ks) == want.len()
                    && buf
                        .get(*ks..*ke)
                        // Envoy hands over lowercase names: the exact
                        // compare decides most lookups.
                        .is_some_and(|k| k == want || k.eq_ignore_ascii_case(want))
            })
            .and_then(|(_, _, vs, ve)| buf.get(*vs..*ve))
    }
}

/// Value of cookie `name` from every `cookie` header (HTTP/2 clients may
/// send several). First occurrence wins, as in browsers and Envoy.
pub fn cookie<'a, H: HeaderSource + ?Sized>(headers: &'a H, name: &str) -> Option<&'a [u8]> {
    headers
        .pairs()
        .filter(|(k, _)| k.eq_ignore_ascii_case(b"cookie"))
        .flat_map(|(_, v)| v.split(|b| *b == b';'))
        .find_map(|pair| {
            let eq = pair.iter().position(|b| *b == b'=')?;
            let (k, v) = (pair.get(..eq)?, pair.get(eq + 1..)?);
            (k.trim_ascii() == name.as_bytes()).then(|| strip_quotes(v.trim_ascii()))
        })
}

fn strip_quotes(v: &[u8]) -> &[u8] {
    v.strip_prefix(b"\"")
        .and_then(|s| s.strip_suffix(b"\""))
        .unwrap_or(v)
}

/// A host in a filter's `match`: `shop.example.com` (that host) or
/// `*.example.com` (any host ending in `.example.com`, not the bare
/// domain), both case-insensitive. Compare with the output of
/// [`host_without_port`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lowercase; for a wildcard, the suffix with its leading dot.
    pattern: String,
    wildcard: bool,
}

impl HostPattern {
    pub fn new(pattern: &str) -> Self {
        match pattern.strip_prefix('*') {
            Some(suffix) => Self {
                pattern: suffix.to_ascii_lowercase(),
                wildcard: true,
            },
            None => Self {
                pattern: pattern.to_ascii_lowercase(),
                wildcard: false,
            },
        }
    }

    pub fn matches(&self, host: &[u8]) -> bool {
        let pat = self.pattern.as_bytes();
        if self.wildcard {
            host.len() > pat.len()
                && host
                    .get(host.len() - pat.len()..)
                    .is_some_and(|tail| tail.eq_ignore_ascii_case(pat))
        } else {
            host.eq_ignore_ascii_case(pat)
        }
    }
}

/// Host part of an `:authority` value without port (handles `[v6]:port`).
/// Not lowercased: compare with `eq_ignore_ascii_case`.
pub fn host_without_port(authority: &[u8]) -> &[u8] {
    if let Some(rest) = authority.strip_prefix(b"[") {
        return rest.split(|b| *b == b']').next().unwrap_or(rest);
    }
    match authority.iter().rposition(|b| *b == b':') {
        Some(colon) => {
            let (host, port) = (authority.get(..colon), authority.get(colon + 1..));
            match (host, port) {
                (Some(h), Some(p)) if p.iter().all(u8::is_ascii_digit) => h,
                _ => authority,
            }
        }
        None => authority,
    }
}

/// Path without query string or fragment.
pub fn path_only(path: &[u8]) -> &[u8] {
    let end = path
        .iter()
        .position(|b| *b == b'?' || *b == b'#')
        .unwrap_or(path.len());
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
        assert_eq!(cookie(&hs, "mg_visitor"), Some(b"abc".as_slice()));
        assert_eq!(cookie(&hs, "b"), Some(b"q".as_slice()));
        assert_eq!(cookie(&hs, "missing"), None);
        assert_eq!(cookie(&h(&[("cookie", "junk;;=;x")]), "x"), None);
        assert_eq!(cookie(&h(&[("Cookie", "x=1")]), "x"), Some(b"1".as_slice()));
    }

    #[test]
    fn hosts_and_paths() {
        assert_eq!(
            host_without_port(b"Shop.Example.com:8080"),
            b"Shop.Example.com"
        );
        assert_eq!(host_without_port(b"[::1]:10000"), b"::1");
        assert_eq!(host_without_port(b"example.com"), b"example.com");
        assert_eq!(host_without_port(b"a:b"), b"a:b");
        assert_eq!(path_only(b"/a/b?x=1#f"), b"/a/b");
        assert_eq!(path_only(b""), b"");
    }

    #[test]
    fn first_many_matches_first() {
        let hs = h(&[("A", "1"), ("b", "2"), ("a", "3"), ("c", "")]);
        let names = ["a", "c", "missing", "b", "a"];
        let mut out = [None; 5];
        hs.first_many(&names, &mut out);
        for (name, got) in names.iter().zip(out) {
            assert_eq!(got, hs.first(name), "{name}");
        }
    }

    #[test]
    fn host_patterns_match_exact_and_wildcard_hosts() {
        let exact = HostPattern::new("Shop.Example.com");
        assert!(exact.matches(b"shop.example.COM"));
        assert!(!exact.matches(b"a.shop.example.com"));
        let wild = HostPattern::new("*.example.com");
        assert!(wild.matches(b"shop.EXAMPLE.com"));
        assert!(wild.matches(b"a.b.example.com"));
        assert!(!wild.matches(b"example.com"));
        assert!(!wild.matches(b".example.com"));
        assert!(!wild.matches(b"badexample.com"));
    }

    #[test]
    fn first_is_case_insensitive() {
        let hs = h(&[("X-User-Id", "u1"), ("x-user-id", "u2")]);
        assert_eq!(hs.first("x-user-id"), Some(b"u1".as_slice()));
        assert!(hs.contains("x-user-id"));
        assert!(!hs.contains("x-other"));
    }

    fn encode(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        encode_pairs(pairs)
    }

    #[test]
    fn pairs_view_reads_in_place() {
        let buf = encode(&[(b":path", b"/"), (b"x-a", b"\xff\x00b"), (b"e", b"")]);
        let view = PairsView::parse(&buf).unwrap();
        assert_eq!(view.len(), 3);
        let got: Vec<_> = view.iter().collect();
        assert_eq!(
            got,
            vec![
                (b":path".as_slice(), b"/".as_slice()),
                (b"x-a".as_slice(), b"\xff\x00b".as_slice()),
                (b"e".as_slice(), b"".as_slice())
            ]
        );
        assert_eq!(view.first("X-A"), Some(b"\xff\x00b".as_slice()));
        assert_eq!(view.first("e"), Some(b"".as_slice()));
        assert_eq!(view.first("x-b"), None);
        assert_eq!(view.first("x-a-"), None);
        // The first of repeated names, whatever their case.
        let buf = encode(&[(b"a-b", b"1"), (b"X-Y", b"2"), (b"x-y", b"3")]);
        let view = PairsView::parse(&buf).unwrap();
        assert_eq!(view.first("x-y"), Some(b"2".as_slice()));
        assert!(PairsView::parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn pairs_view_rejects_inconsistent_buffers() {
        let buf = encode(&[(b"k", b"value")]);
        for cut in 0..buf.len() {
            if cut == 0 {
                continue;
            }
            assert!(PairsView::parse(&buf[..cut]).is_none(), "cut at {cut}");
        }
        assert!(PairsView::parse(&[0xff, 0xff, 0xff, 0xff]).is_none());
        let mut huge = buf.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(PairsView::parse(&huge).is_none());
    }
}
