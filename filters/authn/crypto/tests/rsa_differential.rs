//! RSA: the modpow driver and the PKCS#1 v1.5 / PSS checks against `rsa` 0.9 and its
//! bignum (num-bigint-dig), an implementation that shares no code with this crate.

// Test code: a panic is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use meshguard_authn_crypto::{__rsa_public_op, Alg, KeyError, VerifyingKey};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPrivateKey};
use sha2_010::{Digest, Sha256, Sha384, Sha512};

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// A random odd number of exactly `bits` bits.
fn random_odd(r: &mut impl RngCore, bits: usize) -> Vec<u8> {
    let mut b = vec![0u8; bits.div_ceil(8)];
    r.fill_bytes(&mut b);
    let top = (bits - 1) % 8;
    b[0] &= (1u16 << (top + 1)).wrapping_sub(1) as u8;
    b[0] |= 1 << top;
    *b.last_mut().unwrap() |= 1;
    b
}

fn to_k_bytes(x: &BigUint, k: usize) -> Vec<u8> {
    let b = x.to_bytes_be();
    let mut out = vec![0u8; k - b.len()];
    out.extend_from_slice(&b);
    out
}

/// `s^e mod n` for thousands of random odd moduli and exponents against num-bigint-dig.
#[test]
fn modpow_matches_num_bigint_over_random_moduli() {
    let mut r = rng(1);
    let mut checked = 0;
    for (bits, count) in [
        (2048, 2000),
        (2049, 200),
        (3072, 500),
        (4096, 300),
        (2055, 100),
    ] {
        for i in 0..count {
            let n_bytes = random_odd(&mut r, bits);
            let n = BigUint::from_bytes_be(&n_bytes);
            // Mostly 65537 (what JWKS use), also 3 and random odd exponents of many sizes.
            let e_bytes: Vec<u8> = match i % 4 {
                0 | 1 => vec![1, 0, 1],
                2 => vec![3],
                _ => {
                    let e_bits = r.gen_range(2..=64);
                    random_odd(&mut r, e_bits)
                }
            };
            let e = BigUint::from_bytes_be(&e_bytes);
            let key = VerifyingKey::rsa(&n_bytes, &e_bytes).unwrap();
            let k = n_bytes.len();
            // s: random below n, plus the edges 0, 1, n − 1.
            let s = match i % 50 {
                0 => BigUint::from(0u8),
                1 => BigUint::from(1u8),
                2 => &n - BigUint::from(1u8),
                _ => {
                    BigUint::from_bytes_be(&{
                        let mut b = vec![0u8; k];
                        r.fill_bytes(&mut b);
                        b
                    }) % &n
                }
            };
            let s_bytes = to_k_bytes(&s, k);
            let want = to_k_bytes(&s.modpow(&e, &n), k);
            assert_eq!(
                __rsa_public_op(&key, &s_bytes),
                Some(want),
                "bits {bits} case {i}"
            );
            // s = n and s > n are refused, and so is any other length than k.
            assert_eq!(__rsa_public_op(&key, &n_bytes), None);
            assert_eq!(__rsa_public_op(&key, &vec![0xff; k]), None);
            assert_eq!(__rsa_public_op(&key, &s_bytes[1..]), None);
            let mut longer = vec![0u8];
            longer.extend_from_slice(&s_bytes);
            assert_eq!(__rsa_public_op(&key, &longer), None);
            checked += 1;
        }
    }
    assert_eq!(checked, 3100);
}

struct Keys {
    key: RsaPrivateKey,
    ours: VerifyingKey,
}

fn keys() -> Vec<Keys> {
    let mut r = rng(2);
    // A few dozen real keys; 2049 and 3073 bits make modBits ≡ 1 (mod 8), where the PSS
    // encoding is one byte shorter than the modulus.
    let mut sizes = vec![2048; 20];
    sizes.extend([2049, 2056, 2055, 3072, 3072, 3073, 4096]);
    sizes
        .into_iter()
        .map(|bits| {
            let key = RsaPrivateKey::new(&mut r, bits).unwrap();
            let ours = VerifyingKey::rsa(&key.n().to_bytes_be(), &key.e().to_bytes_be()).unwrap();
            assert_eq!(ours.bits(), bits);
            Keys { key, ours }
        })
        .collect()
}

