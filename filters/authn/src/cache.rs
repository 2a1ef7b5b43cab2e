//! Verified tokens, remembered in proxy-wasm shared data so every worker
//! shares one cache.
//!
//! - **Key**: a keyed 128-bit SipHash-1-3 tag of (config fingerprint,
//!   token). The hash key is random per deployment (kept in shared data),
//!   so nobody outside can aim two tokens at one tag; 128 bits leave no
//!   room for accidental collisions either. SipHash costs a fraction of
//!   SHA-256 in wasm (measured in BENCHMARKS.md).
//! - **Bounded**: `max_entries` fixed slots (`meshguard.authn.c.<slot>`);
//!   a new token replaces whatever held its slot (an eviction). Shared
//!   data cannot delete keys, so fixed slots are what keeps the key count
//!   flat whatever the traffic. Expired entries are emptied on the timer.
//! - **Value**: the tag, then the [`Verified`] record: the provider, `exp`,
//!   `nbf`, the subject and just the claims rules and outputs read. A hit
//!   never verifies a signature and never parses JSON; it is refused once
//!   `exp` (+ skew) has passed.
//! - **In front of it**, each worker keeps [`L1`]: recently verified
//!   tokens by their bytes, so a repeated token costs neither a host call
//!   nor the SipHash.

use std::hash::Hasher;
use std::rc::Rc;

use siphasher::sip128::{Hasher128, SipHasher13};

/// A claim's value as the outputs and requirements need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimVal {
    /// Header text (arrays joined with commas).
    pub text: String,
    /// What `contains` looks in.
    pub items: Vec<String>,
}

/// A verified token, as cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub provider: u16,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub subject: Option<Rc<str>>,
    /// Indexed like the stage's claim-path table.
    pub claims: Vec<Option<ClaimVal>>,
    /// The payload segment, for a provider with `payload_header`.
    pub payload_b64: Option<String>,
}

impl Verified {
    /// Still valid at `now` (seconds) with `skew`.
    pub fn live(&self, now: i64, skew: i64) -> bool {
        self.exp.is_none_or(|e| now <= e.saturating_add(skew))
            && self.nbf.is_none_or(|n| now.saturating_add(skew) >= n)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.provider.to_le_bytes());
        out.extend_from_slice(&self.exp.unwrap_or(i64::MIN).to_le_bytes());
        out.extend_from_slice(&self.nbf.unwrap_or(i64::MIN).to_le_bytes());
        put_opt(out, self.subject.as_deref());
        out.extend_from_slice(&(self.claims.len() as u16).to_le_bytes());
        for c in &self.claims {
            match c {
                None => out.push(0),
                Some(c) => {
                    out.push(1);
                    put(out, &c.text);
                    out.extend_from_slice(&(c.items.len() as u16).to_le_bytes());
                    for i in &c.items {
                        put(out, i);
                    }
                }
            }
        }
        put_opt(out, self.payload_b64.as_deref());
    }

    pub fn decode(mut b: &[u8]) -> Option<Self> {
        let r = &mut b;
        let provider = u16::from_le_bytes(take::<2>(r)?);
        let exp = Some(i64::from_le_bytes(take::<8>(r)?)).filter(|v| *v != i64::MIN);
        let nbf = Some(i64::from_le_bytes(take::<8>(r)?)).filter(|v| *v != i64::MIN);
        let subject = get_opt(r)?.map(Rc::from);
        let n = u16::from_le_bytes(take::<2>(r)?) as usize;
        let mut claims = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            match take::<1>(r)? {
                [0] => claims.push(None),
                _ => {
                    let text = get(r)?;
                    let m = u16::from_le_bytes(take::<2>(r)?) as usize;
                    let mut items = Vec::with_capacity(m.min(64));
                    for _ in 0..m {
                        items.push(get(r)?);
                    }
                    claims.push(Some(ClaimVal { text, items }));
                }
            }
        }
        let payload_b64 = get_opt(r)?;
        r.is_empty().then_some(Self {
            provider,
            exp,
            nbf,
            subject,
            claims,
            payload_b64,
        })
    }
}

fn put(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put(out, s);
        }
    }
}

fn take<const N: usize>(b: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = b.split_at_checked(N)?;
    *b = rest;
    head.try_into().ok()
}

fn get(b: &mut &[u8]) -> Option<String> {
    let n = u32::from_le_bytes(take::<4>(b)?) as usize;
    let (s, rest) = b.split_at_checked(n)?;
    *b = rest;
    String::from_utf8(s.to_vec()).ok()
}

fn get_opt(b: &mut &[u8]) -> Option<Option<String>> {
    match take::<1>(b)? {
        [0] => Some(None),
        _ => get(b).map(Some),
    }
}

/// A token's tag and slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub bytes: [u8; 16],
    pub slot: u32,
}

