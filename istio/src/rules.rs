//! Istio's own validation rules for the fields meshguard renders, mirrored
//! from `pkg/config/validation` (see ../shared/REFERENCE.md §1, §4, §5), so
//! a policy istiod would reject is refused before it reaches a cluster.
//! Each function checks one rule and says what was expected.

/// A duration as Istio writes it (`10s`, `500ms`, `1h`, `1.5s`), returned
/// in milliseconds. Istio requires ≥ 1 ms and whole milliseconds.
pub fn duration_ms(s: &str) -> Result<u64, String> {
    let unit_at = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{s}` is not a duration: add a unit (ms, s, m, h)"))?;
    let (num, unit) = s.split_at(unit_at);
    let per_unit: f64 = match unit {
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        "us" | "µs" | "ns" => {
            return Err(format!(
                "`{s}`: Istio needs whole milliseconds, at least 1ms"
            ))
        }
        _ => {
            return Err(format!(
                "`{s}` is not a duration: expected a number and ms, s, m or h"
            ))
        }
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: `{num}` is not a number"))?;
    let ms = n * per_unit;
    if ms.fract() != 0.0 {
        return Err(format!("`{s}`: Istio needs whole milliseconds"));
    }
    if ms < 1.0 {
        return Err(format!("`{s}`: Istio needs at least 1ms"));
    }
    if ms > 315_576_000_000_000.0 {
        return Err(format!("`{s}`: too long"));
    }
    Ok(ms as u64)
}

/// DNS-1123 label: subset names (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, ≤ 63).
pub fn dns1123_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("`{s}` is not a DNS-1123 label (lowercase letters, digits and `-`, at most 63, starting and ending with a letter or digit)"))
    }
}

/// A Kubernetes object name / namespace: DNS-1123 subdomain (≤ 253, labels
/// joined by `.`).
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 || s.split('.').any(|l| dns1123_label(l).is_err()) {
        return Err(format!("`{s}` is not a valid Kubernetes name (DNS-1123: lowercase letters, digits, `-` and `.`)"));
    }
    Ok(())
}

/// The tokens Envoy/Istio accept in `retryOn`.
pub const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// `retryOn`: comma-separated tokens, each a known policy or an HTTP status.
pub fn retry_on(s: &str) -> Result<(), String> {
    for token in s.split(',') {
        let t = token.trim();
        let status = t.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c));
        if !status && !RETRY_ON.contains(&t) {
            return Err(format!(
                "`{t}` is not a retryOn policy: expected an HTTP status code or one of {}",
                RETRY_ON.join(", ")
            ));
        }
    }
    Ok(())
}

/// Maglev's table size must be prime and below 5000011.
pub fn maglev_table_size(n: u64) -> Result<(), String> {
    if n >= 5_000_011 {
        return Err(format!("maglev table size {n} must be below 5000011"));
    }
    if !is_prime(n) {
        return Err(format!(
            "maglev table size {n} must be a prime number (e.g. 65537)"
        ));
    }
    Ok(())
}

pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u64;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// A WasmPlugin `sha256`: 64 lowercase hex characters.
pub fn sha256_hex(s: &str) -> Result<(), String> {
    if s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a sha256 digest: expected 64 lowercase hex characters (optionally after `sha256:`)"
        ))
    }
}

pub const PHASES: &[&str] = &["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"];
pub const FAIL_STRATEGIES: &[&str] = &["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"];
pub const PULL_POLICIES: &[&str] = &["UNSPECIFIED_POLICY", "IfNotPresent", "Always"];
pub const MATCH_MODES: &[&str] = &["UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"];
pub const H2_UPGRADE: &[&str] = &["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"];

/// One of an enum's names.
pub fn one_of(what: &str, s: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&s) {
        Ok(())
    } else {
        Err(format!(
            "`{s}` is not a {what}: expected one of {}",
            allowed.join(", ")
        ))
    }
}

/// WasmPlugin selector labels: keys non-empty, no `*` in keys or values.
pub fn selector_label(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("a selector label key cannot be empty".into());
    }
    if key.contains('*') || value.contains('*') {
        return Err(format!(
            "selector label `{key}: {value}`: wildcards (`*`) are not allowed"
        ));
    }
    Ok(())
}

/// A request header name as VirtualService matches want it: lowercase
/// RFC 7230 token.
pub fn match_header_name(s: &str) -> Result<(), String> {
    let token = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err(format!("`{s}` is not a valid header name (RFC 7230 token)"));
    }
    if s.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "header `{s}`: VirtualService header matches must be lowercase"
        ));
    }
    Ok(())
}

/// Route weights of a split: each ≥ 0, summing to 100 (meshguard asks for
/// 100 so the numbers read as percentages; Istio itself only refuses 0).
pub fn weights_sum_100(weights: &[i64]) -> Result<(), String> {
    if let Some(w) = weights.iter().find(|w| **w < 0) {
        return Err(format!("weight {w} is negative"));
    }
    let sum: i64 = weights.iter().sum();
    if sum != 100 {
        return Err(format!("route weights sum to {sum}; expected 100"));
    }
    Ok(())
}

/// A percentage field (`maxEjectionPercent`, `minHealthPercent`).
pub fn percent(n: i64) -> Result<(), String> {
    if (0..=100).contains(&n) {
        Ok(())
    } else {
        Err(format!("{n} is not a percentage: expected 0 to 100"))
    }
}

/// Connection-pool integers cannot be negative.
pub fn non_negative(n: i64) -> Result<(), String> {
    if n < 0 {
        Err(format!("{n} is negative"))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_whole_milliseconds_of_at_least_one() {
        assert_eq!(duration_ms("10s"), Ok(10_000));
        assert_eq!(duration_ms("500ms"), Ok(500));
        assert_eq!(duration_ms("1.5s"), Ok(1_500));
        assert_eq!(duration_ms("2m"), Ok(120_000));
        assert_eq!(duration_ms("1h"), Ok(3_600_000));
        assert!(duration_ms("0s").unwrap_err().contains("at least 1ms"));
        assert!(duration_ms("0.5ms")
            .unwrap_err()
            .contains("whole milliseconds"));
        assert!(duration_ms("1.0005s").unwrap_err().contains("whole"));
        assert!(duration_ms("100us")
            .unwrap_err()
            .contains("whole milliseconds"));
        assert!(duration_ms("10").unwrap_err().contains("add a unit"));
        assert!(duration_ms("10d").unwrap_err().contains("not a duration"));
        assert!(duration_ms("1..5s").unwrap_err().contains("not a number"));
    }

    #[test]
    fn subset_names_are_dns1123_labels() {
        dns1123_label("v1").unwrap();
        dns1123_label("canary-2").unwrap();
        for bad in ["", "V1", "a_b", "-a", "a-", "a.b", &"a".repeat(64)] {
            assert!(dns1123_label(bad).is_err(), "{bad}");
        }
        dns1123_subdomain("shop.example").unwrap();
        assert!(dns1123_subdomain("Shop").is_err());
    }

    #[test]
    fn retry_on_tokens() {
        retry_on("5xx,connect-failure,503").unwrap();
        retry_on("gateway-error, reset").unwrap();
        assert!(retry_on("5xx,sometimes")
            .unwrap_err()
            .contains("`sometimes`"));
        assert!(retry_on("600").is_err());
        assert!(retry_on("").is_err());
    }

    #[test]
    fn maglev_table_size_prime_and_bounded() {
        maglev_table_size(65537).unwrap();
        maglev_table_size(4_999_999).unwrap();
        assert!(maglev_table_size(65536).unwrap_err().contains("prime"));
        assert!(maglev_table_size(1).unwrap_err().contains("prime"));
        assert!(maglev_table_size(5_000_011).unwrap_err().contains("below"));
    }

    #[test]
    fn sha256_format() {
        sha256_hex(&"a".repeat(64)).unwrap();
        assert!(sha256_hex(&"A".repeat(64)).is_err());
        assert!(sha256_hex(&"a".repeat(63)).is_err());
        assert!(sha256_hex(&"g".repeat(64)).is_err());
    }

    #[test]
    fn enums_selectors_headers_weights_percentages() {
        one_of("phase", "AUTHZ", PHASES).unwrap();
        assert!(one_of("phase", "AUTHORIZATION", PHASES)
            .unwrap_err()
            .contains("AUTHN, AUTHZ, STATS"));
        selector_label("app", "frontend").unwrap();
        assert!(selector_label("", "x").is_err());
        assert!(selector_label("app", "front*")
            .unwrap_err()
            .contains("wildcards"));
        match_header_name("x-ab-variant").unwrap();
        assert!(match_header_name("X-Ab").unwrap_err().contains("lowercase"));
        assert!(match_header_name("x ab").unwrap_err().contains("token"));
        weights_sum_100(&[90, 10]).unwrap();
        assert!(weights_sum_100(&[90, 20])
            .unwrap_err()
            .contains("sum to 110"));
        assert!(weights_sum_100(&[110, -10])
            .unwrap_err()
            .contains("negative"));
        percent(100).unwrap();
        assert!(percent(101).is_err());
        assert!(non_negative(-1).is_err());
    }
}
