//! ECDSA, EdDSA and HMAC, plus every alg signed by `jsonwebtoken` 10 (rust_crypto: rsa
//! 0.9, p256/p384 0.13, ed25519-dalek 2, hmac 0.12) as an independent signer, keys
//! passed as the JWK components the filter will hand over.

// Test code: a panic is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey};
use meshguard_authn_crypto::{Alg, KeyError, VerifyingKey};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

const MSG: &[u8] =
    b"eyJhbGciOiJFUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJ1c2VyLTQyIiwiZXhwIjo0MTAyNDQ0ODAwfQ";

fn der(raw: &[u8]) -> Vec<u8> {
    let int = |b: &[u8]| {
        let b = &b[b.iter().position(|&x| x != 0).unwrap_or(b.len() - 1)..];
        let mut v = vec![0x02];
        let pad = b[0] & 0x80 != 0;
        v.push((b.len() + pad as usize) as u8);
        if pad {
            v.push(0);
        }
        v.extend_from_slice(b);
        v
    };
    let (r, s) = raw.split_at(raw.len() / 2);
    let body = [int(r), int(s)].concat();
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

fn others(key: &VerifyingKey, msg: &[u8], sig: &[u8], good: Alg) {
    for a in Alg::ALL.into_iter().filter(|&a| a != good) {
        assert!(!key.verify(a, msg, sig), "{good} signature passed as {a}");
    }
}

fn tampered(key: &VerifyingKey, alg: Alg, msg: &[u8], sig: &[u8], r: &mut ChaCha20Rng) {
    let mut s = sig.to_vec();
    let bit = r.gen_range(0..s.len() * 8);
    s[bit / 8] ^= 1 << (bit % 8);
    assert!(!key.verify(alg, msg, &s), "{alg} sig bit {bit}");
    let mut m = msg.to_vec();
    let bit = r.gen_range(0..m.len() * 8);
    m[bit / 8] ^= 1 << (bit % 8);
    assert!(!key.verify(alg, &m, sig), "{alg} msg bit {bit}");
    assert!(!key.verify(alg, msg, &sig[..sig.len() - 1]));
    assert!(!key.verify(alg, msg, &[sig, &[0]].concat()));
    assert!(!key.verify(alg, msg, &[]));
    assert!(!key.verify(alg, msg, &vec![0; sig.len()]));
    assert!(!key.verify(alg, msg, &vec![0xff; sig.len()]));
}

#[test]
fn es256_signed_by_p256_verifies_der_and_tampering_do_not() {
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::{Signature, SigningKey};
    let mut r = ChaCha20Rng::seed_from_u64(10);
    for i in 0..200 {
        let mut secret = [0u8; 32];
        r.fill_bytes(&mut secret);
        let Ok(sk) = SigningKey::from_slice(&secret) else {
            continue;
        };
        let point = sk.verifying_key().to_sec1_point(false);
        let bytes = point.as_bytes();
        let key = VerifyingKey::ec("P-256", &bytes[1..33], &bytes[33..65]).unwrap();
        assert_eq!(key.bits(), 256);
        let msg = format!("{}.{i}", String::from_utf8_lossy(MSG));
        let sig: Signature = sk.sign(msg.as_bytes());
        let raw = sig.to_bytes();
        assert!(key.verify(Alg::ES256, msg.as_bytes(), &raw));
        tampered(&key, Alg::ES256, msg.as_bytes(), &raw, &mut r);
        others(&key, msg.as_bytes(), &raw, Alg::ES256);
        // DER is not JWS: refused, whatever its length.
        let d = der(&raw);
        assert!(
            !key.verify(Alg::ES256, msg.as_bytes(), &d),
            "DER {}",
            d.len()
        );
        // High-S (s' = n − s): p256 0.14 accepts it, and so do we (JOSE does not
        // require low-S; ECDSA signatures are malleable, tokens are not compared by
        // signature bytes).
        let high = Signature::from_scalars(sig.r(), -sig.s()).unwrap();
        assert!(key.verify(Alg::ES256, msg.as_bytes(), &high.to_bytes()));
    }
}

#[test]
fn es384_signed_by_p384_verifies_der_and_tampering_do_not() {
    use p384::ecdsa::signature::Signer;
    use p384::ecdsa::{Signature, SigningKey};
    let mut r = ChaCha20Rng::seed_from_u64(11);
    for i in 0..100 {
        let mut secret = [0u8; 48];
        r.fill_bytes(&mut secret);
        let Ok(sk) = SigningKey::from_slice(&secret) else {
            continue;
        };
        let point = sk.verifying_key().to_sec1_point(false);
        let bytes = point.as_bytes();
        let key = VerifyingKey::ec("P-384", &bytes[1..49], &bytes[49..97]).unwrap();
        assert_eq!(key.bits(), 384);
        let msg = format!("{}.{i}", String::from_utf8_lossy(MSG));
        let sig: Signature = sk.sign(msg.as_bytes());
        let raw = sig.to_bytes();
        assert!(key.verify(Alg::ES384, msg.as_bytes(), &raw));
        tampered(&key, Alg::ES384, msg.as_bytes(), &raw, &mut r);
        others(&key, msg.as_bytes(), &raw, Alg::ES384);
        assert!(!key.verify(Alg::ES384, msg.as_bytes(), &der(&raw)));
        let high = Signature::from_scalars(sig.r(), -sig.s()).unwrap();
        assert!(key.verify(Alg::ES384, msg.as_bytes(), &high.to_bytes()));
    }
}

#[test]
fn ec_key_checks() {
    let mut r = ChaCha20Rng::seed_from_u64(12);
    for _ in 0..200 {
        let mut x = [0u8; 32];
        let mut y = [0u8; 32];
        r.fill_bytes(&mut x);
        r.fill_bytes(&mut y);
        assert_eq!(
            VerifyingKey::ec("P-256", &x, &y).unwrap_err(),
            KeyError::BadEc
        );
    }
    assert_eq!(
        VerifyingKey::ec("P-256", &[0; 32], &[0; 32]).unwrap_err(),
        KeyError::BadEc
    );
    assert_eq!(
        VerifyingKey::ec("P-384", &[0; 48], &[0; 48]).unwrap_err(),
        KeyError::BadEc
    );
    // A valid P-256 point with a short or padded coordinate, or under the other curve.
    let sk = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
    let p = sk.verifying_key().to_sec1_point(false);
    let (x, y) = (&p.as_bytes()[1..33], &p.as_bytes()[33..65]);
    assert!(VerifyingKey::ec("P-256", x, y).is_ok());
    assert_eq!(
        VerifyingKey::ec("P-256", &x[1..], y).unwrap_err(),
        KeyError::BadEc
    );
    assert_eq!(
        VerifyingKey::ec("P-256", &[&[0], x].concat(), y).unwrap_err(),
        KeyError::BadEc
    );
    assert_eq!(
        VerifyingKey::ec("P-384", x, y).unwrap_err(),
        KeyError::BadEc
    );
    for crv in ["P-521", "secp256k1", "p-256", "P256", "", "Ed25519"] {
        assert_eq!(
            VerifyingKey::ec(crv, x, y).unwrap_err(),
            KeyError::Unsupported,
            "{crv}"
        );
    }
    let k = VerifyingKey::ec("P-256", x, y).unwrap();
    for a in Alg::ALL {
        assert_eq!(k.accepts(a), a == Alg::ES256, "{a}");
    }
}

#[test]
fn eddsa_signed_by_dalek_verifies() {
    use ed25519_dalek::{Signer, SigningKey};
    let mut r = ChaCha20Rng::seed_from_u64(13);
    for i in 0..200 {
        let mut secret = [0u8; 32];
        r.fill_bytes(&mut secret);
        let sk = SigningKey::from_bytes(&secret);
        let key = VerifyingKey::ed25519(sk.verifying_key().as_bytes()).unwrap();
        assert_eq!(key.bits(), 256);
        let msg = format!("{}.{i}", String::from_utf8_lossy(MSG));
        let sig = sk.sign(msg.as_bytes()).to_bytes();
        assert!(key.verify(Alg::EdDSA, msg.as_bytes(), &sig));
        tampered(&key, Alg::EdDSA, msg.as_bytes(), &sig, &mut r);
        others(&key, msg.as_bytes(), &sig, Alg::EdDSA);
        // Non-canonical S (S + ℓ) is refused.
        let mut s_plus_l = sig;
        let l: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for j in 0..32 {
            let v = s_plus_l[32 + j] as u16 + l[j] as u16 + carry;
            s_plus_l[32 + j] = v as u8;
            carry = v >> 8;
        }
        assert!(!key.verify(Alg::EdDSA, msg.as_bytes(), &s_plus_l));
    }
    // Small-order points are refused as keys; so are non-points and wrong lengths.
    let identity = {
        let mut b = [0u8; 32];
        b[0] = 1;
        b
    };
    assert_eq!(
        VerifyingKey::ed25519(&identity).unwrap_err(),
        KeyError::BadOkp
    );
    assert_eq!(
        VerifyingKey::ed25519(&[0; 32]).unwrap_err(),
        KeyError::BadOkp
    );
    assert_eq!(
        VerifyingKey::ed25519(&[1; 31]).unwrap_err(),
        KeyError::BadOkp
    );
    assert_eq!(
        VerifyingKey::ed25519(&[1; 33]).unwrap_err(),
        KeyError::BadOkp
    );
    let mut bad = 0;
    for _ in 0..100 {
        let mut x = [0u8; 32];
        r.fill_bytes(&mut x);
        bad += VerifyingKey::ed25519(&x).is_err() as u32;
    }
    assert!(
        bad > 20,
        "about half of random strings are not points: {bad}"
    );
}

#[test]
fn hmac_verifies_in_all_three_sizes_and_refuses_the_rest() {
    use hmac::{Hmac, KeyInit, Mac};
    let mut r = ChaCha20Rng::seed_from_u64(14);
    assert_eq!(VerifyingKey::hmac(&[]).unwrap_err(), KeyError::EmptySecret);
    for len in [1usize, 16, 32, 64, 65, 200] {
        let mut secret = vec![0u8; len];
        r.fill_bytes(&mut secret);
        let key = VerifyingKey::hmac(&secret).unwrap();
        assert_eq!(key.bits(), len * 8);
        let t256 = Hmac::<sha2::Sha256>::new_from_slice(&secret)
            .unwrap()
            .chain_update(MSG)
            .finalize()
            .into_bytes();
        let t384 = Hmac::<sha2::Sha384>::new_from_slice(&secret)
            .unwrap()
            .chain_update(MSG)
            .finalize()
            .into_bytes();
        let t512 = Hmac::<sha2::Sha512>::new_from_slice(&secret)
            .unwrap()
            .chain_update(MSG)
            .finalize()
            .into_bytes();
        for (alg, tag) in [
            (Alg::HS256, &t256[..]),
            (Alg::HS384, &t384[..]),
            (Alg::HS512, &t512[..]),
        ] {
            assert!(key.verify(alg, MSG, tag), "{alg}");
            tampered(&key, alg, MSG, tag, &mut r);
            others(&key, MSG, tag, alg);
            // A truncated tag (a prefix) is not a tag.
            assert!(!key.verify(alg, MSG, &tag[..16]));
        }
    }
}

fn jwk_key(enc: &EncodingKey, alg: Algorithm) -> VerifyingKey {
    let jwk = Jwk::from_encoding_key(enc, alg).unwrap();
    match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            VerifyingKey::rsa(&B64.decode(&p.n).unwrap(), &B64.decode(&p.e).unwrap()).unwrap()
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let crv = serde_json::to_value(&p.curve).unwrap();
            VerifyingKey::ec(
                crv.as_str().unwrap(),
                &B64.decode(&p.x).unwrap(),
                &B64.decode(&p.y).unwrap(),
            )
            .unwrap()
        }
        AlgorithmParameters::OctetKey(p) => {
            VerifyingKey::hmac(&B64.decode(&p.value).unwrap()).unwrap()
        }
        other => panic!("{other:?}"),
    }
}

