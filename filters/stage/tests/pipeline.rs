//! The pipeline (the code the proxy-wasm shell runs) driven natively with
//! test stages on the fake proxy: order, wait/resume at the same stage,
//! local replies, edits seen by later stages, body buffering, failure
//! paths, metrics, logs, timers and chain configs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::rc::Rc;
use std::time::Duration;

use meshguard_common::config::{ConfigError, JsonPath};
use meshguard_common::headers::HeaderSource;
use meshguard_stage::pipeline::{Flow, Scratch};
use meshguard_stage::testing::{capture_logs, Answer, Driver, FakeProxy};
use meshguard_stage::*;
use serde::Deserialize;

/// Sets `x-seen` to the value of `x-in` it reads, counts requests.
struct Tagger {
    hits: MetricId,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaggerConfig {
    #[serde(default)]
    tag: String,
}

impl Stage for Tagger {
    const NAME: &'static str = "tagger";
    const CONFIG_KEY: &'static str = "tagger";
    type Config = TaggerConfig;
    type PerRequest = u32;

    fn build(
        c: TaggerConfig,
        at: &JsonPath,
        m: &mut dyn MetricsRegistry,
    ) -> Result<Self, ConfigError> {
        if c.tag == "bad" {
            return Err(at.field("tag").err("bad tag"));
        }
        Ok(Self {
            hits: m.counter("tagger_hits"),
        })
    }

    fn on_request_headers(&self, rq: &mut Request<'_>, st: &mut u32, cx: &mut Cx<'_>) -> Step {
        *st += 1;
        cx.count(self.hits);
        let seen = rq
            .header("x-in")
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| b"none".to_vec());
        rq.set("x-seen", seen);
        rq.remove("x-drop");
        Step::Continue
    }

    fn on_response_headers(&self, rs: &mut Response<'_>, st: &mut u32, _: &mut Cx<'_>) {
        rs.add("x-tagger-calls", st.to_string());
    }
}

/// Calls cluster `auth`, waits, and sets `x-in` from the reply's `x-user`;
/// 403 → local reply; failure → 503. With `body_limit`, asks for the body
/// first and forwards its length.
struct Caller {
    body_limit: Option<usize>,
    twice: bool,
    bogus_wait: bool,
    keep_input: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallerConfig {
    #[serde(default)]
    body_limit: Option<usize>,
    /// Ask twice (two callouts in a row, like a key fetch then a check).
    #[serde(default)]
    twice: bool,
    /// Wait on a token it never dispatched (a stage bug).
    #[serde(default)]
    bogus_wait: bool,
    /// Leave `x-in` alone before the call (no edit goes out with the wait).
    #[serde(default)]
    keep_input: bool,
}

/// Per request: body length seen, body hook calls, callouts answered.
#[derive(Default)]
struct CallerState {
    body_len: Option<usize>,
    body_hooks: u32,
    answers: u32,
}

impl Stage for Caller {
    const NAME: &'static str = "caller";
    const CONFIG_KEY: &'static str = "caller";
    type Config = CallerConfig;
    type PerRequest = CallerState;

