//! The client IP a `client_ip` key uses: from `x-forwarded-for` when
//! trusted proxies put it there, else the connection's `source.address`.
//! Everything here is hostile input: a spoofed or 64 KB header costs a
//! scan of its last few entries, never a panic.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// Longest text an address entry may have (`[v6]:port` with a zone fits).
const MAX_ENTRY: usize = 64;

/// The `hops`-th address from the right of an `x-forwarded-for` value:
/// the one the first trusted proxy appended. `None` when `hops` is 0, the
/// header has fewer entries, or that entry is not an IP address (what is
/// left of it, the client wrote: never read it).
pub fn from_forwarded_for(value: &[u8], hops: u32) -> Option<IpAddr> {
    if hops == 0 {
        return None;
    }
    let entry = value
        .rsplit(|b| *b == b',')
        .nth(usize::try_from(hops - 1).ok()?)?;
    parse_entry(entry)
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]:443`, surrounding spaces allowed.
pub fn parse_entry(entry: &[u8]) -> Option<IpAddr> {
    let entry = entry.trim_ascii();
    if entry.is_empty() || entry.len() > MAX_ENTRY {
        return None;
    }
    let text = std::str::from_utf8(entry).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = text.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    // `[v6]` without a port.
    text.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<Ipv6Addr>().ok())
        .map(IpAddr::V6)
}

/// The key text for `ip`: IPv4 as is (also when mapped into IPv6), IPv6
/// as its `prefix`-bit network (`2001:db8:1:2::/64`): one host usually
/// owns a whole /64, so keying by address would let it rotate.
pub fn key_text(ip: IpAddr, ipv6_prefix: u8) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = u32::from(ipv6_prefix.clamp(1, 128));
            let bits = u128::from(v6);
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            format!("{}/{prefix}", Ipv6Addr::from(bits & mask))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str, hops: u32) -> Option<String> {
        from_forwarded_for(v.as_bytes(), hops).map(|ip| key_text(ip, 64))
    }

    #[test]
    fn picks_the_entry_the_first_trusted_proxy_wrote() {
        // client -> P1 -> P2 -> Envoy; P1 appended the client, P2 appended P1.
        assert_eq!(
            xff("203.0.113.7, 10.0.0.1", 2).as_deref(),
            Some("203.0.113.7")
        );
        // A client-forged prefix is never read.
        assert_eq!(
            xff("1.1.1.1, 203.0.113.7, 10.0.0.1", 2).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(xff("203.0.113.7", 1).as_deref(), Some("203.0.113.7"));
        assert_eq!(xff(" 203.0.113.7:5555 ", 1).as_deref(), Some("203.0.113.7"));
    }

    #[test]
    fn too_few_entries_garbage_or_zero_hops_give_none() {
        assert_eq!(xff("203.0.113.7", 2), None);
        assert_eq!(xff("203.0.113.7", 0), None);
        assert_eq!(xff("", 1), None);
        assert_eq!(xff("not-an-ip", 1), None);
        assert_eq!(xff("1.2.3.4, ", 1), None);
        assert_eq!(xff("999.1.1.1", 1), None);
        assert_eq!(from_forwarded_for(&[0xff, 0xfe, b'1'], 1), None);
        let huge = format!("{}, 198.51.100.1", "9".repeat(65_536));
        assert_eq!(xff(&huge, 1).as_deref(), Some("198.51.100.1"));
        assert_eq!(xff(&huge, 2), None);
        let many = "1.1.1.1,".repeat(8000) + "198.51.100.2";
        assert_eq!(xff(&many, 1).as_deref(), Some("198.51.100.2"));
    }

    #[test]
    fn ipv6_is_keyed_by_prefix() {
        assert_eq!(
            xff("2001:db8:1:2:aaaa::1", 1).as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(
            xff("[2001:db8:1:2:bbbb::9]:443", 1).as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(xff("[2001:db8::1]", 1).as_deref(), Some("2001:db8::/64"));
        assert_eq!(
            key_text("2001:db8::1".parse().unwrap(), 128),
            "2001:db8::1/128"
        );
        // IPv4-mapped is the IPv4 client.
        assert_eq!(xff("::ffff:192.0.2.1", 1).as_deref(), Some("192.0.2.1"));
    }
}