fn hash(alg: Alg, m: &[u8]) -> Vec<u8> {
    match alg {
        Alg::RS256 | Alg::PS256 => Sha256::digest(m).to_vec(),
        Alg::RS384 | Alg::PS384 => Sha384::digest(m).to_vec(),
        _ => Sha512::digest(m).to_vec(),
    }
}

fn sign(k: &RsaPrivateKey, alg: Alg, m: &[u8], r: &mut ChaCha20Rng) -> Vec<u8> {
    let h = hash(alg, m);
    match alg {
        Alg::RS256 => k.sign(Pkcs1v15Sign::new::<Sha256>(), &h),
        Alg::RS384 => k.sign(Pkcs1v15Sign::new::<Sha384>(), &h),
        Alg::RS512 => k.sign(Pkcs1v15Sign::new::<Sha512>(), &h),
        Alg::PS256 => k.sign_with_rng(r, Pss::new::<Sha256>(), &h),
        Alg::PS384 => k.sign_with_rng(r, Pss::new::<Sha384>(), &h),
        Alg::PS512 => k.sign_with_rng(r, Pss::new::<Sha512>(), &h),
        _ => unreachable!(),
    }
    .unwrap()
}

/// What `rsa` 0.9 says about (alg, message, signature).
fn rsa_says(k: &RsaPrivateKey, alg: Alg, m: &[u8], sig: &[u8]) -> bool {
    let p = k.to_public_key();
    let h = hash(alg, m);
    match alg {
        Alg::RS256 => p.verify(Pkcs1v15Sign::new::<Sha256>(), &h, sig),
        Alg::RS384 => p.verify(Pkcs1v15Sign::new::<Sha384>(), &h, sig),
        Alg::RS512 => p.verify(Pkcs1v15Sign::new::<Sha512>(), &h, sig),
        Alg::PS256 => p.verify(Pss::new::<Sha256>(), &h, sig),
        Alg::PS384 => p.verify(Pss::new::<Sha384>(), &h, sig),
        Alg::PS512 => p.verify(Pss::new::<Sha512>(), &h, sig),
        _ => unreachable!(),
    }
    .is_ok()
}

const RSA_ALGS: [Alg; 6] = [
    Alg::RS256,
    Alg::RS384,
    Alg::RS512,
    Alg::PS256,
    Alg::PS384,
    Alg::PS512,
];

/// Real keys × many messages × every RS/PS alg: `rsa`'s signatures verify; every
/// tampering is refused, and `rsa` agrees on each.
#[test]
fn real_signatures_verify_and_tampered_ones_do_not() {
    let mut r = rng(3);
    let mut verified = 0;
    let mut refused = 0;
    for Keys { key, ours } in keys() {
        let k = key.size();
        for _ in 0..6 {
            let len = r.gen_range(0..700);
            let mut msg = vec![0u8; len];
            r.fill_bytes(&mut msg);
            for alg in RSA_ALGS {
                let sig = sign(&key, alg, &msg, &mut r);
                assert_eq!(sig.len(), k);
                assert!(ours.verify(alg, &msg, &sig), "{alg} {}", ours.bits());
                verified += 1;

                let mut no = |what: &str, a: Alg, m: &[u8], s: &[u8], rsa_too: bool| {
                    assert!(!ours.verify(a, m, s), "{what}: {alg} as {a}");
                    if rsa_too {
                        assert!(!rsa_says(&key, a, m, s), "rsa accepts {what}");
                    }
                    refused += 1;
                };
                // A flipped bit anywhere in the signature or the message.
                let mut s2 = sig.clone();
                let bit = r.gen_range(0..k * 8);
                s2[bit / 8] ^= 1 << (bit % 8);
                no("signature bit", alg, &msg, &s2, true);
                let mut m2 = msg.clone();
                m2.push(b'.');
                if !msg.is_empty() {
                    let bit = r.gen_range(0..msg.len() * 8);
                    m2 = msg.clone();
                    m2[bit / 8] ^= 1 << (bit % 8);
                }
                no("message bit", alg, &m2, &sig, true);
                // The same signature under every other RSA alg (other hash, other padding).
                for other in RSA_ALGS.into_iter().filter(|&o| o != alg) {
                    no("other alg", other, &msg, &sig, true);
                }
                // Not an RSA alg at all.
                for other in [Alg::HS256, Alg::ES256, Alg::EdDSA] {
                    no("non-RSA alg", other, &msg, &sig, false);
                }
                // s ≥ n, zero, one, wrong lengths.
                let n = to_k_bytes(key.n(), k);
                no("s = n", alg, &msg, &n, true);
                let s_plus_n = to_k_bytes(&(BigUint::from_bytes_be(&sig) + key.n()), k + 1);
                no("s + n", alg, &msg, &s_plus_n, true);
                if s_plus_n[0] == 0 {
                    // `rsa` 0.9.10's `Pss` scheme (`SignatureScheme::verify`) has no
                    // s < n check and accepts this malleated signature; its PKCS#1 path
                    // and `pss::VerifyingKey` refuse it. We refuse it for every alg.
                    let pss = matches!(alg, Alg::PS256 | Alg::PS384 | Alg::PS512);
                    no("s + n in k bytes", alg, &msg, &s_plus_n[1..], !pss);
                }
                no("all ff", alg, &msg, &vec![0xff; k], true);
                no("zero", alg, &msg, &vec![0; k], true);
                let mut one = vec![0; k];
                one[k - 1] = 1;
                no("one", alg, &msg, &one, true);
                no("empty", alg, &msg, &[], false);
                no("k - 1 bytes", alg, &msg, &sig[1..], false);
                no("truncated", alg, &msg, &sig[..k - 1], false);
                let mut longer = vec![0];
                longer.extend_from_slice(&sig);
                no("leading zero byte", alg, &msg, &longer, false);
                let mut longer = sig.clone();
                longer.push(0);
                no("trailing byte", alg, &msg, &longer, false);
            }
        }
    }
    assert_eq!(verified, 27 * 6 * 6);
    assert!(refused > 27 * 6 * 6 * 20, "{refused}");
}

