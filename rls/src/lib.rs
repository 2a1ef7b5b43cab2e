//! meshguard-rls: Envoy's `envoy.service.ratelimit.v3.RateLimitService` over limitador.
//!
//! The request maps onto limitador the way limitador-server's Envoy RLS does:
//! the `domain` is the namespace (an empty one answers `UNKNOWN`), the request's
//! descriptors are bound as the CEL list `descriptors` (`descriptors[0].path`),
//! `hits_addend` 0 counts as 1, and one `check_rate_limited_and_update` call over all
//! of them decides `OK` or `OVER_LIMIT`. `statuses` stays empty (as limitador's);
//! `response_headers_to_add` carries the `X-RateLimit-Limit/-Remaining/-Reset`
//! headers of limitador-server's `-H DRAFT_VERSION_03`. A storage error is gRPC
//! `UNAVAILABLE`, so Envoy's `failure_mode_deny` decides.

pub mod limits;

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use limitador::errors::LimitadorError;
use limitador::limit::{Context, Limit, Namespace};
use limitador::storage::redis::AsyncRedisStorage;
use limitador::{AsyncRateLimiter, CheckResult, RateLimiter};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::{Request, Response, Status};

pub use limits::{parse_limits, LimitsError};

/// How many qualified counters the in-memory storage keeps (limitador-server's default).
const MEMORY_CACHE_SIZE: u64 = 10_000;