/// Tags tokens with a secret key.
#[derive(Debug, Clone)]
pub struct Tagger {
    pub key: [u8; 16],
    config_fp: u64,
    slots: u32,
}

impl Tagger {
    pub fn new(key: [u8; 16], config_fp: u64, slots: u32) -> Self {
        Self {
            key,
            config_fp,
            slots: slots.max(1),
        }
    }

    pub fn tag(&self, token: &[u8]) -> Tag {
        let (k0, k1) = split_key(&self.key);
        let mut h = SipHasher13::new_with_keys(k0, k1);
        h.write(&self.config_fp.to_le_bytes());
        h.write(token);
        let bytes = h.finish128().as_bytes();
        let lo = u64::from_le_bytes(first8(&bytes));
        Tag {
            bytes,
            slot: (lo % u64::from(self.slots)) as u32,
        }
    }
}

fn first8(b: &[u8; 16]) -> [u8; 8] {
    let mut out = [0u8; 8];
    for (o, i) in out.iter_mut().zip(b.iter()) {
        *o = *i;
    }
    out
}

fn split_key(k: &[u8; 16]) -> (u64, u64) {
    let k0 = u64::from_le_bytes(first8(k));
    let mut hi = [0u8; 8];
    for (o, i) in hi.iter_mut().zip(k.iter().skip(8)) {
        *o = *i;
    }
    (k0, u64::from_le_bytes(hi))
}

/// A stable 64-bit fingerprint of the configuration (not secret): cache
/// entries from another configuration never match.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    let mut h = SipHasher13::new_with_keys(0x6d65_7368_6775_6172, 0x6175_7468_6e00_0001);
    h.write(bytes);
    let b = h.finish128().as_bytes();
    u64::from_le_bytes(first8(&b))
}

/// `scope`: the plugin's (`meshguard_common::contract::plugin_scope`).
pub fn slot_key(scope: &str, slot: u32) -> String {
    format!("meshguard.authn.c.{scope}{slot}")
}

/// Shared-data value of a cache entry.
pub fn entry(tag: &Tag, v: &Verified) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&tag.bytes);
    v.encode(&mut out);
    out
}

/// What a slot holds for `tag`.
pub enum Lookup {
    Hit(Verified),
    /// Empty slot, or another token's expired entry.
    Free,
    /// Another live token: storing here evicts it.
    Taken,
}

pub fn lookup(value: &[u8], tag: &Tag, now: i64, skew: i64) -> Lookup {
    let Some((t, rest)) = value.split_at_checked(16) else {
        return Lookup::Free;
    };
    let Some(v) = Verified::decode(rest) else {
        return Lookup::Free;
    };
    if t == tag.bytes {
        if v.live(now, skew) {
            return Lookup::Hit(v);
        }
        return Lookup::Free;
    }
    if v.exp.is_some_and(|e| now > e.saturating_add(skew)) {
        Lookup::Free
    } else {
        Lookup::Taken
    }
}

/// Whether a stored entry is past its `exp` (the sweep empties those).
pub fn expired(value: &[u8], now: i64, skew: i64) -> bool {
    match value
        .split_at_checked(16)
        .and_then(|(_, r)| Verified::decode(r))
    {
        Some(v) => v.exp.is_some_and(|e| now > e.saturating_add(skew)),
        None => !value.is_empty(),
    }
}

/// Slots in a worker's [`L1`].
pub const L1_SLOTS: usize = 1024;
/// Longer tokens skip [`L1`] (the shared cache still serves them): the
/// table holds at most `L1_SLOTS × L1_MAX_TOKEN` bytes of tokens (2 MiB).
pub const L1_MAX_TOKEN: usize = 2048;

/// A token and its record.
type L1Entry = (Box<[u8]>, Rc<Verified>);

/// One worker's table of recently verified tokens, in front of the shared
/// cache: direct-mapped by a fast seeded hash of the token, each slot
/// holding the whole token, compared in full (word by word, without an
/// early exit) before its record is used. Only verified tokens get in, so
/// a colliding token can only push another out of its slot, never be
/// taken for it.
pub struct L1 {
    seed: u64,
    slots: Vec<Option<L1Entry>>,
}

const K0: u64 = 0x9e37_79b9_7f4a_7c15;
const K1: u64 = 0xbf58_476d_1ce4_e5b9;