    fn build(
        c: CallerConfig,
        _: &JsonPath,
        _: &mut dyn MetricsRegistry,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            body_limit: c.body_limit,
            twice: c.twice,
            bogus_wait: c.bogus_wait,
            keep_input: c.keep_input,
        })
    }

    fn needs(&self) -> Needs {
        Needs {
            request_body: self.body_limit,
            facts: true,
            ..Needs::default()
        }
    }

    fn owned_request_headers(&self) -> &[Rc<str>] {
        thread_local!(static OWNED: &'static [Rc<str>] = Box::leak(Box::new([Rc::<str>::from("x-in")])));
        OWNED.with(|o| *o)
    }

    fn when_headers_unreadable(&self) -> Step {
        Step::Respond(LocalReply::new(503, "unreadable"))
    }

    fn on_request_headers(
        &self,
        rq: &mut Request<'_>,
        _: &mut CallerState,
        cx: &mut Cx<'_>,
    ) -> Step {
        // Stage 0 strips its own outputs (later owners' are stripped by
        // the pipeline before stage 0 runs).
        if !self.keep_input {
            rq.remove("x-in");
        }
        if self.bogus_wait {
            return Step::Wait(4242);
        }
        if self.body_limit.is_some() {
            return Step::Continue; // call after the body
        }
        call(cx, None)
    }

    fn on_request_body(&self, rq: &mut Request<'_>, st: &mut CallerState, cx: &mut Cx<'_>) -> Step {
        st.body_len = rq.body().map(<[u8]>::len);
        st.body_hooks += 1;
        call(cx, rq.body())
    }

    fn on_callout(
        &self,
        reply: Reply<'_>,
        rq: &mut Request<'_>,
        st: &mut CallerState,
        cx: &mut Cx<'_>,
    ) -> Step {
        st.answers += 1;
        if self.twice && st.answers == 1 {
            return call(cx, None);
        }
        match reply {
            Reply::Response {
                status: 200,
                headers,
                ..
            } => {
                if let Some(u) = headers.first("x-user") {
                    cx.facts.identity = Some(Identity {
                        subject: std::str::from_utf8(u).unwrap().into(),
                        issuer: None,
                    });
                    rq.set("x-in", u.to_vec());
                }
                Step::Continue
            }
            Reply::Response {
                status: 403, body, ..
            } => Step::Respond(LocalReply::new(403, body.to_vec())),
            _ => Step::Respond(LocalReply::new(503, "auth unavailable")),
        }
    }
}

fn call(cx: &mut Cx<'_>, body: Option<&[u8]>) -> Step {
    let call = HttpCallout {
        cluster: "auth",
        headers: vec![
            (":method", "POST"),
            (":path", "/check"),
            (":authority", "auth"),
        ],
        body,
        timeout: Duration::from_millis(200),
    };
    match cx.http_call(&call) {
        Ok(t) => Step::Wait(t),
        Err(_) => Step::Respond(LocalReply::new(503, "no auth cluster")),
    }
}

fn auth_proxy() -> FakeProxy {
    FakeProxy::new().with_clusters(&["auth"])
}

/// The auth service's 200 naming `user`.
fn user(name: &str) -> Answer {
    Answer::Response {
        status: 200,
        headers: vec![("x-user".into(), name.into())],
        body: vec![],
    }
}

const CHAIN: &str = r#"{"caller": {}, "tagger": {}}"#;

#[test]
fn wait_resumes_at_the_same_stage_and_later_stages_read_its_edits() {
    let mut d = Driver::<(Caller, Tagger)>::with_proxy(CHAIN.as_bytes(), auth_proxy()).unwrap();
    let (mut s, flow) = d.request(&[(":path", "/"), ("x-in", "forged"), ("x-drop", "1")], true);
    assert_eq!(flow, Flow::Pause);
    assert_eq!(d.proxy.calls.len(), 1);
    assert_eq!(d.proxy.calls[0].cluster, "auth");
    assert_eq!(d.proxy.calls[0].timeout, Duration::from_millis(200));
    // Edits made before the wait are already applied: the forged header is gone.
    assert_eq!(d.proxy.request_header("x-in"), None);
    assert_eq!(
        d.proxy.counter("tagger_hits"),
        0,
        "later stage ran before the reply"
    );

    d.answer(&mut s, user("alice"));
    assert_eq!(d.proxy.resumed, 1);
    assert_eq!(d.proxy.request_header("x-in").as_deref(), Some("alice"));
    assert_eq!(
        d.proxy.request_header("x-seen").as_deref(),
        Some("alice"),
        "tagger read caller's edit"
    );
    assert_eq!(d.proxy.request_header("x-drop"), None);
    assert_eq!(d.proxy.counter("tagger_hits"), 1);
    assert_eq!(
        s.stream.facts().identity.as_ref().unwrap().subject.as_ref(),
        "alice"
    );

    d.response(&mut s, &[(":status", "200")]);
    assert_eq!(d.proxy.response_header_all("x-tagger-calls"), vec!["1"]);
    // Edits went out with the wait, so the answer's hook read the proxy's
    // headers again; the later stage used that same read.
    assert_eq!(d.proxy.request_header_reads, 2);
}

