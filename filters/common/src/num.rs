//! Decimal text for integers without core's formatting machinery (which
//! is large and slow in wasm): what per-request code writes into headers,
//! bodies and records.

/// Appends `n` in decimal.
pub fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        if let Some(slot) = buf.get_mut(i) {
            *slot = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    // ASCII digits: one copy, no per-character UTF-8 encoding.
    if let Ok(digits) = std::str::from_utf8(buf.get(i..).unwrap_or_default()) {
        out.push_str(digits);
    }
}

/// `n` in decimal.
pub fn u64_text(n: u64) -> String {
    let mut s = String::with_capacity(20);
    push_u64(&mut s, n);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_display() {
        for n in [0, 1, 9, 10, 99, 100, 12345, u64::from(u32::MAX), u64::MAX] {
            assert_eq!(u64_text(n), n.to_string());
        }
    }
}
