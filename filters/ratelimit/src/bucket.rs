//! Token buckets in integer arithmetic, and how they sit in shared data.
//!
//! **Units.** A limit of `requests` per `period` refills continuously. One
//! token is `period_ns` units and the bucket gains `requests` units per
//! nanosecond, so refilling is one exact multiplication: no division, no
//! rounding, no floats, nothing that drifts. Over any interval of `t` ns a
//! bucket admits at most `burst + requests × t / period_ns` requests.
//! `burst × period_ns` is at most 10^6 × 3.6·10^12 < 2^64.
//!
//! **Slots.** Shared data cannot delete a key, so a rule's buckets live in
//! a fixed set of slots, `meshguard.rl.<plugin>.<rule>.<slot>` (`<plugin>`:
//! a hash of the plugin's name, see [`slot_prefix`]), with the slot chosen
//! by a hash of the key: the key count never exceeds `rules × max_keys`
//! whatever the traffic. Each value holds the full key (keys over
//! [`MAX_RAW_KEY`] bytes as a 128-bit hash), so a different key in the same
//! slot is seen: it takes the slot over (an eviction) and *inherits the
//! slot's tokens* rather than starting full. So no key ever gets more than
//! its limit, whatever collides with it (a slot's level only refills at the
//! rule's rate and every admission through it spends it); the price is that
//! a key colliding with a busy one may start with fewer tokens. Size
//! `max_keys` above the number of keys active at once (the eviction metric
//! says when it is not).
//!
//! **Value** (little-endian): version `1`, the rule's fingerprint (u64: a
//! changed limit never reads an old bucket in the wrong units), the level
//! (u64 units), the last update (u64 ns since the epoch), then the stored
//! key. An empty value is a free slot (the timer empties buckets that are
//! full again: forgetting a full bucket loses nothing).

use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::Hasher;

/// A rule's limit in bucket units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Units gained per nanosecond (the configured request count).
    pub requests: u64,
    /// Units one request costs (the period in ns).
    pub period_ns: u64,
    /// Tokens when full.
    pub burst: u64,
}

impl Limit {
    pub fn new(requests: u32, period_s: u64, burst: u32) -> Self {
        Self {
            requests: u64::from(requests.max(1)),
            period_ns: period_s.max(1).saturating_mul(1_000_000_000),
            burst: u64::from(burst.max(1)),
        }
    }

    /// Level of a full bucket.
    pub fn capacity(&self) -> u64 {
        self.burst.saturating_mul(self.period_ns)
    }
}

/// One bucket's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Units available.
    pub level: u64,
    /// Last update, ns since the epoch.
    pub last_ns: u64,
}

/// What taking a token gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub allowed: bool,
    /// Whole tokens left after this request.
    pub remaining: u64,
    /// Seconds (rounded up) until the next token arrives; 0 when full.
    /// For a refused request this is also when to retry (at least 1).
    pub reset_s: u64,
}

fn ceil_div(a: u128, b: u128) -> u128 {
    if b == 0 {
        return 0;
    }
    // Values fit 64 bits on every real limit: a 64-bit division is one
    // instruction, a 128-bit one a software routine in wasm.
    match (u64::try_from(a), u64::try_from(b)) {
        (Ok(a), Ok(b)) => u128::from(a.div_ceil(b)),
        _ => a.div_ceil(b),
    }
}

/// A clock step back larger than this restarts a bucket's refill from the
/// new time instead of waiting for the clock to catch up.
pub const CLOCK_STEP_BACK_NS: u64 = 1_000_000_000;

impl Bucket {
    pub fn full(limit: &Limit, now_ns: u64) -> Self {
        Self {
            level: limit.capacity(),
            last_ns: now_ns,
        }
    }

