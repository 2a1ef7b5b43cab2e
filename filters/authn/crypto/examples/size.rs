//! The size this crate adds to a filter: a wasm cdylib that reaches every key type and
//! every alg, and nothing else.
//!
//! `cargo build -p meshguard-authn-crypto --target wasm32-wasip1 --profile wasm --example size`
//! then look at `$CARGO_TARGET_DIR/wasm32-wasip1/wasm/examples/size.wasm`.

use meshguard_authn_crypto::{Alg, VerifyingKey};

fn slice<'a>(p: *const u8, l: usize) -> &'a [u8] {
    if p.is_null() || l == 0 {
        return &[];
    }
    // SAFETY: the host passes `l` readable bytes at `p`.
    unsafe { core::slice::from_raw_parts(p, l) }
}

/// kind 0 RSA (a = n, b = e), 1 P-256, 2 P-384 (a = x, b = y), 3 Ed25519 (a = x),
/// 4 HMAC (a = secret); `alg` indexes `Alg::ALL`. 1 when the signature verifies.
///
/// # Safety
/// Each pointer/length pair must describe readable memory.
#[no_mangle]
pub unsafe extern "C" fn verify(
    kind: u32,
    a: *const u8,
    a_len: usize,
    b: *const u8,
    b_len: usize,
    alg: u32,
    msg: *const u8,
    msg_len: usize,
    sig: *const u8,
    sig_len: usize,
) -> u32 {
    let (a, b) = (slice(a, a_len), slice(b, b_len));
    let key = match kind {
        0 => VerifyingKey::rsa(a, b),
        1 => VerifyingKey::ec("P-256", a, b),
        2 => VerifyingKey::ec("P-384", a, b),
        3 => VerifyingKey::ed25519(a),
        _ => VerifyingKey::hmac(a),
    };
    let Some(alg) = Alg::ALL.get(alg as usize) else {
        return 0;
    };
    match key {
        Ok(k) => u32::from(k.verify(*alg, slice(msg, msg_len), slice(sig, sig_len))),
        Err(_) => 0,
    }
}