/// PSS with another salt length than the hash length is refused (RFC 7518 §3.5), even
/// though it is a valid RSASSA-PSS signature.
#[test]
fn pss_other_salt_lengths_are_refused() {
    let mut r = rng(4);
    let key = RsaPrivateKey::new(&mut r, 2048).unwrap();
    let ours = VerifyingKey::rsa(&key.n().to_bytes_be(), &key.e().to_bytes_be()).unwrap();
    let msg = b"eyJhbGciOiJQUzI1NiJ9.eyJzdWIiOiJ4In0";
    let h = Sha256::digest(msg);
    for salt in [0, 1, 20, 31, 33, 64] {
        let sig = key
            .sign_with_rng(&mut r, Pss::new_with_salt::<Sha256>(salt), &h)
            .unwrap();
        assert!(!ours.verify(Alg::PS256, msg, &sig), "salt {salt}");
    }
    let sig = key
        .sign_with_rng(&mut r, Pss::new_with_salt::<Sha256>(32), &h)
        .unwrap();
    assert!(ours.verify(Alg::PS256, msg, &sig));
}

/// Raw private-key operation: the signature whose public operation yields `em`.
fn forge(key: &RsaPrivateKey, em: &[u8]) -> Vec<u8> {
    let m = BigUint::from_bytes_be(em);
    assert!(&m < key.n());
    to_k_bytes(&m.modpow(key.d(), key.n()), key.size())
}

fn em_of(key: &RsaPrivateKey, sig: &[u8]) -> Vec<u8> {
    let s = BigUint::from_bytes_be(sig);
    to_k_bytes(&s.modpow(key.e(), key.n()), key.size())
}

/// Encodings that lenient PKCS#1 v1.5 parsers accept (Bleichenbacher 2006 and its
/// variants): each is a correct RSA operation on a malformed encoding, and is refused.
#[test]
fn pkcs1_malformed_encodings_are_refused() {
    let mut r = rng(5);
    let key = RsaPrivateKey::new(&mut r, 2048).unwrap();
    let ours = VerifyingKey::rsa(&key.n().to_bytes_be(), &key.e().to_bytes_be()).unwrap();
    let msg = b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0";
    let sig = sign(&key, Alg::RS256, msg, &mut r);
    let em = em_of(&key, &sig);
    assert_eq!(forge(&key, &em), sig);
    assert!(ours.verify(Alg::RS256, msg, &forge(&key, &em)));
    let k = em.len();
    let h = Sha256::digest(msg);
    let t_start = k - 19 - 32;

    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut e = em.clone();
    e[1] = 0x02;
    cases.push(("block type 2", e));
    let mut e = em.clone();
    e[5] = 0xfe;
    cases.push(("PS not all ff", e));
    let mut e = em.clone();
    e[t_start - 1] = 0xff;
    cases.push(("no 00 separator", e));
    let mut e = em.clone();
    e[t_start + 14] ^= 1;
    cases.push(("other OID", e));
    // DigestInfo without the NULL parameters.
    let mut e = vec![0x00, 0x01];
    let no_null: [u8; 17] = [
        0x30, 0x2f, 0x30, 0x0b, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x04, 0x20,
    ];
    e.resize(k - 17 - 32 - 1, 0xff);
    e.push(0);
    e.extend_from_slice(&no_null);
    e.extend_from_slice(&h);
    cases.push(("DigestInfo without NULL", e));
    // Garbage after the hash, PS shortened to make room (the classic e = 3 forgery shape).
    let mut e = vec![
        0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00,
    ];
    e.extend_from_slice(&em[t_start..]);
    e.resize(k, 0xab);
    cases.push(("garbage after hash", e));
    for (what, e) in cases {
        assert_eq!(e.len(), k, "{what}");
        let s = forge(&key, &e);
        assert!(!ours.verify(Alg::RS256, msg, &s), "{what}");
        assert!(!rsa_says(&key, Alg::RS256, msg, &s), "rsa accepts {what}");
    }
}

