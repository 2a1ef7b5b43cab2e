//! JWS signature verification for the authn filter: RS256/384/512, PS256/384/512,
//! ES256/384, EdDSA (Ed25519) and HS256/384/512 — and nothing else (no `none`, no
//! key-type confusion: an RSA/EC/OKP key never verifies an HMAC algorithm).
//!
//! # Why it is fast in Envoy's V8
//!
//! `jsonwebtoken` 10 with `rust_crypto` verifies RS256 with `rsa` 0.9, whose bignum
//! (num-bigint-dig, 64-bit digits) emulates 64×64→128 multiplies on wasm32 and runs a
//! generic modpow with ~95 Montgomery multiplications per verify. Here:
//!
//! * RSA: the Montgomery parameters of `n` (−n⁻¹ mod 2³², R² mod n) are computed once
//!   per key ([`VerifyingKey::rsa`]) and the arithmetic is this crate's own (`mont.rs`):
//!   32-bit limbs, so each limb product is one `i64.mul` in wasm, and variable-time on
//!   purpose (everything in a verify is public). A verify is `s < n`, then `s^e mod n`
//!   by left-to-right square-and-multiply on the public exponent (e = 65537: 16
//!   squarings, each computing its cross products once, + 1 multiply, plus the
//!   conversions in and out of Montgomery form), then a byte-exact EMSA-PKCS1-v1_5
//!   comparison or an EMSA-PSS check (RFC 8017 §9.1.2, MGF1 with the same hash, salt
//!   length = hash length as RFC 7518 §3.5 requires).
//! * ECDSA: `p256`/`p384` 0.14 (`primeorder` arithmetic), key decoded and checked once.
//!   Signatures are raw `r || s` (JWS), DER is rejected by length. High-S signatures are
//!   accepted, as JOSE does not require low-S and `p256`/`p384` 0.14 accept them.
//! * EdDSA: `ed25519-dalek` 3, `verify_strict` (rejects small-order keys and `R`).
//! * HMAC: `hmac` 0.13 + `sha2` 0.11, keyed state precomputed per hash, tag compared
//!   in constant time.
//!
//! Limb size: `p256`/`p384` 0.14 (through `crypto-bigint` 0.7) pick their word size
//! with the `cpubits` crate, which promotes wasm32 to **64-bit** limbs unless the build
//! sets `--cfg cpubits="32"` (a global rustflag). 64-bit limbs emulate 64×64→128
//! multiplies in wasm; for ECDSA they still measured faster in Envoy (ES256 623 against
//! 895 µs), so the build keeps the default and RSA, which wants 32-bit limbs, brings
//! its own arithmetic.
//!
//! Time per verify in node's V8 (`examples/v8.mjs`, the fastest of six rounds, this
//! machine) and guest instructions (wasmtime fuel, `examples/fuel.rs`), 2048-bit RSA,
//! a 400-byte token; before = `jsonwebtoken` 10 `rust_crypto`:
//!
//! | alg   | before, V8 µs | before, fuel | after, V8 µs | after, fuel |
//! |-------|--------------:|-------------:|-------------:|------------:|
//! | RS256 |          1021 |   21 417 511 |          115 |   3 576 229 |
//! | PS256 |          1026 |   21 460 351 |          118 |   3 619 700 |
//! | ES256 |          1091 |   21 765 610 |          747 |  12 705 463 |
//! | ES384 |          7013 |   93 663 995 |         2865 |  55 268 785 |
//! | EdDSA |           120 |    2 083 441 |          135 |   2 293 741 |
//! | HS256 |           3.0 |       59 946 |          2.0 |      46 160 |
//!
//! Fuel is not V8 time: RSA on `crypto-bigint`'s 64-bit limbs ran fewer wasm
//! instructions (3 392 903) but took 156 µs in V8, against 115 µs here.
//!
//! Key setup (once per JWK): RSA 0.26 M instructions (11 µs in V8), P-256 19 k,
//! P-384 48 k, Ed25519 168 k, HMAC 47 k.
//!
//! No function here panics on any input: every length and encoding is checked and a bad
//! one is a `false` (verify) or a [`KeyError`] (key construction).
//!
//! # Tests
//!
//! `tests/rsa_differential.rs` compares the modpow driver with `num-bigint-dig` over
//! thousands of random moduli and checks real `rsa` 0.9 signatures (PKCS#1 v1.5 and PSS
//! with SHA-256/384/512) verify, and that tampered ones (bit flips, wrong hash or alg,
//! `s ≥ n`, zero, wrong lengths) do not. `tests/others.rs` covers ECDSA (incl. DER and
//! high-S), EdDSA and HMAC, with `jsonwebtoken` as an independent signer.
//! `tests/fuzz.rs` feeds arbitrary bytes as keys, messages and signatures (proptest).
//! `examples/bench.rs` + `examples/fuel.rs` count guest instructions per verify in wasm.