#[test]
fn a_wait_with_no_edit_sent_reads_the_request_headers_once() {
    let chain = r#"{"caller": {"keep_input": true}, "tagger": {}}"#;
    let mut d = Driver::<(Caller, Tagger)>::with_proxy(chain.as_bytes(), auth_proxy()).unwrap();
    let (mut s, flow) = d.request(&[(":path", "/"), ("x-drop", "1")], true);
    assert_eq!(flow, Flow::Pause);
    assert_eq!(d.proxy.request_header_reads, 1);
    d.answer(&mut s, user("bob"));
    assert_eq!(d.proxy.resumed, 1);
    // The answer's hook and the later stage saw the headers kept at the
    // wait, with the pending edits on top: the same outcome as a re-read.
    assert_eq!(d.proxy.request_header("x-in").as_deref(), Some("bob"));
    assert_eq!(d.proxy.request_header("x-seen").as_deref(), Some("bob"));
    assert_eq!(d.proxy.request_header("x-drop"), None);
    assert_eq!(d.proxy.counter("tagger_hits"), 1);
    assert_eq!(d.proxy.request_header_reads, 1, "no second read");

    // Two callouts in a row: the second wait is from the answer's hook;
    // the headers are read again for its answer, never stale.
    let chain = r#"{"caller": {"keep_input": true, "twice": true}, "tagger": {}}"#;
    let mut d = Driver::<(Caller, Tagger)>::with_proxy(chain.as_bytes(), auth_proxy()).unwrap();
    let (mut s, _) = d.request(&[(":path", "/")], true);
    for _ in 0..2 {
        d.answer(&mut s, user("carol"));
    }
    assert_eq!(d.proxy.resumed, 1);
    assert_eq!(d.proxy.request_header("x-seen").as_deref(), Some("carol"));
    assert_eq!(d.proxy.request_header_reads, 2);
}

#[test]
fn a_local_reply_stops_the_chain() {
    let mut d = Driver::<(Caller, Tagger)>::with_proxy(CHAIN.as_bytes(), auth_proxy()).unwrap();
    let (mut s, _) = d.request(&[(":path", "/")], true);
    d.answer(
        &mut s,
        Answer::Response {
            status: 403,
            headers: vec![],
            body: b"go away".to_vec(),
        },
    );
    assert_eq!(d.proxy.replies.len(), 1);
    assert_eq!(d.proxy.replies[0].status, 403);
    assert_eq!(d.proxy.replies[0].body.as_bytes(), b"go away");
    assert_eq!(d.proxy.resumed, 0);
    assert_eq!(d.proxy.counter("tagger_hits"), 0);
    assert!(s.stream.replied());
}

#[test]
fn failed_and_undispatchable_callouts_fail_closed() {
    let mut d = Driver::<(Caller, Tagger)>::with_proxy(CHAIN.as_bytes(), auth_proxy()).unwrap();
    let (mut s, _) = d.request(&[(":path", "/")], true);
    d.answer(&mut s, Answer::Failed);
    assert_eq!(d.proxy.replies[0].status, 503);

    // No such cluster: answered at once, nothing dispatched, never a hang.
    let mut d = Driver::<(Caller, Tagger)>::new(CHAIN.as_bytes()).unwrap();
    let (s, flow) = d.request(&[(":path", "/")], true);
    assert_eq!(flow, Flow::Pause);
    assert!(d.proxy.calls.is_empty());
    assert_eq!(d.proxy.replies[0].body.as_bytes(), b"no auth cluster");
    assert_eq!(s.stream.waiting_on(), None);
}