/// Every alg, signed by jsonwebtoken 10 (rust_crypto), keys taken from its JWKs.
#[test]
fn jsonwebtoken_signatures_verify() {
    let rsa = EncodingKey::from_rsa_pem(include_bytes!("data/rsa2048.pem")).unwrap();
    let ec256 = EncodingKey::from_ec_pem(include_bytes!("data/ec256.pem")).unwrap();
    let ec384 = EncodingKey::from_ec_pem(include_bytes!("data/ec384.pem")).unwrap();
    let ed = EncodingKey::from_ed_pem(include_bytes!("data/ed25519.pem")).unwrap();
    let hs = EncodingKey::from_secret(b"a-test-secret-of-32-bytes-length");
    let ed_pub = hex(include_str!("data/ed25519.pub.hex").trim());
    let mut r = ChaCha20Rng::seed_from_u64(15);
    let cases = [
        (Algorithm::RS256, Alg::RS256, &rsa),
        (Algorithm::RS384, Alg::RS384, &rsa),
        (Algorithm::RS512, Alg::RS512, &rsa),
        (Algorithm::PS256, Alg::PS256, &rsa),
        (Algorithm::PS384, Alg::PS384, &rsa),
        (Algorithm::PS512, Alg::PS512, &rsa),
        (Algorithm::ES256, Alg::ES256, &ec256),
        (Algorithm::ES384, Alg::ES384, &ec384),
        (Algorithm::EdDSA, Alg::EdDSA, &ed),
        (Algorithm::HS256, Alg::HS256, &hs),
        (Algorithm::HS384, Alg::HS384, &hs),
        (Algorithm::HS512, Alg::HS512, &hs),
    ];
    for (jalg, alg, enc) in cases {
        let key = if alg == Alg::EdDSA {
            VerifyingKey::ed25519(&ed_pub).unwrap()
        } else {
            jwk_key(enc, jalg)
        };
        for i in 0..10 {
            let header = B64.encode(format!(r#"{{"alg":"{}","typ":"JWT"}}"#, alg.as_str()));
            let payload = B64.encode(format!(r#"{{"sub":"user-{i}","exp":4102444800}}"#));
            let msg = format!("{header}.{payload}");
            let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), enc, jalg).unwrap();
            let sig = B64.decode(sig).unwrap();
            assert!(key.verify(alg, msg.as_bytes(), &sig), "{alg}");
            tampered(&key, alg, msg.as_bytes(), &sig, &mut r);
            others(&key, msg.as_bytes(), &sig, alg);
        }
    }
    // HS256 "signed" with the RSA public key's bytes (the classic confusion attack):
    // the RSA key never accepts it, whatever the bytes.
    let rsa_key = jwk_key(&rsa, Algorithm::RS256);
    let jwk = Jwk::from_encoding_key(&rsa, Algorithm::RS256).unwrap();
    let AlgorithmParameters::RSA(p) = &jwk.algorithm else {
        unreachable!()
    };
    let forged = jsonwebtoken::crypto::sign(
        MSG,
        &EncodingKey::from_secret(&B64.decode(&p.n).unwrap()),
        Algorithm::HS256,
    )
    .unwrap();
    assert!(!rsa_key.verify(Alg::HS256, MSG, &B64.decode(forged).unwrap()));
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