use core::fmt;

mod mont;

use hmac::{Hmac, KeyInit, Mac};
use mont::Modulus;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// A JWS signature algorithm this crate verifies (RFC 7518 §3.1, RFC 8037 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl Alg {
    /// Every algorithm, in a fixed order.
    pub const ALL: [Alg; 12] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
    ];

    /// Exact, case-sensitive JOSE names ("RS256", ..., "EdDSA"); None for "none"/unknown/any
    /// other casing.
    pub fn from_jose(s: &str) -> Option<Alg> {
        Alg::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key was refused. Never carries key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// RSA modulus under 2048 bits.
    RsaTooSmall { bits: usize },
    /// Even modulus, exponent < 3 or even, exponent ≥ modulus, or modulus over
    /// [`MAX_RSA_BITS`].
    BadRsa,
    /// Wrong coordinate length or a point not on the curve.
    BadEc,
    /// Not a 32-byte Ed25519 point, or a small-order (weak) one.
    BadOkp,
    /// HMAC secret of zero length.
    EmptySecret,
    /// A curve this crate does not verify.
    Unsupported,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::RsaTooSmall { bits } => {
                write!(f, "RSA key of {bits} bits is under the 2048-bit minimum")
            }
            KeyError::BadRsa => f.write_str("invalid RSA public key"),
            KeyError::BadEc => f.write_str("invalid EC public key"),
            KeyError::BadOkp => f.write_str("invalid Ed25519 public key"),
            KeyError::EmptySecret => f.write_str("empty HMAC secret"),
            KeyError::Unsupported => f.write_str("unsupported key type or curve"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Smallest RSA modulus accepted (RFC 7518 §3.3).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted: bounds the cost of one verify (it grows with the cube
/// of the size) for keys from a remote JWKS.
pub const MAX_RSA_BITS: usize = 8192;
/// Largest RSA public exponent accepted, in bits: a verify costs one squaring per
/// exponent bit, so a huge `e` in a (remote) JWKS would make every verify slow.
/// JWKS use 65537 (17 bits); 64 bits leaves room for any real key.
pub const MAX_RSA_EXPONENT_BITS: usize = 64;

/// A public key (or HMAC secret) ready to verify JWS signatures; everything that
/// depends only on the key is computed once here.
#[derive(Clone)]
pub struct VerifyingKey(Inner);

#[derive(Clone)]
enum Inner {
    Rsa(Box<RsaKey>),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    Hmac(Box<HmacKey>),
}

#[derive(Clone)]
struct RsaKey {
    modulus: Modulus,
    /// Modulus bits (`modBits` in RFC 8017).
    bits: usize,
    /// Modulus length in bytes (`k`): the exact signature length.
    k: usize,
    /// Public exponent bits, most significant first, without the leading 1.
    e_rest: Vec<bool>,
}

#[derive(Clone)]
struct HmacKey {
    bits: usize,
    h256: Hmac<Sha256>,
    h384: Hmac<Sha384>,
    h512: Hmac<Sha512>,
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.0 {
            Inner::Rsa(_) => "RSA",
            Inner::P256(_) => "P-256",
            Inner::P384(_) => "P-384",
            Inner::Ed25519(_) => "Ed25519",
            Inner::Hmac(_) => "HMAC",
        };
        f.debug_struct("VerifyingKey")
            .field("kind", &kind)
            .field("bits", &self.bits())
            .finish_non_exhaustive()
    }
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    b.get(first..).unwrap_or_default()
}

fn bit_len(b: &[u8]) -> usize {
    match b.first() {
        Some(&top) => b.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

impl VerifyingKey {
    /// n, e big-endian unsigned (as in JWK after base64url decoding). Refuses n < 2048
    /// bits, even n, e < 3 or even e, e longer than n (in fact any e ≥ n), e over
    /// [`MAX_RSA_EXPONENT_BITS`], and n over [`MAX_RSA_BITS`]. Leading zero bytes are
    /// ignored.
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<Self, KeyError> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        let bits = bit_len(n);
        if bits < MIN_RSA_BITS {
            return Err(KeyError::RsaTooSmall { bits });
        }
        if bits > MAX_RSA_BITS {
            return Err(KeyError::BadRsa);
        }
        let (Some(&n_low), Some(&e_low)) = (n.last(), e.last()) else {
            return Err(KeyError::BadRsa);
        };
        let e_bits = bit_len(e);
        if n_low & 1 == 0
            || e_low & 1 == 0
            || e_bits < 2
            || e_bits > bits
            || e_bits > MAX_RSA_EXPONENT_BITS
        {
            return Err(KeyError::BadRsa);
        }
        // e < n: compare as big-endian magnitudes (no leading zeros left).
        if (e.len(), e) >= (n.len(), n) {
            return Err(KeyError::BadRsa);
        }
        let limbs = n.len().div_ceil(4);
        let modulus = mont::limbs_from_be(n, limbs)
            .and_then(Modulus::new)
            .ok_or(KeyError::BadRsa)?;
        // Exponent bits below the top one, most significant first.
        let e_rest = (0..e_bits - 1)
            .rev()
            .map(|i| {
                e.get(e.len() - 1 - i / 8)
                    .is_some_and(|byte| byte >> (i % 8) & 1 == 1)
            })
            .collect();
        Ok(VerifyingKey(Inner::Rsa(Box::new(RsaKey {
            modulus,
            bits,
            k: n.len(),
            e_rest,
        }))))
    }

    /// JWK crv "P-256" / "P-384": affine x, y big-endian (32 / 48 bytes); refuses points
    /// not on the curve. Any other `crv` is [`KeyError::Unsupported`].
    pub fn ec(crv: &str, x: &[u8], y: &[u8]) -> Result<Self, KeyError> {
        let size = match crv {
            "P-256" => 32,
            "P-384" => 48,
            _ => return Err(KeyError::Unsupported),
        };
        if x.len() != size || y.len() != size {
            return Err(KeyError::BadEc);
        }
        let mut sec1 = Vec::with_capacity(1 + 2 * size);
        sec1.push(0x04);
        sec1.extend_from_slice(x);
        sec1.extend_from_slice(y);
        let inner = if size == 32 {
            Inner::P256(
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| KeyError::BadEc)?,
            )
        } else {
            Inner::P384(
                p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(|_| KeyError::BadEc)?,
            )
        };
        Ok(VerifyingKey(inner))
    }

    /// JWK kty OKP crv "Ed25519": 32-byte x. Refuses encodings that are not a point and
    /// small-order (weak) points.
    pub fn ed25519(x: &[u8]) -> Result<Self, KeyError> {
        let bytes: &[u8; 32] = x.try_into().map_err(|_| KeyError::BadOkp)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::BadOkp)?;
        if key.is_weak() {
            return Err(KeyError::BadOkp);
        }
        Ok(VerifyingKey(Inner::Ed25519(key)))
    }

    /// Octet key for HS*; refuses empty.
    pub fn hmac(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.is_empty() {
            return Err(KeyError::EmptySecret);
        }
        let key = HmacKey {
            bits: secret.len() * 8,
            h256: Hmac::new_from_slice(secret).map_err(|_| KeyError::EmptySecret)?,
            h384: Hmac::new_from_slice(secret).map_err(|_| KeyError::EmptySecret)?,
            h512: Hmac::new_from_slice(secret).map_err(|_| KeyError::EmptySecret)?,
        };
        Ok(VerifyingKey(Inner::Hmac(Box::new(key))))
    }

    /// Whether this key may verify `alg` (RSA key: RS*/PS*; P-256: ES256 only; P-384:
    /// ES384 only; Ed25519: EdDSA; secret: HS* only). An RSA/EC/OKP key NEVER accepts HS*.
    pub fn accepts(&self, alg: Alg) -> bool {
        use Alg::*;
        matches!(
            (&self.0, alg),
            (Inner::Rsa(_), RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (Inner::P256(_), ES256)
                | (Inner::P384(_), ES384)
                | (Inner::Ed25519(_), EdDSA)
                | (Inner::Hmac(_), HS256 | HS384 | HS512)
        )
    }

    /// RSA modulus bits, EC field bits, 256 for Ed25519, secret bits for HMAC.
    pub fn bits(&self) -> usize {
        match &self.0 {
            Inner::Rsa(k) => k.bits,
            Inner::P256(_) | Inner::Ed25519(_) => 256,
            Inner::P384(_) => 384,
            Inner::Hmac(k) => k.bits,
        }
    }

    /// `message` = ASCII "b64header.b64payload"; `signature` = decoded JWS signature bytes.
    /// False (never panic) when !accepts(alg), on wrong length, bad encoding, or bad
    /// signature. ES256/ES384 signatures are raw r||s (64/96 bytes): DER-encoded signatures
    /// are rejected. HMAC compared in constant time.
    pub fn verify(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        if !self.accepts(alg) {
            return false;
        }
        match &self.0 {
            Inner::Rsa(k) => match alg {
                Alg::RS256 => k.verify_pkcs1::<Sha256>(&SHA256_PREFIX, message, signature),
                Alg::RS384 => k.verify_pkcs1::<Sha384>(&SHA384_PREFIX, message, signature),
                Alg::RS512 => k.verify_pkcs1::<Sha512>(&SHA512_PREFIX, message, signature),
                Alg::PS256 => k.verify_pss::<Sha256>(message, signature),
                Alg::PS384 => k.verify_pss::<Sha384>(message, signature),
                Alg::PS512 => k.verify_pss::<Sha512>(message, signature),
                _ => false,
            },
            Inner::P256(k) => {
                use p256::ecdsa::signature::Verifier;
                signature.len() == 64
                    && p256::ecdsa::Signature::from_slice(signature)
                        .is_ok_and(|sig| k.verify(message, &sig).is_ok())
            }
            Inner::P384(k) => {
                use p384::ecdsa::signature::Verifier;
                signature.len() == 96
                    && p384::ecdsa::Signature::from_slice(signature)
                        .is_ok_and(|sig| k.verify(message, &sig).is_ok())
            }
            Inner::Ed25519(k) => match <&[u8; 64]>::try_from(signature) {
                Ok(bytes) => k
                    .verify_strict(message, &ed25519_dalek::Signature::from_bytes(bytes))
                    .is_ok(),
                Err(_) => false,
            },
            Inner::Hmac(k) => match alg {
                Alg::HS256 => hmac_verify(k.h256.clone(), message, signature),
                Alg::HS384 => hmac_verify(k.h384.clone(), message, signature),
                Alg::HS512 => hmac_verify(k.h512.clone(), message, signature),
                _ => false,
            },
        }
    }
}

/// An HMAC-SHA256 key with its keyed state precomputed: RFC 9421's
/// `hmac-sha256` request signatures.
#[derive(Clone)]
pub struct HmacSha256(Hmac<Sha256>);

impl fmt::Debug for HmacSha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacSha256(<secret>)")
    }
}

