//! HTTP and gRPC callouts a VM has made and not yet seen answered, with
//! Envoy's validation rules (known cluster, required pseudo-headers) and
//! deadlines on the harness clock.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::abi::{decode_pairs, Status};
use crate::headers::Headers;

/// A pending `dispatch_http_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    pub token: u32,
    /// Context that made the call (its `on_http_call_response` runs).
    pub context_id: u32,
    pub cluster: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
    pub timeout: Duration,
    pub(crate) deadline_ns: u64,
}

/// How the test answers an HTTP callout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpCallResponse {
    pub headers: Headers,
    pub body: Vec<u8>,
    pub trailers: Headers,
}

impl HttpCallResponse {
    pub fn new(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Self {
        let mut h = Headers::from_pairs(&[(":status", status.to_string())]);
        for (k, v) in headers {
            h.add(k, v.as_bytes());
        }
        Self {
            headers: h,
            body: body.to_vec(),
            trailers: Headers::new(),
        }
    }

    /// What Envoy's async client answers when the callout's timeout passes.
    pub(crate) fn timeout() -> Self {
        let body = b"upstream request timeout".to_vec();
        let headers = Headers::from_pairs(&[
            (":status", "504".to_string()),
            ("content-length", body.len().to_string()),
            ("content-type", "text/plain".to_string()),
        ]);
        Self {
            headers,
            body,
            trailers: Headers::new(),
        }
    }
}

/// A pending unary `dispatch_grpc_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcCall {
    pub token: u32,
    pub context_id: u32,
    pub cluster: String,
    pub service: String,
    pub method: String,
    pub initial_metadata: Headers,
    pub message: Vec<u8>,
    pub timeout: Duration,
    pub(crate) deadline_ns: u64,
}

/// A gRPC stream opened by the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcStream {
    pub token: u32,
    pub context_id: u32,
    pub cluster: String,
    pub service: String,
    pub method: String,
    pub initial_metadata: Headers,
    /// Messages the guest sent, in order.
    pub sent: Vec<Vec<u8>>,
    /// The guest half-closed (end_stream) or closed/cancelled the stream.
    pub local_closed: bool,
}

/// Data a callout-response callback can read back (headers, body/message,
/// trailers/trailing metadata).
#[derive(Default)]
pub(crate) struct CalloutData {
    pub headers: Option<Headers>,
    pub body: Vec<u8>,
    pub trailers: Option<Headers>,
}

/// What the guest passed to `proxy_grpc_call` / `proxy_grpc_stream`.
pub(crate) struct GrpcTarget {
    pub cluster: String,
    pub service: String,
    pub method: String,
    pub metadata: Vec<u8>,
}

fn deadline(now_ns: u64, timeout_ms: u32) -> (Duration, u64) {
    let ms = u64::from(timeout_ms);
    let deadline = match ms {
        0 => u64::MAX,
        ms => now_ns.saturating_add(ms * 1_000_000),
    };
    (Duration::from_millis(ms), deadline)
}

#[derive(Default)]
pub(crate) struct Callouts {
    next_token: u32,
    pub http: BTreeMap<u32, HttpCall>,
    pub grpc: BTreeMap<u32, GrpcCall>,
    pub streams: BTreeMap<u32, GrpcStream>,
}

impl Callouts {
    fn new_token(&mut self) -> u32 {
        self.next_token += 1;
        self.next_token
    }