    /// The bucket at `now_ns`. A clock that went back refills nothing, so
    /// a clock step never admits more: a small step back (workers reading
    /// the clock a moment apart) keeps the later time; a step back of more
    /// than [`CLOCK_STEP_BACK_NS`] (NTP) restarts the refill from the new
    /// time, so the bucket does not stay empty for the length of the step.
    pub fn refilled(self, limit: &Limit, now_ns: u64) -> Self {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        // Saturating is exact here: anything past u64::MAX is past full
        // (capacity < 2^64), and 64-bit arithmetic is one instruction in
        // wasm where 128-bit is a call.
        let gained = elapsed.saturating_mul(limit.requests);
        let level = self.level.saturating_add(gained).min(limit.capacity());
        let last_ns = if now_ns.saturating_add(CLOCK_STEP_BACK_NS) < self.last_ns {
            now_ns
        } else {
            self.last_ns.max(now_ns)
        };
        Self { level, last_ns }
    }

    pub fn is_full(&self, limit: &Limit) -> bool {
        self.level >= limit.capacity()
    }

    /// Takes one token at `now_ns` if there is one.
    pub fn take(self, limit: &Limit, now_ns: u64) -> (Bucket, Taken) {
        let (b, taken, _) = self.take_up_to(limit, now_ns, 1);
        (b, taken)
    }

    /// Takes between one and `n` tokens at `now_ns`, as many as there are;
    /// none (refused) when there is not one. Returns how many it took.
    pub fn take_up_to(self, limit: &Limit, now_ns: u64, n: u64) -> (Bucket, Taken, u64) {
        let b = self.refilled(limit, now_ns);
        let cost = limit.period_ns;
        let available = b.level / cost;
        if available > 0 {
            let got = n.clamp(1, available);
            let after = Bucket {
                level: b.level - got * cost,
                last_ns: b.last_ns,
            };
            let taken = Taken {
                allowed: true,
                remaining: after.level / cost,
                reset_s: after.next_token_s(limit),
            };
            (after, taken, got)
        } else {
            let wait_ns = ceil_div(
                u128::from(cost - b.level),
                u128::from(limit.requests.max(1)),
            );
            let taken = Taken {
                allowed: false,
                remaining: 0,
                reset_s: u64::try_from(ceil_div(wait_ns, 1_000_000_000).max(1)).unwrap_or(u64::MAX),
            };
            (b, taken, 0)
        }
    }

    /// `tokens` taken earlier and not spent, put back (never above full).
    /// Exact with lazy refill: min(min(L + t, C) + r, C) = min(L + t + r, C).
    pub fn give_back(self, limit: &Limit, tokens: u64) -> Bucket {
        Bucket {
            level: self
                .level
                .saturating_add(tokens.saturating_mul(limit.period_ns))
                .min(limit.capacity()),
            last_ns: self.last_ns,
        }
    }

    /// Seconds until the next whole token, rounded up; 0 when full.
    fn next_token_s(&self, limit: &Limit) -> u64 {
        if self.is_full(limit) {
            return 0;
        }
        let cost = limit.period_ns;
        let missing = cost - self.level % cost;
        let ns = ceil_div(u128::from(missing), u128::from(limit.requests.max(1)));
        u64::try_from(ceil_div(ns, 1_000_000_000)).unwrap_or(u64::MAX)
    }
}

/// Value layout version.
const VERSION: u8 = 1;
const HEADER: usize = 1 + 8 + 8 + 8;
/// Keys up to this many bytes are stored as they are; longer ones as a
/// 128-bit SipHash (a 60 KB header must not become 60 KB per slot).
pub const MAX_RAW_KEY: usize = 256;

/// [`stored_key`] of `marked[1..]`, for a key built after a placeholder
/// byte: a short key is returned as is with its `=` marker, no copy.
pub fn stored_key_marked(mut marked: Vec<u8>) -> Vec<u8> {
    let raw = marked.get(1..).unwrap_or_default();
    if raw.len() <= MAX_RAW_KEY {
        if let Some(first) = marked.first_mut() {
            *first = b'=';
        }
        return marked;
    }
    stored_key(raw.to_vec())
}