impl HmacSha256 {
    /// `None` for an empty secret.
    pub fn new(secret: &[u8]) -> Option<Self> {
        if secret.is_empty() {
            return None;
        }
        Hmac::new_from_slice(secret).ok().map(Self)
    }

    /// Whether `tag` is this key's MAC of `message`, compared in constant
    /// time (`verify_slice`).
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        hmac_verify(self.0.clone(), message, tag)
    }

    /// The MAC of `message` (for signing clients and tests).
    pub fn sign(&self, message: &[u8]) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

/// SHA-256 of `data` (RFC 9530 `Content-Digest: sha-256`).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// SHA-512 of `data` (RFC 9530 `Content-Digest: sha-512`).
pub fn sha512(data: &[u8]) -> [u8; 64] {
    Sha512::digest(data).into()
}

fn hmac_verify<M: Mac>(mut mac: M, message: &[u8], tag: &[u8]) -> bool {
    if tag.len() != <M as hmac::digest::OutputSizeUser>::output_size() {
        return false;
    }
    mac.update(message);
    // Constant-time comparison of the whole tag (`subtle` inside `digest`).
    mac.verify_slice(tag).is_ok()
}

/// DER of `DigestInfo { AlgorithmIdentifier { oid, NULL }, OCTET STRING (hash) }` up to the
/// hash (RFC 8017 §9.2 note 1).
const SHA256_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];
const SHA384_PREFIX: [u8; 19] = [
    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05,
    0x00, 0x04, 0x30,
];
const SHA512_PREFIX: [u8; 19] = [
    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05,
    0x00, 0x04, 0x40,
];

