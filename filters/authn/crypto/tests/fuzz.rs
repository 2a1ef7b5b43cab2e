//! Arbitrary bytes as keys, messages and signatures: key constructors return a value or
//! an error, `verify` returns a bool, nothing panics. Proptest shrinks any failure.

// Test code: a panic is how a test fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use meshguard_authn_crypto::{Alg, VerifyingKey};
use proptest::prelude::*;

fn alg() -> impl Strategy<Value = Alg> {
    (0..Alg::ALL.len()).prop_map(|i| Alg::ALL[i])
}

/// Byte strings around the lengths that matter (0, 31..33, 48, 64, 96, 256, 257, 512).
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        proptest::collection::vec(any::<u8>(), 250..260),
        proptest::collection::vec(any::<u8>(), 510..514),
        prop_oneof![
            Just(32usize),
            Just(48),
            Just(64),
            Just(96),
            Just(256),
            Just(384)
        ]
        .prop_flat_map(|n| proptest::collection::vec(any::<u8>(), n)),
    ]
}

/// A real 2048-bit modulus-shaped value: top bit and low bit set, so `rsa` accepts it
/// and `verify` gets to the bignum and encoding code with arbitrary signatures.
fn modulus() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 256).prop_map(|mut n| {
        n[0] |= 0x80;
        n[255] |= 1;
        n
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_keys_never_panic(a in bytes(), b in bytes(), crv in "(P-256|P-384|P-521|.{0,6})") {
        for key in [
            VerifyingKey::rsa(&a, &b),
            VerifyingKey::ec(&crv, &a, &b),
            VerifyingKey::ed25519(&a),
            VerifyingKey::hmac(&a),
        ].into_iter().flatten() {
            for alg in Alg::ALL {
                let _ = key.verify(alg, &b, &a);
            }
        }
    }

    #[test]
    fn arbitrary_signatures_on_an_rsa_key_never_verify(
        n in modulus(),
        e in prop_oneof![Just(vec![1u8, 0, 1]), Just(vec![3u8]), proptest::collection::vec(any::<u8>(), 1..6)],
        msg in bytes(),
        sig in prop_oneof![bytes(), proptest::collection::vec(any::<u8>(), 256)],
        alg in alg(),
    ) {
        if let Ok(key) = VerifyingKey::rsa(&n, &e) {
            prop_assert!(!key.verify(alg, &msg, &sig));
        }
    }

    #[test]
    fn arbitrary_signatures_on_real_curve_keys_never_verify(msg in bytes(), sig in bytes(), alg in alg()) {
        let p256 = p256::ecdsa::SigningKey::from_slice(&[7; 32]).unwrap();
        let p = p256.verifying_key().to_sec1_point(false);
        let p384 = p384::ecdsa::SigningKey::from_slice(&[7; 48]).unwrap();
        let q = p384.verifying_key().to_sec1_point(false);
        let ed = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let keys = [
            VerifyingKey::ec("P-256", &p.as_bytes()[1..33], &p.as_bytes()[33..]).unwrap(),
            VerifyingKey::ec("P-384", &q.as_bytes()[1..49], &q.as_bytes()[49..]).unwrap(),
            VerifyingKey::ed25519(ed.verifying_key().as_bytes()).unwrap(),
            VerifyingKey::hmac(&[7; 32]).unwrap(),
        ];
        for key in &keys {
            prop_assert!(!key.verify(alg, &msg, &sig));
        }
    }
}