/// One Redis connection attempt gives up after this long.
pub const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A Redis call gives up after this long: the check answers UNAVAILABLE. (Envoy's
/// own rate-limit timeout, 20 ms by default, usually decides first.)
pub const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// limitador with its counters in Redis (shared by every instance) or in this process.
pub enum Limiter {
    Memory(RateLimiter),
    Redis(AsyncRateLimiter),
}

impl Limiter {
    /// Counters in this process only (tests, a single instance).
    pub fn in_memory(limits: Vec<Limit>) -> Self {
        let limiter = RateLimiter::new(MEMORY_CACHE_SIZE);
        for limit in limits {
            limiter.add_limit(limit);
        }
        Limiter::Memory(limiter)
    }

    /// Counters in Redis. Connects (and loads limitador's scripts) before returning,
    /// trying again for up to `wait` while Redis refuses.
    ///
    /// The connection manager is limitador's, configured here: redis-rs 0.27's
    /// default reconnects with a backoff of up to a minute per try (seven tries), so
    /// a Redis outage would hold every check (and startup) for minutes. Here a lost
    /// connection is tried again once per check, so checks fail fast (UNAVAILABLE)
    /// while Redis is down and succeed again as soon as it is back.
    pub async fn redis(url: &str, limits: Vec<Limit>, wait: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("Redis URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(REDIS_CONNECT_TIMEOUT)
            .set_response_timeout(REDIS_RESPONSE_TIMEOUT);
        let deadline = Instant::now() + wait;
        let storage = loop {
            let attempt = async {
                let manager =
                    ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
                AsyncRedisStorage::new_with_conn_manager(manager).await
            }
            .await;
            match attempt {
                Ok(storage) => break storage,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await
                }
                Err(e) => return Err(format!("connecting to Redis: {e}")),
            }
        };
        let limiter = AsyncRateLimiter::new_with_storage(Box::new(storage));
        for limit in limits {
            limiter.add_limit(limit);
        }
        Ok(Limiter::Redis(limiter))
    }

    /// limitador's check-and-count over every limit of `namespace` that applies to `ctx`.
    pub async fn check_rate_limited_and_update(
        &self,
        namespace: &Namespace,
        ctx: &Context<'_>,
        delta: u64,
    ) -> Result<CheckResult, LimitadorError> {
        match self {
            Limiter::Memory(limiter) => {
                limiter.check_rate_limited_and_update(namespace, ctx, delta)
            }
            Limiter::Redis(limiter) => {
                limiter
                    .check_rate_limited_and_update(namespace, ctx, delta)
                    .await
            }
        }
    }
}

/// The gRPC service.
pub struct Rls {
    limiter: Arc<Limiter>,
    /// Unix second of the last error logged: a Redis outage logs once a second, not per call.
    last_error_log: AtomicU64,
    /// One check at a time. limitador's Redis storage reads the counters,
    /// decides, then increments: two checks interleaved at the edge of a
    /// limit would both pass. Serialized, one meshguard-rls admits exactly
    /// the limit (several instances on one Redis can still race).
    check_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Rls {
    pub fn new(limiter: Limiter) -> Self {
        Rls {
            limiter: Arc::new(limiter),
            last_error_log: AtomicU64::new(0),
            check_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub fn into_server(self) -> RateLimitServiceServer<Self> {
        RateLimitServiceServer::new(self)
    }

    fn log_error(&self, message: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.last_error_log.swap(now, Ordering::Relaxed) != now {
            eprintln!("meshguard-rls: {message}");
        }
    }
}

/// The CEL context of a request: its descriptors as the list `descriptors`, each a
/// map of its entries (a repeated key keeps its last value).
pub fn request_context(request: &RateLimitRequest) -> Context<'static> {
    let descriptors: Vec<HashMap<String, String>> = request
        .descriptors
        .iter()
        .map(|d| {
            d.entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect()
        })
        .collect();
    let mut ctx = Context::default();
    ctx.list_binding("descriptors".to_string(), descriptors);
    ctx
}

fn response(code: Code, headers: Vec<HeaderValue>) -> Response<RateLimitResponse> {
    Response::new(RateLimitResponse {
        overall_code: code.into(),
        response_headers_to_add: headers,
        ..Default::default()
    })
}

/// limitador-server's `DRAFT_VERSION_03` headers from the counters of a check, by name.
fn draft03_headers(result: &mut CheckResult) -> Vec<HeaderValue> {
    let mut headers: Vec<HeaderValue> = result
        .response_header()
        .into_iter()
        .map(|(key, value)| HeaderValue {
            key,
            value,
            raw_value: Vec::new(),
        })
        .collect();
    headers.sort_by(|a, b| a.key.cmp(&b.key));
    headers
}

#[tonic::async_trait]
impl RateLimitService for Rls {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let request = request.into_inner();
        if request.domain.is_empty() {
            return Ok(response(Code::Unknown, Vec::new()));
        }
        let ctx = request_context(&request);
        let delta = match request.hits_addend {
            0 => 1,
            n => u64::from(n),
        };
        let domain = request.domain;
        let namespace = Namespace::from(domain.clone());

        // In its own task: limitador 0.14 panics (an `unwrap` in `Limit::applies`)
        // when a condition fails to evaluate, e.g. `descriptors[1].x == 'y'` on a
        // request with one descriptor; that must cost this call, not the connection.
        let limiter = Arc::clone(&self.limiter);
        // Queued behind a slow Redis for over a second: the caller's
        // deadline (the filter's timeout) has passed anyway.
        let Ok(serialized) = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            Arc::clone(&self.check_lock).lock_owned(),
        )
        .await
        else {
            return Err(Status::unavailable("rate-limit service busy"));
        };
        let checked = tokio::spawn(async move {
            let _serialized = serialized;
            limiter
                .check_rate_limited_and_update(&namespace, &ctx, delta)
                .await
                .map_err(|e| match e {
                    LimitadorError::StorageError(e) => (
                        Status::unavailable("rate-limit storage unavailable"),
                        e.to_string(),
                    ),
                    LimitadorError::InterpreterError(e) => (
                        Status::internal("evaluating the limits failed"),
                        format!("evaluating a limit: {e:?}"),
                    ),
                })
        })
        .await;

        let mut result = match checked {
            Ok(Ok(result)) => result,
            Ok(Err((status, detail))) => {
                self.log_error(&format!("domain {domain:?}: {detail}"));
                return Err(status);
            }
            Err(join) => {
                self.log_error(&format!(
                    "domain {domain:?}: evaluating its limits panicked ({join}); \
                     does a condition name a descriptor the request lacks?"
                ));
                return Err(Status::internal("evaluating the limits failed"));
            }
        };
        let code = if result.limited {
            Code::OverLimit
        } else {
            Code::Ok
        };
        Ok(response(code, draft03_headers(&mut result)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;

    fn rls(yaml: &str) -> Rls {
        Rls::new(Limiter::in_memory(parse_limits(yaml).unwrap()))
    }

    fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: k.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn request(domain: &str, descriptors: &[&[(&str, &str)]]) -> RateLimitRequest {
        RateLimitRequest {
            domain: domain.to_string(),
            descriptors: descriptors.iter().map(|d| descriptor(d)).collect(),
            hits_addend: 0,
        }
    }

    async fn call(rls: &Rls, req: &RateLimitRequest) -> RateLimitResponse {
        rls.should_rate_limit(Request::new(req.clone()))
            .await
            .unwrap()
            .into_inner()
    }

    async fn code(rls: &Rls, req: &RateLimitRequest) -> Code {
        Code::try_from(call(rls, req).await.overall_code).unwrap()
    }

    fn headers(resp: &RateLimitResponse) -> Vec<(String, String)> {
        resp.response_headers_to_add
            .iter()
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect()
    }

    const PER_PATH: &str = r#"
- namespace: api
  max_value: 3
  seconds: 60
  conditions: ["descriptors[0].path == '/v1/x'"]
"#;

    #[tokio::test]
    async fn over_limit_after_max_value_with_draft03_headers() {
        let rls = rls(PER_PATH);
        let req = request("api", &[&[("path", "/v1/x")]]);
        for remaining in ["2", "1", "0"] {
            let resp = call(&rls, &req).await;
            assert_eq!(resp.overall_code, i32::from(Code::Ok));
            assert!(resp.statuses.is_empty());
            let h = headers(&resp);
            assert_eq!(h.len(), 3, "{h:?}");
            assert_eq!(h[0], ("X-RateLimit-Limit".into(), "3, 3;w=60".into()));
            assert_eq!(h[1], ("X-RateLimit-Remaining".into(), remaining.into()));
            assert_eq!(h[2].0, "X-RateLimit-Reset");
            let reset: u64 = h[2].1.parse().unwrap();
            assert!((58..=60).contains(&reset), "{reset}");
        }
        let resp = call(&rls, &req).await;
        assert_eq!(resp.overall_code, i32::from(Code::OverLimit));
        let h = headers(&resp);
        assert_eq!(h[1], ("X-RateLimit-Remaining".into(), "0".into()));
        // Another path: no limit applies, no headers.
        let other = call(&rls, &request("api", &[&[("path", "/v1/y")]])).await;
        assert_eq!(other.overall_code, i32::from(Code::Ok));
        assert!(other.response_headers_to_add.is_empty());
    }

    #[tokio::test]
    async fn hits_addend_counts_and_zero_is_one() {
        let rls = rls(PER_PATH);
        let mut req = request("api", &[&[("path", "/v1/x")]]);
        req.hits_addend = 2;
        assert_eq!(code(&rls, &req).await, Code::Ok);
        req.hits_addend = 2;
        assert_eq!(code(&rls, &req).await, Code::OverLimit);
        req.hits_addend = 0;
        assert_eq!(code(&rls, &req).await, Code::Ok);
        assert_eq!(code(&rls, &req).await, Code::OverLimit);
    }

    #[tokio::test]
    async fn variables_split_the_counters() {
        let rls = rls(r#"
- namespace: api
  max_value: 2
  seconds: 60
  variables: ["descriptors[0].user"]
"#);
        let alice = request("api", &[&[("user", "alice"), ("extra", "ignored")]]);
        let bob = request("api", &[&[("user", "bob")]]);
        assert_eq!(code(&rls, &alice).await, Code::Ok);
        assert_eq!(code(&rls, &alice).await, Code::Ok);
        assert_eq!(code(&rls, &alice).await, Code::OverLimit);
        assert_eq!(code(&rls, &bob).await, Code::Ok);
        assert_eq!(code(&rls, &bob).await, Code::Ok);
        assert_eq!(code(&rls, &bob).await, Code::OverLimit);
        // Without the variable's entry the limit does not apply.
        let anonymous = request("api", &[&[("path", "/")]]);
        for _ in 0..5 {
            assert_eq!(code(&rls, &anonymous).await, Code::Ok);
        }
    }

    #[tokio::test]
    async fn two_descriptors_each_limit_sees_the_list() {
        // One limit per descriptor position and one over both: a request is over
        // limit as soon as any applying limit is.
        let rls = rls(r#"
- namespace: api
  max_value: 10
  seconds: 60
  conditions: ["descriptors[0].path == '/v1/x'"]
  name: per-path
- namespace: api
  max_value: 2
  seconds: 60
  conditions: ["descriptors[1].tier == 'free'"]
  variables: ["descriptors[1].user"]
  name: free-tier
- namespace: api
  max_value: 1
  seconds: 60
  conditions: ["descriptors[0].path == '/v1/x'", "descriptors[1].tier == 'banned'"]
"#);
        let free = request(
            "api",
            &[&[("path", "/v1/x")], &[("tier", "free"), ("user", "u1")]],
        );
        let resp = call(&rls, &free).await;
        assert_eq!(resp.overall_code, i32::from(Code::Ok));
        // The most restricted counter first, every applying limit listed.
        assert_eq!(
            headers(&resp)[0],
            (
                "X-RateLimit-Limit".into(),
                "2, 2;w=60;name=\"free-tier\", 10;w=60;name=\"per-path\"".into()
            )
        );
        assert_eq!(
            headers(&resp)[1],
            ("X-RateLimit-Remaining".into(), "1".into())
        );
        assert_eq!(code(&rls, &free).await, Code::Ok);
        assert_eq!(code(&rls, &free).await, Code::OverLimit);
        // A refused call counts nowhere: per-path has used 2 of 10.
        let gold = request("api", &[&[("path", "/v1/x")], &[("tier", "gold")]]);
        let resp = call(&rls, &gold).await;
        assert_eq!(resp.overall_code, i32::from(Code::Ok));
        assert_eq!(
            headers(&resp)[1],
            ("X-RateLimit-Remaining".into(), "7".into())
        );
        // Both conditions of a limit must hold.
        let banned = request("api", &[&[("path", "/v1/x")], &[("tier", "banned")]]);
        assert_eq!(code(&rls, &banned).await, Code::Ok);
        assert_eq!(code(&rls, &banned).await, Code::OverLimit);
        let banned_elsewhere = request("api", &[&[("path", "/v2")], &[("tier", "banned")]]);
        assert_eq!(code(&rls, &banned_elsewhere).await, Code::Ok);
        assert_eq!(code(&rls, &banned_elsewhere).await, Code::Ok);
    }

    #[tokio::test]
    async fn other_namespace_is_not_limited() {
        let rls = rls("- {namespace: api, max_value: 0, seconds: 60}\n");
        assert_eq!(
            code(&rls, &request("api", &[&[("a", "b")]])).await,
            Code::OverLimit
        );
        let resp = call(&rls, &request("web", &[&[("a", "b")]])).await;
        assert_eq!(resp.overall_code, i32::from(Code::Ok));
        assert!(resp.response_headers_to_add.is_empty());
    }

    #[tokio::test]
    async fn empty_domain_is_unknown() {
        let rls = rls("- {namespace: api, max_value: 0, seconds: 60}\n");
        let resp = call(&rls, &request("", &[&[("a", "b")]])).await;
        assert_eq!(resp.overall_code, i32::from(Code::Unknown));
        assert!(resp.response_headers_to_add.is_empty());
        assert!(resp.statuses.is_empty());
    }

    #[tokio::test]
    async fn condition_on_a_missing_descriptor_is_an_error_not_a_crash() {
        // limitador panics evaluating `descriptors[1]` on a one-descriptor request;
        // the call gets INTERNAL (Envoy's failure_mode_deny decides) and the service goes on.
        let rls = rls(r#"
- namespace: api
  max_value: 1
  seconds: 60
  conditions: ["descriptors[1].tier == 'free'"]
"#);
        let one = request("api", &[&[("path", "/")]]);
        let err = rls.should_rate_limit(Request::new(one)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
        let two = request("api", &[&[("path", "/")], &[("tier", "free")]]);
        assert_eq!(code(&rls, &two).await, Code::Ok);
        assert_eq!(code(&rls, &two).await, Code::OverLimit);
    }
}
