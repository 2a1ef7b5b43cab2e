//! The response Envoy builds for a local reply (`sendLocalReply`,
//! source/common/http/utility.cc `prepareLocalReply`): `:status`, the
//! filter's headers (`addCopy`, in its order), then either a plain HTTP
//! reply with `content-length`/`content-type` for a body, or — for a gRPC
//! request — a trailers-only gRPC answer. A reply to `HEAD` has headers
//! only.

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
    /// Empty for gRPC and HEAD.
    pub body: Vec<u8>,
}

/// Envoy `Grpc::Common::hasGrpcContentType`: exactly `application/grpc`
/// or `application/grpc+…`; `application/grpc-web` is not gRPC.
pub(crate) fn is_grpc(request: Option<&Headers>) -> bool {
    let Some(ct) = request.and_then(|h| h.get("content-type")) else {
        return false;
    };
    match ct.strip_prefix("application/grpc") {
        Some(rest) => rest.is_empty() || rest.starts_with('+'),
        None => false,
    }
}

/// Envoy `Grpc::Utility::httpToGrpcStatus`.
pub(crate) fn http_to_grpc_status(http: u32) -> i32 {
    match http {
        400 => 13,                   // INTERNAL
        401 => 16,                   // UNAUTHENTICATED
        403 => 7,                    // PERMISSION_DENIED
        404 => 12,                   // UNIMPLEMENTED
        429 | 502 | 503 | 504 => 14, // UNAVAILABLE
        _ => 2,                      // UNKNOWN
    }
}

/// Envoy `Http::Utility::PercentEncoding::encode` as used for
/// `grpc-message`: bytes outside 0x20..=0x7E and `%` become `%XX`.
pub(crate) fn percent_encode(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    for &b in raw {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// Builds the reply for `reply` to a request with `request` headers.
pub(crate) fn reply_message(reply: &LocalResponse, request: Option<&Headers>) -> ReplyMessage {
    let head = request
        .and_then(|h| h.get(":method"))
        .is_some_and(|m| m == "HEAD");
    let mut h = Headers::new();
    if is_grpc(request) {
        h.add(":status", b"200");
        for (k, v) in reply.headers.raw_pairs() {
            h.add(k, v);
        }
        set_in_place(&mut h, "content-type", b"application/grpc");
        if !h.contains("grpc-status") {
            let code = reply
                .grpc_status
                .unwrap_or_else(|| http_to_grpc_status(reply.status));
            h.add("grpc-status", code.to_string().as_bytes());
        }
        if !reply.body.is_empty() && !head {
            set_in_place(&mut h, "grpc-message", &percent_encode(&reply.body));
        }
        h.remove("content-length");
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
        set_in_place(
            &mut h,
            "content-length",
            reply.body.len().to_string().as_bytes(),
        );
        if !h.contains("content-type") {
            h.add("content-type", b"text/plain");
        }
    }
    ReplyMessage {
        headers: h,
        body: if head { Vec::new() } else { reply.body.clone() },
    }
}

/// Envoy's `set` on an inline header: an existing entry keeps its place
/// and takes the value; else the header is appended.
fn set_in_place(h: &mut Headers, name: &str, value: &[u8]) {
    if !h.contains(name) {
        h.add(name, value);
        return;
    }
    let pairs: Vec<(String, Vec<u8>)> = h.raw_pairs().to_vec();
    let mut out = Headers::new();
    let mut done = false;
    for (k, v) in pairs {
        if k == name {
            if !done {
                out.add(&k, value);
                done = true;
            }
        } else {
            out.add(&k, &v);
        }
    }
    *h = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u32, headers: &[(&str, &str)], body: &[u8]) -> LocalResponse {
        LocalResponse {
            status,
            details: String::new(),
            headers: Headers::from_pairs(headers),
            body: body.to_vec(),
            grpc_status: None,
        }
    }

    fn request(pairs: &[(&str, &str)]) -> Headers {
        Headers::from_pairs(pairs)
    }

    #[test]
    fn plain_reply_with_body() {
        let m = reply_message(
            &reply(403, &[("x-a", "1")], b"denied\n"),
            Some(&request(&[(":method", "GET")])),
        );
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

    #[test]
    fn head_gets_headers_with_length_and_no_body() {
        let m = reply_message(
            &reply(403, &[], b"denied\n"),
            Some(&request(&[(":method", "HEAD")])),
        );
        assert_eq!(m.headers.get("content-length").as_deref(), Some("7"));
        assert!(m.body.is_empty());
    }

    #[test]
    fn grpc_status_derived_from_http_status() {
        let grpc = request(&[(":method", "POST"), ("content-type", "application/grpc")]);
        let m = reply_message(&reply(403, &[("x-a", "1")], b"no\nway"), Some(&grpc));
        assert_eq!(
            m.headers.pairs(),
            vec![
                (":status".into(), "200".into()),
                ("x-a".into(), "1".into()),
                ("content-type".into(), "application/grpc".into()),
                ("grpc-status".into(), "7".into()),
                ("grpc-message".into(), "no%0Away".into()),
            ]
        );
        assert!(m.body.is_empty());
        for (http, grpc_code) in [
            (400, 13),
            (401, 16),
            (403, 7),
            (404, 12),
            (429, 14),
            (502, 14),
            (503, 14),
            (504, 14),
            (500, 2),
            (418, 2),
        ] {
            assert_eq!(http_to_grpc_status(http), grpc_code, "{http}");
        }
    }

    #[test]
    fn explicit_grpc_status_and_filter_headers_win() {
        let grpc = request(&[("content-type", "application/grpc+proto")]);
        let mut r = reply(403, &[("content-type", "text/x")], b"");
        r.grpc_status = Some(16);
        let m = reply_message(&r, Some(&grpc));
        assert_eq!(m.headers.get("grpc-status").as_deref(), Some("16"));
        assert_eq!(
            m.headers.get_all("content-type"),
            vec!["application/grpc"],
            "set in place"
        );
        assert!(!m.headers.contains("grpc-message"));
        let own = reply(403, &[("grpc-status", "3")], b"");
        let m = reply_message(&own, Some(&grpc));
        assert_eq!(m.headers.get_all("grpc-status"), vec!["3"]);
    }

    #[test]
    fn grpc_web_is_not_grpc() {
        for ct in [
            "application/grpc-web",
            "application/grpc-web+proto",
            "text/plain",
        ] {
            assert!(!is_grpc(Some(&request(&[("content-type", ct)]))), "{ct}");
        }
        assert!(is_grpc(Some(&request(&[(
            "content-type",
            "application/grpc"
        )]))));
        assert!(!is_grpc(None));
        let web = request(&[("content-type", "application/grpc-web")]);
        let m = reply_message(&reply(403, &[], b"denied"), Some(&web));
        assert_eq!(m.headers.get(":status").as_deref(), Some("403"));
        assert_eq!(m.body, b"denied");
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode(b"a b~%\n\x7f\xff"), b"a b~%25%0A%7F%FF");
    }
}
