//! The seam between stages and the proxy. Stages see [`Host`] (time,
//! randomness, callouts, shared data, properties); the shell implements it
//! with proxy-wasm host calls and native tests with [`crate::testing::FakeProxy`].

use std::time::{Duration, SystemTime};

/// Identifies a callout the host dispatched.
pub type Token = u32;

/// A metric the shell defined when the stage was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MetricId(pub u32);

impl Default for MetricId {
    fn default() -> Self {
        MetricId::NONE
    }
}

impl MetricId {
    /// Returned when the host refused to define a metric: bumping it is a
    /// no-op, so a metric problem never takes traffic down.
    pub const NONE: MetricId = MetricId(u32::MAX);
}

/// Defines metrics while a stage is built (`on_configure`).
pub trait MetricsRegistry {
    fn counter(&mut self, name: &str) -> MetricId;
    fn gauge(&mut self, name: &str) -> MetricId;
}

/// Defines nothing (validation, fallbacks): every id is [`MetricId::NONE`].
pub struct NoMetrics;

impl MetricsRegistry for NoMetrics {
    fn counter(&mut self, _: &str) -> MetricId {
        MetricId::NONE
    }
    fn gauge(&mut self, _: &str) -> MetricId {
        MetricId::NONE
    }
}

/// An HTTP call to a cluster the proxy knows (`dispatch_http_call`).
#[derive(Debug, Clone)]
pub struct HttpCallout<'a> {
    pub cluster: &'a str,
    /// Must include `:method`, `:path` and `:authority`.
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: Option<&'a [u8]>,
    /// The proxy answers with a failure when it passes: never a hang.
    pub timeout: Duration,
}

/// A unary gRPC call to a cluster the proxy knows (`dispatch_grpc_call`),
/// e.g. Envoy's rate-limit service.
#[derive(Debug, Clone)]
pub struct GrpcCallout<'a> {
    pub cluster: &'a str,
    /// `envoy.service.ratelimit.v3.RateLimitService`.
    pub service: &'a str,
    /// `ShouldRateLimit`.
    pub method: &'a str,
    pub metadata: Vec<(&'a str, &'a [u8])>,
    /// The serialized request message (protobuf).
    pub message: &'a [u8],
    /// The proxy answers with a failure when it passes: never a hang.
    pub timeout: Duration,
}

/// Why the host would not dispatch a callout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalloutError {
    /// The cluster is not configured in the proxy (Envoy: BadArgument).
    UnknownCluster,
    /// Any other refusal.
    Refused,
}

/// Result of a compare-and-swap write to shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedWrite {
    Written,
    /// Someone else wrote since the read: read again and retry.
    CasMismatch,
    Failed,
}

/// The CAS to write a shared-data key only if it does not exist yet.
///
/// Proxy-wasm has no "create if absent", and a write with CAS 0 replaces
/// whatever is there: two workers that both read "not found" and then
/// write unconditionally can wipe each other's work (a rate-limit bucket
/// with tokens spent). But Envoy (proxy-wasm-cpp-host `SharedData::set`)
/// checks a non-zero CAS only against an *existing* key and creates a
/// missing one whatever the CAS: a write with a CAS no live key holds
/// creates the key or fails with [`SharedWrite::CasMismatch`]. CAS values
/// come from one process-wide counter that skips 0, so an existing key
/// holds this one only after 2^32 writes and then with odds 2^-32.
pub const CREATE_ONLY: u32 = u32::MAX;

/// What a stage may ask of the proxy. Object-safe: stages receive
/// `&mut dyn Host`, so one stage implementation serves every host.
/// Callouts are not here: they go through [`crate::Cx::http_call`] /
/// [`crate::RootCx::http_call`], which remember the token so the answer
/// finds its way back to the stage.
pub trait Host {
    /// Wall-clock time as the proxy sees it.
    fn now(&self) -> SystemTime;
    /// [`Host::now`] in nanoseconds since the Unix epoch (0 before it), as
    /// the proxy hands it over: hot paths skip the `SystemTime` round trip.
    fn now_ns(&self) -> u64 {
        self.now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
    /// Fills `buf` with random bytes; false if no randomness is available.
    fn random(&mut self, buf: &mut [u8]) -> bool;
    /// Value and CAS token of a shared-data key, shared by every worker.
    fn shared_get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// Writes `value` if the key's CAS is still `cas` (0 = unconditional;
    /// a missing key is created whatever `cas` is, as in Envoy: see
    /// [`CREATE_ONLY`]).
    fn shared_set(&mut self, key: &str, value: &[u8], cas: u32) -> SharedWrite;
    /// A proxy property (`["source", "address"]`), raw bytes.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;
    fn set_property(&mut self, path: &[&str], value: &[u8]) -> bool;
}

/// Dispatching callouts (`dispatch_http_call`, `dispatch_grpc_call`).
pub trait Callouts {
    fn http_call(&mut self, call: &HttpCallout<'_>) -> Result<Token, CalloutError>;
    fn grpc_call(&mut self, call: &GrpcCallout<'_>) -> Result<Token, CalloutError>;
}

/// Host and callouts together: what [`crate::Cx`] holds.
pub trait Seam: Host + Callouts {}
impl<T: Host + Callouts> Seam for T {}

/// Metric increments recorded during a hook, applied by the pipeline in one
/// pass afterwards. The first few live inline: no allocation per request.
#[derive(Debug, Clone)]
pub struct Bumps {
    inline: [(MetricId, i64); 8],
    len: usize,
    spill: Vec<(MetricId, i64)>,
}

impl Default for Bumps {
    fn default() -> Self {
        Self {
            inline: [(MetricId::NONE, 0); 8],
            len: 0,
            spill: Vec::new(),
        }
    }
}

impl Bumps {
    pub fn push(&mut self, id: MetricId, delta: i64) {
        match self.inline.get_mut(self.len) {
            Some(slot) => {
                *slot = (id, delta);
                self.len += 1;
            }
            None => self.spill.push((id, delta)),
        }
    }

    /// Hands every recorded increment to `apply`, in order, and forgets them.
    pub fn drain(&mut self, mut apply: impl FnMut(MetricId, i64)) {
        for (id, delta) in self.inline.iter().take(self.len) {
            apply(*id, *delta);
        }
        self.len = 0;
        for (id, delta) in self.spill.drain(..) {
            apply(id, delta);
        }
    }
}