impl RsaKey {
    /// RSAVP1 (RFC 8017 §5.2.2) as the `k`-byte big-endian encoding of `s^e mod n`, or
    /// None when the signature is not exactly `k` bytes or `s ≥ n`.
    fn public_op(&self, signature: &[u8]) -> Option<Vec<u8>> {
        if signature.len() != self.k {
            return None;
        }
        let n = self.modulus.limbs();
        let s = mont::limbs_from_be(signature, n.len())?;
        if !mont::less_than(&s, n) {
            return None;
        }
        mont::limbs_to_be(&self.modulus.pow(&s, &self.e_rest), self.k)
    }

    /// RSASSA-PKCS1-v1_5 verify: the whole encoded message must equal
    /// `00 01 FF..FF 00 || DigestInfo || H(message)`.
    fn verify_pkcs1<D: Digest>(&self, prefix: &[u8], message: &[u8], signature: &[u8]) -> bool {
        let Some(em) = self.public_op(signature) else {
            return false;
        };
        let hash = D::digest(message);
        pkcs1_encoding_matches(&em, prefix, &hash)
    }

    /// RSASSA-PSS verify with MGF1 over the same hash and salt length = hash length.
    fn verify_pss<D: Digest>(&self, message: &[u8], signature: &[u8]) -> bool {
        let Some(em) = self.public_op(signature) else {
            return false;
        };
        let m_hash = D::digest(message);
        pss_encoding_matches::<D>(&em, &m_hash, self.bits - 1)
    }
}