impl L1 {
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            slots: Vec::new(),
        }
    }

    fn index(&self, token: &[u8]) -> usize {
        let mut h = self.seed ^ (token.len() as u64).wrapping_mul(K0);
        let (words, rest) = token.as_chunks::<8>();
        for w in words {
            h = (h ^ u64::from_le_bytes(*w))
                .wrapping_mul(K0)
                .rotate_left(31);
        }
        for &b in rest {
            h = (h ^ u64::from(b)).wrapping_mul(K0);
        }
        h ^= h >> 32;
        h = h.wrapping_mul(K1);
        h ^= h >> 29;
        (h as usize) % L1_SLOTS
    }

    pub fn get(&self, token: &[u8]) -> Option<&Rc<Verified>> {
        let (t, v) = self.slots.get(self.index(token))?.as_ref()?;
        same_bytes(t, token).then_some(v)
    }

    pub fn put(&mut self, token: &[u8], v: &Rc<Verified>) {
        if token.len() > L1_MAX_TOKEN {
            return;
        }
        if self.slots.is_empty() {
            self.slots.resize_with(L1_SLOTS, || None);
        }
        let i = self.index(token);
        if let Some(slot) = self.slots.get_mut(i) {
            *slot = Some((token.into(), Rc::clone(v)));
        }
    }

    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Equal lengths and bytes, compared a word at a time without stopping at
/// the first difference (the stored token is someone's credential).
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u64;
    let ((wa, ra), (wb, rb)) = (a.as_chunks::<8>(), b.as_chunks::<8>());
    for (x, y) in wa.iter().zip(wb) {
        diff |= u64::from_le_bytes(*x) ^ u64::from_le_bytes(*y);
    }
    for (x, y) in ra.iter().zip(rb) {
        diff |= u64::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Verified {
        Verified {
            provider: 2,
            exp: Some(2000),
            nbf: None,
            subject: Some("alice".into()),
            claims: vec![
                None,
                Some(ClaimVal {
                    text: "a,b".into(),
                    items: vec!["a".into(), "b".into()],
                }),
            ],
            payload_b64: Some("e30".into()),
        }
    }

    #[test]
    fn record_round_trips_and_rejects_truncation() {
        let v = sample();
        let mut b = Vec::new();
        v.encode(&mut b);
        assert_eq!(Verified::decode(&b), Some(v));
        for cut in 0..b.len() {
            assert!(Verified::decode(&b[..cut]).is_none(), "cut {cut}");
        }
        b.push(0);
        assert!(Verified::decode(&b).is_none());
    }

    #[test]
    fn lookups_see_only_their_own_live_tag() {
        let t = Tagger::new([7; 16], 1, 100);
        let a = t.tag(b"token-a");
        let b = t.tag(b"token-b");
        assert_ne!(a.bytes, b.bytes);
        let stored = entry(&a, &sample());
        assert!(matches!(lookup(&stored, &a, 1000, 60), Lookup::Hit(_)));
        assert!(matches!(lookup(&stored, &b, 1000, 60), Lookup::Taken));
        // Past exp + skew: neither a hit nor worth keeping.
        assert!(matches!(lookup(&stored, &a, 2061, 60), Lookup::Free));
        assert!(matches!(lookup(&stored, &b, 2061, 60), Lookup::Free));
        assert!(expired(&stored, 2061, 60));
        assert!(!expired(&stored, 2000, 60));
        assert!(matches!(lookup(b"", &a, 0, 0), Lookup::Free));
    }

    #[test]
    fn tags_depend_on_key_and_config() {
        let a = Tagger::new([1; 16], 1, 100).tag(b"t");
        assert_ne!(a.bytes, Tagger::new([2; 16], 1, 100).tag(b"t").bytes);
        assert_ne!(a.bytes, Tagger::new([1; 16], 2, 100).tag(b"t").bytes);
        assert!(a.slot < 100);
    }

    #[test]
    fn l1_finds_only_the_same_token() {
        let v = Rc::new(Verified {
            provider: 0,
            exp: None,
            nbf: None,
            subject: Some("alice".into()),
            claims: vec![],
            payload_b64: None,
        });
        let mut l1 = L1::new(42);
        assert!(l1.is_empty());
        let token = b"aaaa.bbbb.cccc-long-enough-for-words".to_vec();
        l1.put(&token, &v);
        assert_eq!(l1.get(&token), Some(&v));
        // One byte different anywhere, shorter or longer: a miss.
        for i in 0..token.len() {
            let mut t = token.clone();
            t[i] ^= 1;
            assert_eq!(l1.get(&t), None, "byte {i}");
        }
        assert_eq!(l1.get(&token[..token.len() - 1]), None);
        let mut longer = token.clone();
        longer.push(b'x');
        assert_eq!(l1.get(&longer), None);
        // Tokens over the limit are not kept; the table stays bounded.
        l1.put(&vec![b'a'; L1_MAX_TOKEN + 1], &v);
        assert_eq!(l1.get(&vec![b'a'; L1_MAX_TOKEN + 1]), None);
        for i in 0..3 * L1_SLOTS {
            l1.put(format!("token-{i}").as_bytes(), &v);
        }
        assert!(l1.len() <= L1_SLOTS);
    }
}