    /// Envoy: unknown cluster → BadArgument; malformed pairs →
    /// SerializationFailure; missing `:method`/`:path`/`:authority` or a
    /// negative timeout → BadArgument.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch_http(
        &mut self,
        context_id: u32,
        cluster: String,
        cluster_known: bool,
        headers: &[u8],
        body: Vec<u8>,
        trailers: &[u8],
        timeout_ms: i32,
        now_ns: u64,
    ) -> Result<u32, Status> {
        if !cluster_known {
            return Err(Status::BadArgument);
        }
        let (Some(headers), Some(trailers)) = (decode_pairs(headers), decode_pairs(trailers))
        else {
            return Err(Status::SerializationFailure);
        };
        let headers = Headers::from_bytes(&headers);
        let complete = [":method", ":path", ":authority"]
            .iter()
            .all(|h| headers.contains(h));
        if !complete || timeout_ms < 0 {
            return Err(Status::BadArgument);
        }
        let token = self.new_token();
        let (timeout, deadline_ns) = deadline(now_ns, timeout_ms as u32);
        self.http.insert(
            token,
            HttpCall {
                token,
                context_id,
                cluster,
                headers,
                body,
                trailers: Headers::from_bytes(&trailers),
                timeout,
                deadline_ns,
            },
        );
        Ok(token)
    }

    /// Envoy answers an unknown cluster with ParseFailure here (its TODO
    /// says BadArgument).
    pub fn dispatch_grpc(
        &mut self,
        context_id: u32,
        target: GrpcTarget,
        cluster_known: bool,
        message: Vec<u8>,
        timeout_ms: i32,
        now_ns: u64,
    ) -> Result<u32, Status> {
        if !cluster_known {
            return Err(Status::ParseFailure);
        }
        let metadata = decode_pairs(&target.metadata).ok_or(Status::SerializationFailure)?;
        let token = self.new_token();
        let (timeout, deadline_ns) = deadline(now_ns, timeout_ms as u32);
        self.grpc.insert(
            token,
            GrpcCall {
                token,
                context_id,
                cluster: target.cluster,
                service: target.service,
                method: target.method,
                initial_metadata: Headers::from_bytes(&metadata),
                message,
                timeout,
                deadline_ns,
            },
        );
        Ok(token)
    }

    pub fn open_stream(
        &mut self,
        context_id: u32,
        target: GrpcTarget,
        cluster_known: bool,
    ) -> Result<u32, Status> {
        if !cluster_known {
            return Err(Status::ParseFailure);
        }
        let metadata = decode_pairs(&target.metadata).ok_or(Status::SerializationFailure)?;
        let token = self.new_token();
        self.streams.insert(
            token,
            GrpcStream {
                token,
                context_id,
                cluster: target.cluster,
                service: target.service,
                method: target.method,
                initial_metadata: Headers::from_bytes(&metadata),
                sent: Vec::new(),
                local_closed: false,
            },
        );
        Ok(token)
    }

    pub fn send(&mut self, token: u32, message: Vec<u8>, end_stream: bool) -> Result<(), Status> {
        let s = self.streams.get_mut(&token).ok_or(Status::NotFound)?;
        s.sent.push(message);
        s.local_closed |= end_stream;
        Ok(())
    }

    /// Cancel forgets a call or stream: no callback will come.
    pub fn cancel(&mut self, token: u32) -> Result<(), Status> {
        if self.grpc.remove(&token).is_some() || self.streams.remove(&token).is_some() {
            Ok(())
        } else {
            Err(Status::NotFound)
        }
    }

    /// Close half-closes a stream (the remote may still answer) and
    /// forgets a unary call.
    pub fn close(&mut self, token: u32) -> Result<(), Status> {
        if let Some(s) = self.streams.get_mut(&token) {
            s.local_closed = true;
            Ok(())
        } else if self.grpc.remove(&token).is_some() {
            Ok(())
        } else {
            Err(Status::NotFound)
        }
    }

    pub fn next_deadline(&self) -> Option<u64> {
        let http = self.http.values().map(|c| c.deadline_ns);
        let grpc = self.grpc.values().map(|c| c.deadline_ns);
        http.chain(grpc).min()
    }

    /// Tokens of HTTP and unary gRPC calls whose deadline has passed.
    pub fn expired(&self, now_ns: u64) -> (Vec<u32>, Vec<u32>) {
        let http = self.http.values().filter(|c| c.deadline_ns <= now_ns);
        let grpc = self.grpc.values().filter(|c| c.deadline_ns <= now_ns);
        (
            http.map(|c| c.token).collect(),
            grpc.map(|c| c.token).collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::encode_pairs;

    fn request() -> Vec<u8> {
        encode_pairs(&[(":method", "GET"), (":path", "/"), (":authority", "a")])
    }

    #[test]
    fn http_call_validation_in_envoys_order() {
        let mut c = Callouts::default();
        let call = |c: &mut Callouts, known, headers: &[u8], timeout| {
            c.dispatch_http(2, "auth".into(), known, headers, vec![], &[], timeout, 0)
        };
        assert_eq!(call(&mut c, false, b"junk", 1), Err(Status::BadArgument));
        assert_eq!(
            call(&mut c, true, &[9, 0, 0, 0], 1),
            Err(Status::SerializationFailure)
        );
        let partial = encode_pairs(&[(":method", "GET")]);
        assert_eq!(call(&mut c, true, &partial, 1), Err(Status::BadArgument));
        assert_eq!(call(&mut c, true, &request(), -1), Err(Status::BadArgument));
        assert!(c.http.is_empty());
        let t = call(&mut c, true, &request(), 250).unwrap();
        assert_eq!(c.http[&t].timeout, Duration::from_millis(250));
        assert_eq!(c.http[&t].context_id, 2);
    }

    #[test]
    fn deadlines_and_expiry() {
        let mut c = Callouts::default();
        let h = c
            .dispatch_http(2, "a".into(), true, &request(), vec![], &[], 10, 1_000)
            .unwrap();
        let target = || GrpcTarget {
            cluster: "a".into(),
            service: "s".into(),
            method: "m".into(),
            metadata: vec![],
        };
        let g = c
            .dispatch_grpc(2, target(), true, vec![], 5, 1_000)
            .unwrap();
        let forever = c
            .dispatch_grpc(2, target(), true, vec![], 0, 1_000)
            .unwrap();
        assert_ne!(h, g);
        assert_eq!(c.next_deadline(), Some(1_000 + 5_000_000));
        assert_eq!(c.expired(1_000 + 5_000_000), (vec![], vec![g]));
        assert_eq!(c.expired(1_000 + 10_000_000), (vec![h], vec![g]));
        assert_eq!(c.grpc[&forever].deadline_ns, u64::MAX);
    }

    #[test]
    fn grpc_streams_send_close_cancel() {
        let mut c = Callouts::default();
        let target = |cluster: &str| GrpcTarget {
            cluster: cluster.into(),
            service: "s".into(),
            method: "m".into(),
            metadata: vec![],
        };
        assert_eq!(
            c.open_stream(2, target("x"), false),
            Err(Status::ParseFailure)
        );
        let bad = GrpcTarget {
            metadata: vec![9, 0, 0, 0],
            ..target("a")
        };
        assert_eq!(
            c.open_stream(2, bad, true),
            Err(Status::SerializationFailure)
        );
        let t = c.open_stream(2, target("a"), true).unwrap();
        c.send(t, b"1".to_vec(), false).unwrap();
        assert!(!c.streams[&t].local_closed);
        c.close(t).unwrap();
        assert!(c.streams[&t].local_closed, "close only half-closes");
        c.cancel(t).unwrap();
        assert_eq!(c.send(t, vec![], false), Err(Status::NotFound));
        assert_eq!(c.cancel(t), Err(Status::NotFound));
    }
}