#[test]
fn a_late_or_foreign_callout_answer_is_ignored() {
    let mut d = Driver::<(Caller, Tagger)>::with_proxy(CHAIN.as_bytes(), auth_proxy()).unwrap();
    let (mut s, _) = d.request(&[(":path", "/")], true);
    let token = s.stream.waiting_on().unwrap();
    s.stream.on_callout(
        &d.chain,
        &mut d.proxy,
        &mut Default::default(),
        token + 7,
        1,
        0,
    );
    assert_eq!(d.proxy.resumed, 0);
    assert_eq!(s.stream.waiting_on(), Some(token));
}

/// As in Envoy: the headers go on once every headers hook ran, the body
/// is buffered for the stage that asked, and after the headers left, a
/// body-phase edit of request headers is dropped.
#[test]
fn body_is_buffered_for_the_stage_that_asked() {
    let config = r#"{"caller": {"body_limit": 8}, "tagger": {}}"#;
    let mut d = Driver::<(Caller, Tagger)>::with_proxy(config.as_bytes(), auth_proxy()).unwrap();
    let (mut s, flow) = d.request(
        &[(":path", "/"), (":method", "POST"), ("x-in", "forged")],
        false,
    );
    assert_eq!(
        flow,
        Flow::Continue,
        "headers go on so that Envoy hands over the body"
    );
    assert_eq!(
        d.proxy.request_header("x-seen").as_deref(),
        Some("none"),
        "forged x-in stripped first"
    );
    assert_eq!(
        d.body(&mut s, b"abc", false),
        Flow::Pause,
        "keep buffering below the limit"
    );
    assert!(d.proxy.calls.is_empty());
    assert_eq!(
        d.body(&mut s, b"defghijk", false),
        Flow::Pause,
        "limit reached: call out"
    );
    assert_eq!(d.proxy.calls.len(), 1);
    assert_eq!(
        d.proxy.calls[0].body.as_deref(),
        Some(b"abcdefgh".as_slice()),
        "capped at the limit"
    );
    let ((), logs) = capture_logs(|| d.answer(&mut s, user("bob")));
    assert_eq!(d.proxy.resumed, 1);
    assert_eq!(
        d.proxy.request_header("x-in"),
        None,
        "too late to edit request headers"
    );
    assert!(logs.iter().any(|(_, m)| m.contains("dropped")), "{logs:?}");
    assert_eq!(s.stream.state().0.body_len, Some(8));

    // A request that ends with its headers: body hooks run at once on an
    // empty body while the headers are held, so their edits still apply.
    let (mut s, flow) = d.request(&[(":path", "/")], true);
    assert_eq!(flow, Flow::Pause);
    assert_eq!(
        d.proxy.calls.last().unwrap().body.as_deref(),
        Some(b"".as_slice())
    );
    d.answer(&mut s, user("carol"));
    assert_eq!(d.proxy.request_header("x-in").as_deref(), Some("carol"));
}

#[test]
fn body_held_behind_paused_headers_is_delivered_on_resume() {
    // The caller waits in its headers hook (no body limit); the body that
    // arrives meanwhile reaches the next callback only after the resume.
    let mut d = Driver::<(Caller, Tagger)>::with_proxy(CHAIN.as_bytes(), auth_proxy()).unwrap();
    let (mut s, flow) = d.request(&[(":path", "/"), (":method", "POST")], false);
    assert_eq!(flow, Flow::Pause);
    assert_eq!(
        d.body(&mut s, b"payload", true),
        Flow::Pause,
        "held by Envoy"
    );
    d.answer(&mut s, user("dan"));
    assert_eq!(d.proxy.resumed, 1);
    assert_eq!(d.proxy.request_header("x-seen").as_deref(), Some("dan"));
}