/// Each check of EMSA-PSS-VERIFY, hit one at a time on an otherwise valid encoding.
#[test]
fn pss_malformed_encodings_are_refused() {
    let mut r = rng(6);
    for bits in [2048, 2049] {
        let key = RsaPrivateKey::new(&mut r, bits).unwrap();
        let ours = VerifyingKey::rsa(&key.n().to_bytes_be(), &key.e().to_bytes_be()).unwrap();
        let msg = b"eyJhbGciOiJQUzI1NiJ9.eyJzdWIiOiJ4In0";
        let sig = sign(&key, Alg::PS256, msg, &mut r);
        let em = em_of(&key, &sig);
        assert!(ours.verify(Alg::PS256, msg, &forge(&key, &em)));
        let k = em.len();
        // With 2049 bits the encoding is k − 1 bytes behind a zero byte.
        let off = if bits % 8 == 1 { 1 } else { 0 };
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut e = em.clone();
        e[k - 1] = 0xbd;
        cases.push(("trailer", e));
        let mut e = em.clone();
        e[k - 2] ^= 1;
        cases.push(("H", e));
        let mut e = em.clone();
        e[off + 3] ^= 0x10;
        cases.push(("PS byte", e));
        let mut e = em.clone();
        e[k - 1 - 32 - 32 - 1] ^= 0x03; // the 0x01 separator becomes 0x02
        cases.push(("separator", e));
        let mut e = em.clone();
        e[k - 1 - 32 - 5] ^= 0x01;
        cases.push(("salt", e));
        if off == 0 {
            // Leftmost unused bit of maskedDB set (emBits = 2047).
            let mut e = em.clone();
            e[0] |= 0x80;
            if BigUint::from_bytes_be(&e) < *key.n() {
                cases.push(("top bit", e));
            }
        } else {
            // The byte before the encoding must be zero.
            let mut e = em.clone();
            e[0] = 0x01;
            if BigUint::from_bytes_be(&e) < *key.n() {
                cases.push(("leading byte", e));
            }
        }
        for (what, e) in cases {
            let s = forge(&key, &e);
            assert!(!ours.verify(Alg::PS256, msg, &s), "{bits} {what}");
            assert!(!rsa_says(&key, Alg::PS256, msg, &s), "rsa accepts {what}");
        }
    }
}

