//! Cost per verify, before (jsonwebtoken 10 rust_crypto: rsa 0.9, p256/p384 0.13,
//! ed25519-dalek 2, hmac 0.12) and after (this crate), for every alg family.
//!
//! Built for wasm32-wasip1 and run by `examples/fuel.rs`, which counts guest
//! instructions (wasmtime fuel) and time between `bench.begin` and `bench.end`:
//!
//! ```text
//! cargo build --release --target wasm32-wasip1 -p meshguard-authn-crypto --example bench
//! cargo run -p meshguard-authn-crypto --example fuel -- \
//!     $CARGO_TARGET_DIR/wasm32-wasip1/release/examples/bench.wasm
//! ```
//!
//! Natively (`cargo run --release --example bench`) it prints wall time per verify.

// Benchmark tool, not filter code: a failed setup should stop it loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use meshguard_authn_crypto::{Alg, VerifyingKey};
use std::hint::black_box;

#[cfg(target_family = "wasm")]
mod clock {
    #[link(wasm_import_module = "bench")]
    extern "C" {
        fn begin();
        fn end(label: *const u8, len: usize, iters: u32);
    }
    pub fn start() {
        // SAFETY: host functions with no memory access (begin) or reading `len` bytes
        // at `label` (end).
        unsafe { begin() }
    }
    pub fn stop(label: &str, iters: u32) {
        // SAFETY: see above.
        unsafe { end(label.as_ptr(), label.len(), iters) }
    }
}

#[cfg(not(target_family = "wasm"))]
mod clock {
    use std::cell::Cell;
    use std::time::Instant;
    thread_local!(static T: Cell<Option<Instant>> = const { Cell::new(None) });
    pub fn start() {
        T.with(|t| t.set(Some(Instant::now())));
    }
    pub fn stop(label: &str, iters: u32) {
        let e = T.with(|t| t.get()).unwrap().elapsed();
        println!(
            "{label:<28} {:>10.1} µs",
            e.as_secs_f64() * 1e6 / iters as f64
        );
    }
}

struct Case {
    alg: Alg,
    jalg: Algorithm,
    enc: EncodingKey,
    dec: DecodingKey,
    /// JWK components as the filter gets them (base64url-decoded).
    parts: Vec<Vec<u8>>,
}

fn case(alg: Alg, jalg: Algorithm, enc: EncodingKey, ed_pub: &[u8]) -> Case {
    let (dec, parts) = if alg == Alg::EdDSA {
        (
            DecodingKey::from_ed_components(&B64.encode(ed_pub)).unwrap(),
            vec![ed_pub.to_vec()],
        )
    } else {
        let jwk = Jwk::from_encoding_key(&enc, jalg).unwrap();
        let parts = match &jwk.algorithm {
            AlgorithmParameters::RSA(p) => {
                vec![B64.decode(&p.n).unwrap(), B64.decode(&p.e).unwrap()]
            }
            AlgorithmParameters::EllipticCurve(p) => {
                vec![B64.decode(&p.x).unwrap(), B64.decode(&p.y).unwrap()]
            }
            AlgorithmParameters::OctetKey(p) => vec![B64.decode(&p.value).unwrap()],
            _ => unreachable!(),
        };
        (DecodingKey::from_jwk(&jwk).unwrap(), parts)
    };
    Case {
        alg,
        jalg,
        enc,
        dec,
        parts,
    }
}

fn ours(c: &Case) -> VerifyingKey {
    let p = &c.parts;
    match c.alg {
        Alg::ES256 => VerifyingKey::ec("P-256", &p[0], &p[1]),
        Alg::ES384 => VerifyingKey::ec("P-384", &p[0], &p[1]),
        Alg::EdDSA => VerifyingKey::ed25519(&p[0]),
        Alg::HS256 | Alg::HS384 | Alg::HS512 => VerifyingKey::hmac(&p[0]),
        _ => VerifyingKey::rsa(&p[0], &p[1]),
    }
    .unwrap()
}

fn main() {
    let rsa = || EncodingKey::from_rsa_pem(include_bytes!("../tests/data/rsa2048.pem")).unwrap();
    let ed_hex = include_str!("../tests/data/ed25519.pub.hex").trim();
    let ed_pub: Vec<u8> = (0..ed_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&ed_hex[i..i + 2], 16).unwrap())
        .collect();
    let cases = [
        case(Alg::RS256, Algorithm::RS256, rsa(), &ed_pub),
        case(Alg::PS256, Algorithm::PS256, rsa(), &ed_pub),
        case(
            Alg::ES256,
            Algorithm::ES256,
            EncodingKey::from_ec_pem(include_bytes!("../tests/data/ec256.pem")).unwrap(),
            &ed_pub,
        ),
        case(
            Alg::ES384,
            Algorithm::ES384,
            EncodingKey::from_ec_pem(include_bytes!("../tests/data/ec384.pem")).unwrap(),
            &ed_pub,
        ),
        case(
            Alg::EdDSA,
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(include_bytes!("../tests/data/ed25519.pem")).unwrap(),
            &ed_pub,
        ),
        case(
            Alg::HS256,
            Algorithm::HS256,
            EncodingKey::from_secret(b"a-test-secret-of-32-bytes-length"),
            &ed_pub,
        ),
    ];
    // A typical token: ~60-byte header, ~300-byte payload.
    let header = B64.encode(r#"{"alg":"RS256","typ":"JWT","kid":"2024-06-key-1"}"#);
    let payload = B64.encode(
        r#"{"iss":"https://issuer.example.com/realms/shop","sub":"f47ac10b-58cc-4372-a567-0e02b2c3d479","aud":["orders","billing"],"exp":4102444800,"iat":1717000000,"nbf":1717000000,"scope":"orders:read orders:write","groups":["admin","dev"],"email":"user@example.com","name":"Example User"}"#,
    );
    let msg = format!("{header}.{payload}");
    let msg = msg.as_bytes();
    // Rounds: fuel is the same every time; wall time is the fastest round.
    for _round in 0..6 {
        run(&cases, msg);
    }
}

fn run(cases: &[Case], msg: &[u8]) {
    for c in cases {
        let sig_b64 = jsonwebtoken::crypto::sign(msg, &c.enc, c.jalg).unwrap();
        let sig = B64.decode(&sig_b64).unwrap();
        let key = ours(c);
        assert!(jsonwebtoken::crypto::verify(&sig_b64, msg, &c.dec, c.jalg).unwrap());
        assert!(key.verify(c.alg, msg, &sig));
        let n = match c.alg {
            Alg::HS256 => 200,
            Alg::EdDSA => 50,
            _ => 20,
        };
        let name = c.alg.as_str();

        clock::start();
        for _ in 0..n {
            let ok =
                jsonwebtoken::crypto::verify(black_box(&sig_b64), black_box(msg), &c.dec, c.jalg);
            assert!(black_box(ok).unwrap());
        }
        clock::stop(&format!("{name} before verify"), n);

        clock::start();
        for _ in 0..n {
            assert!(black_box(key.verify(
                c.alg,
                black_box(msg),
                black_box(&sig)
            )));
        }
        clock::stop(&format!("{name} after verify"), n);

        clock::start();
        for _ in 0..n {
            black_box(ours(black_box(c)));
        }
        clock::stop(&format!("{name} after key setup"), n);
    }
}