#[test]
fn trailers_end_the_body_and_never_skip_a_decision() {
    let config = r#"{"caller": {"body_limit": 64}, "tagger": {}}"#;
    let mut d = Driver::<(Caller, Tagger)>::with_proxy(config.as_bytes(), auth_proxy()).unwrap();
    let (mut s, _) = d.request(&[(":path", "/"), (":method", "POST")], false);
    assert_eq!(d.body(&mut s, b"grpc-frame", false), Flow::Pause);
    assert_eq!(
        d.trailers(&mut s),
        Flow::Pause,
        "trailers wait for the callout"
    );
    assert_eq!(d.proxy.calls.len(), 1);
    assert_eq!(
        d.proxy.calls[0].body.as_deref(),
        Some(b"grpc-frame".as_slice())
    );
    assert_eq!(d.trailers(&mut s), Flow::Pause, "still waiting");
    d.answer(
        &mut s,
        Answer::Response {
            status: 403,
            headers: vec![],
            body: b"no".to_vec(),
        },
    );
    assert_eq!(d.proxy.replies[0].status, 403);
    assert_eq!(d.proxy.resumed, 0);
}

#[test]
fn two_callouts_in_a_row_from_the_body_hook_run_it_once() {
    let config = r#"{"caller": {"body_limit": 4, "twice": true}, "tagger": {}}"#;
    let mut d = Driver::<(Caller, Tagger)>::with_proxy(config.as_bytes(), auth_proxy()).unwrap();
    let (mut s, _) = d.request(&[(":path", "/"), (":method", "POST")], false);
    d.body(&mut s, b"data", true);
    d.answer(
        &mut s,
        Answer::Response {
            status: 200,
            headers: vec![],
            body: vec![],
        },
    );
    assert_eq!(d.proxy.calls.len(), 2, "second callout");
    assert_eq!(d.proxy.resumed, 0);
    d.answer(
        &mut s,
        Answer::Response {
            status: 200,
            headers: vec![],
            body: vec![],
        },
    );
    assert_eq!(d.proxy.resumed, 1);
    assert_eq!(s.stream.state().0.body_hooks, 1);
    assert_eq!(s.stream.state().0.answers, 2);
}

#[test]
fn a_stage_before_the_owner_never_reads_a_forged_owned_header() {
    // Tagger runs first and copies x-in; Caller owns x-in.
    let config = r#"{"tagger": {}, "caller": {}}"#;
    let mut d = Driver::<(Tagger, Caller)>::with_proxy(config.as_bytes(), auth_proxy()).unwrap();
    let (_s, _) = d.request(
        &[(":path", "/"), ("x-in", "forged"), ("X-IN", "again")],
        true,
    );
    assert_eq!(d.proxy.request_header("x-seen").as_deref(), Some("none"));
    assert_eq!(d.proxy.request_header_all("x-in"), Vec::<String>::new());
}

#[test]
fn waiting_on_a_token_never_dispatched_fails_closed() {
    let config = r#"{"caller": {"bogus_wait": true}, "tagger": {}}"#;
    let mut d = Driver::<(Caller, Tagger)>::with_proxy(config.as_bytes(), auth_proxy()).unwrap();
    let ((s, flow), logs) = capture_logs(|| d.request(&[(":path", "/")], true));
    assert_eq!(flow, Flow::Pause);
    assert_eq!(d.proxy.replies[0].status, 500);
    assert_eq!(s.stream.waiting_on(), None);
    assert!(
        logs.iter().any(|(_, m)| m.contains("did not dispatch")),
        "{logs:?}"
    );
}

#[test]
fn answers_after_the_response_started_are_ignored() {
    let mut d = Driver::<(Caller, Tagger)>::with_proxy(CHAIN.as_bytes(), auth_proxy()).unwrap();
    let (mut s, _) = d.request(&[(":path", "/")], true);
    let token = s.stream.waiting_on().unwrap();
    // Envoy answered on its own (stream timeout) while we waited.
    d.response(&mut s, &[(":status", "504")]);
    s.stream
        .on_callout(&d.chain, &mut d.proxy, &mut Scratch::default(), token, 1, 0);
    assert_eq!(d.proxy.resumed, 0);
    assert!(d.proxy.replies.is_empty());
    assert_eq!(d.proxy.counter("tagger_hits"), 0);
}

