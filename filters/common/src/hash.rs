//! Stable hashing for sticky assignment.
//!
//! The hash must give the same answer on every worker, after restarts, on
//! every replica and in every language someone may re-implement it in, so it
//! is a fixed, published function: MurmurHash3 x86_32 with seed 0 (the one
//! Unleash and many A/B tools use), over UTF-8 bytes.

/// Number of buckets a key is hashed into.
pub const BUCKETS: u32 = 10_000;

/// MurmurHash3, x86 32-bit variant.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    murmur3_32_parts(&[data], seed)
}

/// MurmurHash3 x86_32 of the concatenation of `parts`, without building it.
pub fn murmur3_32_parts(parts: &[&[u8]], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let mut block: u32 = 0;
    let mut filled = 0u32;
    let mut len: usize = 0;
    for part in parts {
        len += part.len();
        for b in part.iter() {
            block |= u32::from(*b) << (8 * filled);
            filled += 1;
            if filled == 4 {
                let k = block.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
                h ^= k;
                h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
                block = 0;
                filled = 0;
            }
        }
    }
    if filled > 0 {
        h ^= block.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    }
    h ^= len as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Bucket in `0..BUCKETS` for `key` within `namespace` (the experiment name):
/// `murmur3_32("<namespace>:<key>", 0) % 10000` over the key's raw bytes.
/// Namespaces cannot contain `:` (config validation), so different
/// (namespace, key) pairs never share an input.
pub fn bucket(namespace: &str, key: &[u8]) -> u32 {
    murmur3_32_parts(&[namespace.as_bytes(), b":", key], 0) % BUCKETS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur3_reference_vectors() {
        // Published MurmurHash3_x86_32 test vectors.
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"", 0xffff_ffff), 0x81f1_6f39);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(murmur3_32(b"Hello, world!", 1234), 0xfaf6_cdb3);
        assert_eq!(
            murmur3_32(b"The quick brown fox jumps over the lazy dog", 0),
            0x2e4f_f723
        );
        assert_eq!(murmur3_32(&[0x21, 0x43, 0x65, 0x87], 0), 0xf55b_516b);
        assert_eq!(murmur3_32(&[0x21, 0x43, 0x65], 0), 0x7e4a_8634);
        assert_eq!(murmur3_32(&[0x21, 0x43], 0), 0xa0f7_b07a);
        assert_eq!(murmur3_32(&[0x21], 0), 0x7266_1cf4);
    }

    #[test]
    fn parts_equal_concatenation() {
        let whole = b"The quick brown fox jumps over the lazy dog";
        for split in 0..whole.len() {
            for split2 in split..whole.len() {
                let parts = [&whole[..split], &whole[split..split2], &whole[split2..]];
                assert_eq!(murmur3_32_parts(&parts, 7), murmur3_32_parts(&[whole], 7));
            }
        }
    }

    #[test]
    fn bucket_is_stable_and_in_range() {
        // Pinned values: changing them reshuffles every user in production.
        assert_eq!(
            bucket("checkout", b"user-1"),
            murmur3_32(b"checkout:user-1", 0) % 10_000
        );
        let pinned = [
            bucket("checkout", b"user-1"),
            bucket("checkout", b"user-2"),
            bucket("search", b"user-1"),
        ];
        assert_eq!(pinned, PINNED);
        for i in 0..1000 {
            assert!(bucket("e", i.to_string().as_bytes()) < BUCKETS);
        }
    }
    // Cross-checked with Python `mmh3.hash(s, 0, signed=False) % 10000`.
    const PINNED: [u32; 3] = [2333, 210, 9915];
}