/// A bucket key as stored: `=` + the key, or `#` + its 128-bit hash.
pub fn stored_key(raw: Vec<u8>) -> Vec<u8> {
    if raw.len() <= MAX_RAW_KEY {
        let mut out = Vec::with_capacity(raw.len() + 1);
        out.push(b'=');
        out.extend_from_slice(&raw);
        return out;
    }
    let mut h = SipHasher13::new_with_keys(0x6d67_726c_6b65_7931, 0x6d67_726c_6b65_7932);
    h.write(&raw);
    let mut out = Vec::with_capacity(17);
    out.push(b'#');
    out.extend_from_slice(&h.finish128().as_bytes());
    out
}

/// The slot of `key` among `slots`, for rule `rule`. A fixed hash: every
/// worker (and every restart) must pick the same slot for a key. Its
/// constants are public (as SipHash's fixed keys were before it), so a
/// client controlling a whole key can aim at another key's slot and share
/// its tokens — never more than the limit (README, "Limits of the
/// design"); what would stop that is a secret per-process seed, not a
/// stronger function. It runs on every request: a word at a time, no
/// SipHash rounds. Changing this function moves keys between slots (see
/// README, "Known gaps", on upgrades).
pub fn slot_of(rule: usize, key: &[u8], slots: u32) -> u32 {
    if slots <= 1 {
        return 0;
    }
    let h = mix_hash(rule as u64, key);
    // Range reduction by a multiply and a shift (no division): the high
    // half of a uniform 32-bit value times `slots`.
    (((h >> 32) * u64::from(slots)) >> 32) as u32
}

/// A 64-bit hash of `bytes`: each 8-byte word multiplied in, then
/// MurmurHash3's finalizer, so every input bit reaches every output bit.
fn mix_hash(seed: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = (seed ^ 0x6d67_726c_736c_6f74) ^ (bytes.len() as u64).wrapping_mul(K);
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(K).rotate_left(31);
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut b = [0u8; 8];
        if let Some(to) = b.get_mut(..rest.len()) {
            to.copy_from_slice(rest);
        }
        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(K).rotate_left(31);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// `<prefix><rule>.` : the part of a rule's slot keys before the slot
/// number ([`slot_key_into`]).
pub fn rule_prefix(prefix: &str, rule: usize) -> String {
    let mut out = String::with_capacity(prefix.len() + 8);
    out.push_str(prefix);
    meshguard_common::num::push_u64(&mut out, rule as u64);
    out.push('.');
    out
}

/// `<prefix><rule>.<slot>` into `out` (cleared first), from the rule's
/// [`rule_prefix`]: the hot path reuses one buffer.
pub fn slot_key_into(out: &mut String, rule_prefix: &str, slot: u32) {
    out.clear();
    out.push_str(rule_prefix);
    meshguard_common::num::push_u64(out, u64::from(slot));
}

/// The slot keys' prefix for the plugin named `plugin_name`
/// (`meshguard_common::contract::plugin_scope`): two ratelimit plugins on
/// one proxy (Istio: one empty `vm_id` for all) keep their own buckets.
pub fn slot_prefix(plugin_name: Option<&[u8]>) -> String {
    format!(
        "meshguard.rl.{}",
        meshguard_common::contract::plugin_scope(plugin_name)
    )
}

pub fn encode(fingerprint: u64, b: &Bucket, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, fingerprint, b, key);
    out
}