/// EMSA-PKCS1-v1_5 (RFC 8017 §9.2), compared as a whole: `em` is the `k`-byte encoded
/// message recovered from the signature.
fn pkcs1_encoding_matches(em: &[u8], prefix: &[u8], hash: &[u8]) -> bool {
    let t_len = prefix.len() + hash.len();
    let Some(ps_len) = em.len().checked_sub(t_len + 3) else {
        return false;
    };
    if ps_len < 8 {
        return false;
    }
    let mut expected = Vec::with_capacity(em.len());
    expected.extend_from_slice(&[0x00, 0x01]);
    expected.resize(2 + ps_len, 0xff);
    expected.push(0x00);
    expected.extend_from_slice(prefix);
    expected.extend_from_slice(hash);
    expected.as_slice() == em
}

/// EMSA-PSS-VERIFY (RFC 8017 §9.1.2) with `sLen = hLen`. `em` is the `k`-byte encoding of
/// the signature representative; `em_bits` = modBits − 1.
fn pss_encoding_matches<D: Digest>(em: &[u8], m_hash: &[u8], em_bits: usize) -> bool {
    let h_len = m_hash.len();
    let s_len = h_len;
    let em_len = em_bits.div_ceil(8);
    // I2OSP(m, emLen): when modBits ≡ 1 (mod 8) the k-byte value has one more leading
    // byte, which must be zero.
    let Some(extra) = em.len().checked_sub(em_len) else {
        return false;
    };
    let (lead, em) = em.split_at(extra);
    if lead.iter().any(|&b| b != 0) {
        return false;
    }
    // Step 3.
    if em_len < h_len + s_len + 2 {
        return false;
    }
    // Step 4: trailer.
    let (Some(&0xbc), Some(body)) = (em.last(), em.get(..em_len - 1)) else {
        return false;
    };
    // Step 5.
    let db_len = em_len - h_len - 1;
    let (masked_db, h) = body.split_at(db_len);
    // Step 6: the leftmost 8·emLen − emBits bits of maskedDB must be zero.
    let unused_bits = 8 * em_len - em_bits; // 0..=7
    let top_mask: u8 = 0xff >> unused_bits;
    let Some(&first) = masked_db.first() else {
        return false;
    };
    if first & !top_mask != 0 {
        return false;
    }
    // Steps 7–9.
    let mut db = masked_db.to_vec();
    mgf1_xor::<D>(h, &mut db);
    if let Some(b) = db.first_mut() {
        *b &= top_mask;
    }
    // Step 10: PS zeros, then 0x01.
    let ps_len = db_len - s_len - 1;
    let (ps, rest) = db.split_at(ps_len);
    if ps.iter().any(|&b| b != 0) {
        return false;
    }
    let Some((&0x01, salt)) = rest.split_first() else {
        return false;
    };
    // Steps 11–14.
    let mut d = D::new();
    d.update([0u8; 8]);
    d.update(m_hash);
    d.update(salt);
    d.finalize().as_slice() == h
}

