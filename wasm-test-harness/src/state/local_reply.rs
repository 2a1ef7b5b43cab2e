//! The response Envoy builds for a local reply (`sendLocalReply`): status,
//! the filter's headers, and `content-length`/`content-type` for a body; a
//! gRPC request gets a trailers-only gRPC answer instead.

use crate::headers::Headers;

/// A `send_local_response` the guest made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u32,
    pub details: String,
    pub headers: Headers,
    pub body: Vec<u8>,
    /// `None` when the guest passed -1 (not a gRPC reply).
    pub grpc_status: Option<i32>,
}

/// What the client gets (before the filter's response callbacks run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplyMessage {
    pub headers: Headers,
    /// Empty for gRPC.
    pub body: Vec<u8>,
}

/// Builds the reply for `reply` to a request with `request` headers.
pub(crate) fn reply_message(reply: &LocalResponse, request: Option<&Headers>) -> ReplyMessage {
    let grpc_request = request
        .and_then(|h| h.get("content-type"))
        .is_some_and(|ct| ct.starts_with("application/grpc"));
    let mut h = Headers::new();
    if grpc_request {
        h.add(":status", b"200");
        h.add("content-type", b"application/grpc");
        let code = reply.grpc_status.unwrap_or(2);
        h.add("grpc-status", code.to_string().as_bytes());
        let msg = if reply.body.is_empty() {
            reply.details.as_bytes()
        } else {
            reply.body.as_slice()
        };
        if !msg.is_empty() {
            h.add("grpc-message", msg);
        }
        for (k, v) in reply.headers.raw_pairs() {
            h.add(k, v);
        }
        return ReplyMessage {
            headers: h,
            body: Vec::new(),
        };
    }
    h.add(":status", reply.status.to_string().as_bytes());
    for (k, v) in reply.headers.raw_pairs() {
        h.add(k, v);
    }
    if !reply.body.is_empty() {
        h.replace("content-length", reply.body.len().to_string().as_bytes());
        if !h.contains("content-type") {
            h.add("content-type", b"text/plain");
        }
    }
    ReplyMessage {
        headers: h,
        body: reply.body.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_reply_with_body() {
        let reply = LocalResponse {
            status: 403,
            details: String::new(),
            headers: Headers::from_pairs(&[("x-a", "1")]),
            body: b"denied\n".to_vec(),
            grpc_status: None,
        };
        let m = reply_message(&reply, Some(&Headers::from_pairs(&[(":method", "GET")])));
        assert_eq!(
            m.headers.pairs(),
            vec![
                (":status".into(), "403".into()),
                ("x-a".into(), "1".into()),
                ("content-length".into(), "7".into()),
                ("content-type".into(), "text/plain".into()),
            ]
        );
        assert_eq!(m.body, b"denied\n");
    }
}