/// [`encode`] into `out` (cleared first): the hot path reuses one buffer.
pub fn encode_into(out: &mut Vec<u8>, fingerprint: u64, b: &Bucket, key: &[u8]) {
    let mut head = [0u8; HEADER];
    head[0] = VERSION;
    head[1..9].copy_from_slice(&fingerprint.to_le_bytes());
    head[9..17].copy_from_slice(&b.level.to_le_bytes());
    head[17..25].copy_from_slice(&b.last_ns.to_le_bytes());
    out.clear();
    out.reserve(HEADER + key.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(key);
}

/// (fingerprint, bucket, stored key); `None` for an empty or foreign value.
pub fn decode(v: &[u8]) -> Option<(u64, Bucket, &[u8])> {
    let (head, key) = v.split_first_chunk::<HEADER>()?;
    let [version, f0, f1, f2, f3, f4, f5, f6, f7, l0, l1, l2, l3, l4, l5, l6, l7, t0, t1, t2, t3, t4, t5, t6, t7] =
        *head;
    if version != VERSION || key.is_empty() {
        return None;
    }
    let fp = u64::from_le_bytes([f0, f1, f2, f3, f4, f5, f6, f7]);
    let level = u64::from_le_bytes([l0, l1, l2, l3, l4, l5, l6, l7]);
    let last_ns = u64::from_le_bytes([t0, t1, t2, t3, t4, t5, t6, t7]);
    Some((fp, Bucket { level, last_ns }, key))
}

/// A rule's identity for its buckets: name and limit.
pub fn fingerprint(name: &str, limit: &Limit) -> u64 {
    let mut h = SipHasher13::new_with_keys(0x6d67_726c_6670_0001, 0);
    h.write(name.as_bytes());
    h.write(&limit.requests.to_le_bytes());
    h.write(&limit.period_ns.to_le_bytes());
    h.write(&limit.burst.to_le_bytes());
    h.finish()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing)]
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn take_up_to_takes_what_there_is_and_give_back_restores_it() {
        let l = Limit::new(1, 1, 10); // 1/s, burst 10
        let b = Bucket::full(&l, 0);
        let (b, t, got) = b.take_up_to(&l, 0, 4);
        assert!(t.allowed);
        assert_eq!((got, t.remaining), (4, 6));
        let (b2, t, got) = b.take_up_to(&l, 0, 32);
        assert_eq!((got, t.remaining, t.allowed), (6, 0, true));
        let (_, t, got) = b2.take_up_to(&l, 0, 32);
        assert_eq!((got, t.allowed), (0, false));
        // Four unspent tokens back: as if never taken, never above full.
        assert_eq!(b.give_back(&l, 4), Bucket::full(&l, 0));
        assert_eq!(Bucket::full(&l, 0).give_back(&l, 4), Bucket::full(&l, 0));
        // Lazy refill after a give-back equals refill then give-back.
        let (half, _, _) = Bucket::full(&l, 0).take_up_to(&l, 0, 8);
        let a = half.give_back(&l, 3).refilled(&l, 2 * S);
        let b = half.refilled(&l, 2 * S).give_back(&l, 3);
        assert_eq!(a.level, b.level);
    }

    #[test]
    fn burst_then_refill_exactly() {
        let l = Limit::new(10, 60, 3); // 10 per minute, burst 3
        let mut b = Bucket::full(&l, 0);
        for i in 0..3 {
            let (nb, t) = b.take(&l, 0);
            assert!(t.allowed, "{i}");
            assert_eq!(t.remaining, 2 - i);
            b = nb;
        }
        let (_, t) = b.take(&l, 0);
        assert!(!t.allowed);
        assert_eq!(t.reset_s, 6, "one token every 6 s");
        // 5.999999999 s later: still nothing.
        let (_, t) = b.take(&l, 6 * S - 1);
        assert!(!t.allowed);
        assert_eq!(t.reset_s, 1);
        let (b2, t) = b.take(&l, 6 * S);
        assert!(t.allowed);
        assert_eq!(t.remaining, 0);
        assert_eq!(t.reset_s, 6);
        assert_eq!(b2.level, 0);
    }

    /// Over any schedule of requests, admitted <= burst + rate × elapsed.
    #[test]
    fn never_over_admits_on_any_schedule() {
        for (req, per, burst) in [(1, 1, 1), (7, 3600, 2), (100, 1, 150), (3, 60, 1)] {
            let l = Limit::new(req, per, burst);
            let mut b = Bucket::full(&l, 5 * S);
            let mut admitted = 0u64;
            let mut t = 5 * S;
            let mut x: u64 = 12345;
            for _ in 0..20_000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                t += (x >> 33) % (per * S / u64::from(req) / 3 + 1);
                let (nb, tk) = b.take(&l, t);
                b = nb;
                if tk.allowed {
                    admitted += 1;
                }
                let elapsed = t - 5 * S;
                let bound =
                    u128::from(burst) + u128::from(elapsed) * u128::from(req) / u128::from(per * S);
                assert!(
                    u128::from(admitted) <= bound,
                    "{req}/{per}s burst {burst}: {admitted} > {bound}"
                );
            }
            assert!(admitted > u64::from(burst), "the bucket refilled");
        }
    }

    #[test]
    fn clock_going_back_refills_nothing() {
        let l = Limit::new(1, 1, 1);
        let (b, t) = Bucket::full(&l, 100 * S).take(&l, 100 * S);
        assert!(t.allowed);
        // A small step back (another worker's read a moment earlier): the
        // later time stays, nothing is refilled.
        let (b, t) = b.take(&l, 100 * S - S / 2);
        assert!(!t.allowed);
        assert_eq!(b.last_ns, 100 * S);
        let (_, t) = b.take(&l, 100 * S + S / 2);
        assert!(!t.allowed);
        let (_, t) = b.take(&l, 101 * S);
        assert!(t.allowed);
        // A large step back (NTP): nothing refilled at the step, then the
        // refill runs on the new clock instead of stalling for 50 s.
        let (b, t) = b.take(&l, 50 * S);
        assert!(!t.allowed);
        assert_eq!(b.last_ns, 50 * S);
        let (b, t) = b.take(&l, 50 * S + S / 2);
        assert!(!t.allowed);
        let (_, t) = b.take(&l, 51 * S);
        assert!(t.allowed);
    }

    #[test]
    fn extreme_limits_do_not_overflow() {
        let l = Limit::new(1_000_000, 3600, 1_000_000);
        let b = Bucket::full(&l, 0);
        let (b, t) = b.take(&l, u64::MAX);
        assert!(t.allowed);
        assert_eq!(t.remaining, 999_999);
        assert!(b.level < l.capacity());
        let b = Bucket {
            level: 0,
            last_ns: 0,
        };
        let (_, t) = b.take(&l, 0);
        assert!(!t.allowed);
        assert_eq!(t.reset_s, 1);
    }

    #[test]
    fn values_round_trip_and_reject_junk() {
        let b = Bucket {
            level: 42,
            last_ns: 7,
        };
        let key = stored_key(b"10.0.0.1".to_vec());
        let v = encode(99, &b, &key);
        assert_eq!(decode(&v), Some((99, b, key.as_slice())));
        // A value cut anywhere in its fixed part is not a bucket. (Values
        // are written whole; a cut key would just be another key.)
        for cut in 0..=HEADER {
            assert_eq!(decode(&v[..cut]), None, "cut {cut}");
        }
        assert_eq!(decode(b""), None);
        assert_eq!(decode(&[2; 40]), None);
    }

    #[test]
    fn long_keys_are_hashed_and_slots_are_in_range() {
        let long = vec![b'a'; 70_000];
        let k = stored_key(long.clone());
        assert_eq!(k.len(), 17);
        assert_eq!(k, stored_key(long));
        assert_ne!(k, stored_key(vec![b'b'; 70_000]));
        assert_eq!(stored_key(b"x".to_vec()), b"=x");
        // Built in place after a placeholder byte: the same stored form.
        for raw in [
            b"x".to_vec(),
            vec![b'k'; MAX_RAW_KEY],
            vec![b'k'; MAX_RAW_KEY + 1],
        ] {
            let mut marked = vec![0];
            marked.extend_from_slice(&raw);
            assert_eq!(stored_key_marked(marked), stored_key(raw));
        }
        for i in 0..1000u32 {
            assert!(slot_of(0, &i.to_le_bytes(), 7) < 7);
        }
        assert_eq!(slot_of(3, b"k", 1), 0);
        assert_ne!(
            fingerprint("a", &Limit::new(1, 1, 1)),
            fingerprint("a", &Limit::new(1, 1, 2))
        );
    }
}