/// `out ^= MGF1(seed, out.len())` (RFC 8017 §B.2.1).
fn mgf1_xor<D: Digest>(seed: &[u8], out: &mut [u8]) {
    let mut counter: u32 = 0;
    for chunk in out.chunks_mut(<D as Digest>::output_size()) {
        let mut d = D::new();
        d.update(seed);
        d.update(counter.to_be_bytes());
        let block = d.finalize();
        for (o, m) in chunk.iter_mut().zip(block.iter()) {
            *o ^= m;
        }
        counter = counter.wrapping_add(1);
    }
}

#[doc(hidden)]
/// The RSA public operation alone, for the differential tests: `s^e mod n` as `k` bytes,
/// None when `s` is not `k` bytes or `s ≥ n`, or when the key is not RSA.
pub fn __rsa_public_op(key: &VerifyingKey, signature: &[u8]) -> Option<Vec<u8>> {
    match &key.0 {
        Inner::Rsa(k) => k.public_op(signature),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jose_names_round_trip_exactly() {
        for a in Alg::ALL {
            assert_eq!(Alg::from_jose(a.as_str()), Some(a));
            assert_eq!(Alg::from_jose(&a.as_str().to_lowercase()), None);
        }
        for s in [
            "none", "None", "NONE", "", "rs256", "Rs256", "EDDSA", "ES512", "HS256 ",
        ] {
            assert_eq!(Alg::from_jose(s), None, "{s}");
        }
    }

    #[test]
    fn hmac_key_never_accepts_asymmetric_algs_and_vice_versa() {
        let h = VerifyingKey::hmac(b"k").unwrap();
        for a in Alg::ALL {
            let hs = matches!(a, Alg::HS256 | Alg::HS384 | Alg::HS512);
            assert_eq!(h.accepts(a), hs, "{a}");
        }
    }

    #[test]
    fn display_has_no_key_material() {
        assert_eq!(
            KeyError::RsaTooSmall { bits: 1024 }.to_string(),
            "RSA key of 1024 bits is under the 2048-bit minimum"
        );
        let k = VerifyingKey::hmac(b"supersecret").unwrap();
        let dbg = format!("{k:?}");
        assert!(
            !dbg.contains("supersecret") && dbg.contains("HMAC"),
            "{dbg}"
        );
    }
}