#[test]
fn rsa_key_checks() {
    let mut r = rng(7);
    let n = random_odd(&mut r, 2048);
    assert!(VerifyingKey::rsa(&n, &[1, 0, 1]).is_ok());
    assert!(VerifyingKey::rsa(&n, &[3]).is_ok());
    // Leading zero bytes are not bits.
    let mut padded = vec![0, 0];
    padded.extend_from_slice(&n);
    assert_eq!(
        VerifyingKey::rsa(&padded, &[0, 1, 0, 1]).unwrap().bits(),
        2048
    );
    let small = random_odd(&mut r, 2047);
    assert_eq!(
        VerifyingKey::rsa(&small, &[1, 0, 1]).unwrap_err(),
        KeyError::RsaTooSmall { bits: 2047 }
    );
    assert_eq!(
        VerifyingKey::rsa(&random_odd(&mut r, 1024), &[1, 0, 1]).unwrap_err(),
        KeyError::RsaTooSmall { bits: 1024 }
    );
    assert_eq!(
        VerifyingKey::rsa(&[], &[1, 0, 1]).unwrap_err(),
        KeyError::RsaTooSmall { bits: 0 }
    );
    let mut even = n.clone();
    *even.last_mut().unwrap() &= 0xfe;
    assert_eq!(
        VerifyingKey::rsa(&even, &[1, 0, 1]).unwrap_err(),
        KeyError::BadRsa
    );
    for e in [
        &[][..],
        &[0],
        &[1],
        &[2],
        &[0, 1],
        &[1, 0, 0],
        &[0x10, 0x00],
    ] {
        assert_eq!(
            VerifyingKey::rsa(&n, e).unwrap_err(),
            KeyError::BadRsa,
            "{e:?}"
        );
    }
    // e ≥ n.
    assert_eq!(VerifyingKey::rsa(&n, &n).unwrap_err(), KeyError::BadRsa);
    let mut e = vec![1];
    e.extend_from_slice(&n);
    assert_eq!(VerifyingKey::rsa(&n, &e).unwrap_err(), KeyError::BadRsa);
    // e over 64 bits (valid, but every verify would pay a squaring per bit).
    let mut e = vec![0u8; 9];
    e[0] = 1;
    e[8] = 1;
    assert_eq!(VerifyingKey::rsa(&n, &e).unwrap_err(), KeyError::BadRsa);
    assert!(VerifyingKey::rsa(&n, &[0xff; 8]).is_ok());
    // Over the size cap.
    assert_eq!(
        VerifyingKey::rsa(&random_odd(&mut r, 8193), &[1, 0, 1]).unwrap_err(),
        KeyError::BadRsa
    );
    assert!(VerifyingKey::rsa(&random_odd(&mut r, 8192), &[1, 0, 1]).is_ok());
    let k = VerifyingKey::rsa(&n, &[1, 0, 1]).unwrap();
    for a in Alg::ALL {
        assert_eq!(k.accepts(a), RSA_ALGS.contains(&a), "{a}");
    }
}

/// Moduli whose limbs are all ones or mostly zeros, and bases next to them: the carry
/// and final-subtraction edges of the 32-bit-limb Montgomery code.
#[test]
fn modpow_matches_num_bigint_on_extreme_moduli() {
    let mut r = rng(7);
    let mut moduli: Vec<Vec<u8>> = Vec::new();
    for bytes in [256usize, 257, 259, 384, 512] {
        // 2^(8·bytes) − 1: every limb 0xffffffff.
        moduli.push(vec![0xff; bytes]);
        // 2^(8·bytes − 1) + 1: the top bit, the bottom bit, zeros between.
        let mut low = vec![0u8; bytes];
        low[0] = 0x80;
        low[bytes - 1] = 1;
        moduli.push(low);
        // Top limb all ones, the rest random.
        let mut mixed = vec![0u8; bytes];
        r.fill_bytes(&mut mixed);
        mixed[..4].fill(0xff);
        mixed[bytes - 1] |= 1;
        moduli.push(mixed);
        // Low limb 1 (n0 = −1), all other limbs 0xffffffff.
        let mut ones = vec![0xff; bytes];
        ones[bytes - 4..].copy_from_slice(&[0, 0, 0, 1]);
        moduli.push(ones);
    }
    let mut checked = 0;
    for n_bytes in &moduli {
        let n = BigUint::from_bytes_be(n_bytes);
        let k = n_bytes.len();
        for e_bytes in [vec![1u8, 0, 1], vec![3], vec![0xff, 0xff, 0xff, 0xff, 0xff]] {
            let e = BigUint::from_bytes_be(&e_bytes);
            let key = VerifyingKey::rsa(n_bytes, &e_bytes).unwrap();
            let one = BigUint::from(1u8);
            let bases = [
                BigUint::from(0u8),
                one.clone(),
                BigUint::from(2u8),
                &n - &one,
                &n - BigUint::from(2u8),
                &n >> 1,
                (&n >> 1) + &one,
                BigUint::from_bytes_be(&vec![0xff; k - 1]),
            ];
            for s in bases {
                let s_bytes = to_k_bytes(&s, k);
                let want = to_k_bytes(&s.modpow(&e, &n), k);
                assert_eq!(
                    __rsa_public_op(&key, &s_bytes),
                    Some(want),
                    "n {n:x} s {s:x}"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, moduli.len() * 3 * 8);
}