#[test]
fn header_injection_from_a_callout_answer_is_refused_and_counted() {
    let mut d = Driver::<(Caller, Tagger)>::with_proxy(CHAIN.as_bytes(), auth_proxy()).unwrap();
    let (mut s, _) = d.request(&[(":path", "/")], true);
    d.answer(
        &mut s,
        Answer::Response {
            status: 200,
            headers: vec![("x-user".into(), "eve\r\nx-admin: 1".into())],
            body: vec![],
        },
    );
    assert_eq!(d.proxy.request_header("x-in"), None);
    assert_eq!(d.proxy.counter("meshguard_refused_header_edits"), 1);
}

#[test]
fn unreadable_headers_strip_owned_headers_and_fail_closed_when_a_stage_says_so() {
    let mut proxy = auth_proxy();
    proxy.unreadable_request = true;
    let mut d = Driver::<(Caller, Tagger)>::with_proxy(CHAIN.as_bytes(), proxy).unwrap();
    let ((_, flow), logs) = capture_logs(|| d.request(&[(":path", "/"), ("x-in", "forged")], true));
    assert_eq!(flow, Flow::Pause);
    assert_eq!(d.proxy.host_edits, vec!["request remove x-in"]);
    assert_eq!(d.proxy.replies[0].status, 503);
    assert!(
        logs.iter()
            .any(|(l, m)| *l == log::Level::Error && m.contains("cannot read")),
        "{logs:?}"
    );
}

#[test]
fn edits_cost_one_host_call_each() {
    let mut d = Driver::<(Tagger,)>::new(b"{}").unwrap();
    d.request(&[(":path", "/"), ("x-in", "v")], true);
    assert_eq!(
        d.proxy.host_edits,
        vec!["request replace x-seen=v", "request remove x-drop"]
    );
}

