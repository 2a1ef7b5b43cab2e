//! Fetched key sets in shared data: one copy for every worker, one worker
//! fetching at a time.
//!
//! Shared-data keys per provider `<p>`:
//! - `meshguard.authn.jwks.<p>`: `fetched_at_ms` (u64 LE), key count
//!   (u32 LE), then the JWKS document as fetched (it parsed and had a
//!   usable key).
//! - `meshguard.authn.fetch.<p>`: `busy_until_ms`, `last_attempt_ms`
//!   (u64 LE each): the fetch lock, taken with compare-and-swap, and the
//!   clock for the minimum refetch interval.
//! - `meshguard.authn.oidc.<p>`: `authority\npath` of the discovered
//!   `jwks_uri`.
//!
//! The lock is taken with compare-and-swap; the very first one, when the
//! key does not exist yet, with `meshguard_stage::host::CREATE_ONLY` (the
//! write creates the key only if no other worker did), so even the first
//! fetch after start happens once, not once per worker.

use meshguard_stage::host::CREATE_ONLY;
use meshguard_stage::{Host, SharedWrite};

pub fn jwks_key(p: &str) -> String {
    format!("meshguard.authn.jwks.{p}")
}
fn lock_key(p: &str) -> String {
    format!("meshguard.authn.fetch.{p}")
}
fn oidc_key(p: &str) -> String {
    format!("meshguard.authn.oidc.{p}")
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

/// Why a fetch is wanted; each waits a different time since the last try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The timer: keys are older than `cache_seconds`, or none yet.
    Refresh,
    /// A request needs keys and there are none.
    NoKeys,
    /// A token names a `kid` the set lacks.
    UnknownKid,
}

/// Takes the provider's fetch lock if nobody holds it and the last attempt
/// is long enough ago.
pub fn try_acquire(
    host: &mut dyn Host,
    p: &str,
    now_ms: u64,
    why: Why,
    min_refetch_ms: u64,
    timeout_ms: u64,
) -> bool {
    let key = lock_key(p);
    let (value, cas) = host.shared_get(&key).unwrap_or((Vec::new(), CREATE_ONLY));
    let busy_until = u64_at(&value, 0);
    let last = u64_at(&value, 8);
    if now_ms < busy_until {
        return false;
    }
    let gap = match why {
        Why::Refresh | Why::NoKeys => 1000,
        Why::UnknownKid => min_refetch_ms,
    };
    if last != 0 && now_ms < last.saturating_add(gap) {
        return false;
    }
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&now_ms.saturating_add(timeout_ms + 1000).to_le_bytes());
    v.extend_from_slice(&now_ms.to_le_bytes());
    host.shared_set(&key, &v, cas) == SharedWrite::Written
}

/// Gives the lock back (the last-attempt time stays).
pub fn release(host: &mut dyn Host, p: &str) {
    let key = lock_key(p);
    for _ in 0..4 {
        let (value, cas) = host.shared_get(&key).unwrap_or_default();
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(&0u64.to_le_bytes());
        v.extend_from_slice(&u64_at(&value, 8).to_le_bytes());
        if host.shared_set(&key, &v, cas) != SharedWrite::CasMismatch {
            return;
        }
    }
}

/// The stored set: (cas, fetched_at_ms, key count, document).
pub fn load(host: &dyn Host, p: &str) -> Option<(u32, u64, u32, Vec<u8>)> {
    let (value, cas) = host.shared_get(&jwks_key(p))?;
    if value.len() < 12 {
        return None;
    }
    let fetched = u64_at(&value, 0);
    let count = value
        .get(8..12)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0);
    Some((cas, fetched, count, value.get(12..)?.to_vec()))
}

/// Publishes a good set; returns the previous key count.
pub fn store(host: &mut dyn Host, p: &str, now_ms: u64, count: u32, doc: &[u8]) -> u32 {
    let previous = load(host, p).map(|(_, _, c, _)| c).unwrap_or(0);
    let mut v = Vec::with_capacity(12 + doc.len());
    v.extend_from_slice(&now_ms.to_le_bytes());
    v.extend_from_slice(&count.to_le_bytes());
    v.extend_from_slice(doc);
    if host.shared_set(&jwks_key(p), &v, 0) != SharedWrite::Written {
        log::warn!("authn: cannot store the JWKS of `{p}` in shared data");
    }
    previous
}

pub fn discovered(host: &dyn Host, p: &str) -> Option<(String, String)> {
    let (v, _) = host.shared_get(&oidc_key(p))?;
    let s = String::from_utf8(v).ok()?;
    let (a, path) = s.split_once('\n')?;
    Some((a.to_string(), path.to_string()))
}

pub fn store_discovered(host: &mut dyn Host, p: &str, authority: &str, path: &str) {
    let v = format!("{authority}\n{path}");
    let _ = host.shared_set(&oidc_key(p), v.as_bytes(), 0);
}
