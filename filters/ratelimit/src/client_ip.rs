//! The client IP a `client_ip` key uses: from `x-forwarded-for` when
//! trusted proxies put it there, else the connection's `source.address`.
//! Everything here is hostile input: a spoofed or 64 KB header costs a
//! scan of its last few entries, never a panic.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use meshguard_common::num::push_u64;

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
    let mut out = String::with_capacity(48);
    match ip.to_canonical() {
        IpAddr::V4(v4) => push_v4(&mut out, v4.octets()),
        IpAddr::V6(v6) => {
            let prefix = u32::from(ipv6_prefix.clamp(1, 128));
            let bits = u128::from(v6);
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            push_v6(&mut out, Ipv6Addr::from(bits & mask));
            out.push('/');
            push_u64(&mut out, u64::from(prefix));
        }
    }
    out
}

// The text is what `Display` prints (RFC 5952; tests compare the two over
// many addresses), written out here because `core::fmt`'s IPv6 printer is
// 2 KB of the module's 200 KB budget.

fn push_v4(out: &mut String, [a, b, c, d]: [u8; 4]) {
    for (i, n) in [a, b, c, d].into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        push_u64(out, u64::from(n));
    }
}

/// RFC 5952: lowercase hex groups without leading zeros, the longest run
/// of two or more zero groups (the first of equals) as `::`, and an
/// IPv4-mapped address as `::ffff:a.b.c.d`.
fn push_v6(out: &mut String, ip: Ipv6Addr) {
    if let Some(v4) = ip.to_ipv4_mapped() {
        out.push_str("::ffff:");
        push_v4(out, v4.octets());
        return;
    }
    let groups = ip.segments();
    // The longest run of zero groups: (start, length).
    let (mut best, mut run) = ((0usize, 0usize), (0usize, 0usize));
    for (i, g) in groups.iter().enumerate() {
        if *g == 0 {
            if run.1 == 0 {
                run.0 = i;
            }
            run.1 += 1;
            if run.1 > best.1 {
                best = run;
            }
        } else {
            run.1 = 0;
        }
    }
    let (skip_from, skip_to) = if best.1 >= 2 {
        (best.0, best.0 + best.1)
    } else {
        (usize::MAX, usize::MAX)
    };
    for (i, g) in groups.iter().enumerate() {
        if i == skip_from {
            out.push_str("::");
            continue;
        }
        if i > skip_from && i < skip_to {
            continue;
        }
        if i > 0 && i != skip_to {
            out.push(':');
        }
        push_hex(out, *g);
    }
}

fn push_hex(out: &mut String, g: u16) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut started = false;
    for shift in [12u32, 8, 4, 0] {
        let d = usize::from((g >> shift) & 0xf);
        if d != 0 || started || shift == 0 {
            started = true;
            out.push(char::from(DIGITS.get(d).copied().unwrap_or(b'0')));
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

    #[test]
    fn key_text_prints_what_display_prints() {
        let mut addrs: Vec<Ipv6Addr> = vec![
            Ipv6Addr::UNSPECIFIED,
            Ipv6Addr::LOCALHOST,
            "1::".parse().unwrap(),
            "1:0:0:1::".parse().unwrap(),
            "1:0:1:0:1:0:1:0".parse().unwrap(),
            "0:0:1:0:0:1:0:0".parse().unwrap(),
            "1:0:0:2:0:0:0:3".parse().unwrap(),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
            "::ffff:192.0.2.1".parse().unwrap(),
            "::192.0.2.1".parse().unwrap(),
            "64:ff9b::192.0.2.1".parse().unwrap(),
        ];
        // Every pattern of zero and non-zero groups, with varied digits.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for zeros in 0u32..256 {
            let mut g = [0u16; 8];
            for (i, slot) in g.iter_mut().enumerate() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if zeros & (1 << i) == 0 {
                    *slot = (x as u16) >> (x % 16);
                    if *slot == 0 {
                        *slot = 1;
                    }
                }
            }
            addrs.push(Ipv6Addr::from(g));
        }
        for a in addrs {
            let mut got = String::new();
            push_v6(&mut got, a);
            assert_eq!(got, a.to_string(), "{:?}", a.segments());
        }
        for v4 in ["0.0.0.0", "255.255.255.255", "10.0.0.1", "192.168.100.200"] {
            let ip: IpAddr = v4.parse().unwrap();
            assert_eq!(key_text(ip, 64), v4);
        }
        let v6: IpAddr = "2001:db8:1:2:3:4:5:6".parse().unwrap();
        assert_eq!(key_text(v6, 48), "2001:db8:1::/48");
        assert_eq!(key_text(v6, 0), "::/1");
        assert_eq!(key_text(v6, 200), "2001:db8:1:2:3:4:5:6/128");
    }
}