#[test]
fn chain_config_errors_name_the_stage_path() {
    let err = Driver::<(Caller, Tagger)>::new(br#"{"caller": {}, "tagger": {"tag": "bad"}}"#)
        .err()
        .unwrap();
    assert_eq!(err.path, "$.tagger.tag");
    let err = Driver::<(Caller, Tagger)>::new(br#"{"caller": {"nope": 1}, "tagger": {}}"#)
        .err()
        .unwrap();
    assert_eq!(err.path, "$.caller.nope");
    let err = Driver::<(Caller, Tagger)>::new(br#"{"caller": {}, "tager": {}}"#)
        .err()
        .unwrap();
    assert_eq!(err.path, "$.tager");
    assert!(err.message.contains("caller, tagger"), "{}", err.message);
    let err = Driver::<(Caller, Tagger)>::new(br#"{"caller": {}}"#)
        .err()
        .unwrap();
    assert!(
        err.message.contains("missing field `tagger`"),
        "{}",
        err.message
    );
    // One stage alone: its config is the whole document.
    let err = Driver::<(Tagger,)>::new(br#"{"tag": "bad"}"#)
        .err()
        .unwrap();
    assert_eq!(err.path, "$.tag");
    let err = Driver::<(Tagger,)>::new(b"{\n  \"tag\": \n}")
        .err()
        .unwrap();
    assert!(err.message.contains("line 3, column 1"), "{}", err.message);
}

/// Refreshes something on a timer through a root callout.
struct Refresher;

impl Stage for Refresher {
    const NAME: &'static str = "refresher";
    const CONFIG_KEY: &'static str = "refresher";
    type Config = serde_json::Value;
    type PerRequest = ();

    fn build(
        _: serde_json::Value,
        _: &JsonPath,
        _: &mut dyn MetricsRegistry,
    ) -> Result<Self, ConfigError> {
        Ok(Self)
    }
    fn needs(&self) -> Needs {
        Needs {
            tick: Some(Duration::from_secs(10)),
            ..Needs::default()
        }
    }
    fn on_request_headers(&self, _: &mut Request<'_>, _: &mut (), _: &mut Cx<'_>) -> Step {
        Step::Continue
    }
    fn on_tick(&self, cx: &mut RootCx<'_>) {
        let call = HttpCallout {
            cluster: "auth",
            headers: vec![(":path", "/keys")],
            body: None,
            timeout: Duration::from_secs(1),
        };
        let _ = cx.http_call(&call);
    }
    fn on_root_callout(&self, _: Token, reply: Reply<'_>, cx: &mut RootCx<'_>) {
        match reply {
            Reply::Response { body, .. } => {
                cx.host().shared_set("keys", body, 0);
            }
            Reply::Failed | Reply::Grpc { .. } => {
                cx.host().shared_set("failed", b"1", 0);
            }
        }
    }
}

/// Asks a gRPC service; continues on an OK answer whose message is `yes`.
struct GrpcAsker;

impl Stage for GrpcAsker {
    const NAME: &'static str = "grpc-asker";
    const CONFIG_KEY: &'static str = "grpc_asker";
    type Config = serde_json::Value;
    type PerRequest = ();
    fn build(
        _: serde_json::Value,
        _: &JsonPath,
        _: &mut dyn MetricsRegistry,
    ) -> Result<Self, ConfigError> {
        Ok(Self)
    }
    fn on_request_headers(&self, _: &mut Request<'_>, _: &mut (), cx: &mut Cx<'_>) -> Step {
        let call = meshguard_stage::GrpcCallout {
            cluster: "rls",
            service: "svc.Service",
            method: "Ask",
            metadata: vec![],
            message: b"question",
            timeout: Duration::from_millis(20),
        };
        match cx.grpc_call(&call) {
            Ok(t) => Step::Wait(t),
            Err(_) => Step::Respond(LocalReply::new(503, "no cluster\n")),
        }
    }
    fn on_callout(
        &self,
        reply: Reply<'_>,
        rq: &mut Request<'_>,
        _: &mut (),
        _: &mut Cx<'_>,
    ) -> Step {
        match reply {
            Reply::Grpc {
                status: 0,
                message: b"yes",
            } => {
                rq.set("x-asked", "yes");
                Step::Continue
            }
            Reply::Grpc { status, .. } => {
                Step::Respond(LocalReply::new(503, format!("grpc status {status}\n")))
            }
            _ => Step::Respond(LocalReply::new(500, "not grpc\n")),
        }
    }
}

#[test]
fn grpc_callouts_wait_and_resume_with_the_answer() {
    let proxy = FakeProxy::new().with_clusters(&["rls"]);
    let mut d = Driver::<(GrpcAsker,)>::with_proxy(b"null", proxy).unwrap();
    let (mut s, flow) = d.request(&[(":path", "/"), (":method", "GET")], true);
    assert_eq!(flow, Flow::Pause);
    let call = d.proxy.grpc_calls[0].clone();
    assert_eq!(
        (
            call.cluster.as_str(),
            call.service.as_str(),
            call.method.as_str()
        ),
        ("rls", "svc.Service", "Ask")
    );
    assert_eq!(call.message, b"question");
    assert_eq!(call.timeout, Duration::from_millis(20));
    d.answer_grpc(&mut s, 0, b"yes");
    assert_eq!(d.proxy.resumed, 1);
    assert_eq!(d.proxy.request_header("x-asked").as_deref(), Some("yes"));
    // A timeout (DEADLINE_EXCEEDED): the stage decides, never a hang.
    let (mut s, _) = d.request(&[(":path", "/"), (":method", "GET")], true);
    d.answer_grpc(&mut s, 4, b"");
    assert_eq!(d.proxy.replies.last().unwrap().status, 503);
    // An unknown cluster is refused at dispatch.
    let mut d = Driver::<(GrpcAsker,)>::with_proxy(b"null", FakeProxy::new()).unwrap();
    d.request(&[(":path", "/")], true);
    assert_eq!(d.proxy.replies.last().unwrap().status, 503);
}

#[test]
fn ticks_run_at_each_stages_period_and_root_callouts_come_back_to_it() {
    let mut d = Driver::<(Tagger, Refresher)>::with_proxy(
        br#"{"tagger": {}, "refresher": null}"#,
        auth_proxy(),
    )
    .unwrap();
    assert_eq!(
        meshguard_stage::pipeline::Root::tick_period(&d.chain),
        Some(Duration::from_secs(10))
    );
    d.tick();
    assert_eq!(d.proxy.calls.len(), 1);
    d.tick(); // same instant: not due again
    assert_eq!(d.proxy.calls.len(), 1);
    let token = d.proxy.calls[0].token;
    assert!(
        d.root.on_callout(&d.chain, &mut d.proxy, token, 0, 0),
        "failed root callout is delivered"
    );
    assert!(
        !d.root.on_callout(&d.chain, &mut d.proxy, token, 0, 0),
        "only once"
    );
    d.proxy.now = Some(d.proxy.now() + Duration::from_secs(10));
    d.tick();
    assert_eq!(d.proxy.calls.len(), 2);
}

/// Adds `x-seen` to every response; `quiet` declares (falsely, so the test
/// can tell) that its response hook does nothing.
struct Responder {
    quiet: bool,
}

#[derive(Deserialize)]
struct ResponderConfig {
    quiet: bool,
}

impl Stage for Responder {
    const NAME: &'static str = "responder";
    const CONFIG_KEY: &'static str = "responder";
    type Config = ResponderConfig;
    type PerRequest = ();

    fn build(
        c: ResponderConfig,
        _: &JsonPath,
        _: &mut dyn MetricsRegistry,
    ) -> Result<Self, ConfigError> {
        Ok(Self { quiet: c.quiet })
    }
    fn needs(&self) -> Needs {
        Needs {
            no_response_hook: self.quiet,
            ..Needs::default()
        }
    }
    fn on_request_headers(&self, _: &mut Request<'_>, _: &mut (), _: &mut Cx<'_>) -> Step {
        Step::Continue
    }
    fn on_response_headers(&self, rs: &mut Response<'_>, _: &mut (), _: &mut Cx<'_>) {
        rs.set("x-seen", "1");
    }
}

#[test]
fn a_chain_whose_response_hooks_do_nothing_skips_the_response_hook() {
    let mut d = Driver::<(Responder,)>::new(br#"{"quiet": true}"#).unwrap();
    let (mut s, _) = d.request(&[(":path", "/")], true);
    d.response(&mut s, &[(":status", "200")]);
    assert!(d.proxy.host_edits.is_empty(), "{:?}", d.proxy.host_edits);

    let mut d = Driver::<(Responder,)>::new(br#"{"quiet": false}"#).unwrap();
    let (mut s, _) = d.request(&[(":path", "/")], true);
    d.response(&mut s, &[(":status", "200")]);
    assert_eq!(d.proxy.host_edits, vec!["response replace x-seen=1"]);
}

#[test]
fn one_stage_with_response_work_runs_every_response_hook() {
    let mut d =
        Driver::<(Responder, Tagger)>::new(br#"{"responder": {"quiet": true}, "tagger": {}}"#)
            .unwrap();
    let (mut s, _) = d.request(&[(":path", "/")], true);
    d.response(&mut s, &[(":status", "200")]);
    assert!(
        d.proxy
            .host_edits
            .iter()
            .any(|e| e == "response replace x-seen=1"),
        "{:?}",
        d.proxy.host_edits
    );
}
