use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::abi::{encode_pairs, stream_type, Action};
use crate::state::process::Process;

fn host_on(process: &SharedProcess, vm_number: u64) -> Host {
    let id = Identity {
        vm_id: "vm".into(),
        root_id: "root".into(),
        plugin_name: "plugin".into(),
        vm_configuration: b"vm-config".to_vec(),
        properties: HashMap::new(),
        log_level: LogLevel::Info,
    };
    Host::new(process.clone(), vm_number, 7, id)
}

fn host() -> Host {
    let p = Arc::new(Mutex::new(Process::new(1_000, 7, Duration::from_secs(1))));
    host_on(&p, 1)
}

/// A host whose effective context is stream 2.
fn with_stream() -> Host {
    let mut h = host();
    h.streams.insert(2, StreamState::default());
    h.set_effective_context(2).unwrap();
    h
}

#[test]
fn configuration_buffers_only_in_their_phase() {
    let mut h = host();
    let t = buffer_type::VM_CONFIGURATION;
    assert_eq!(h.buffer(t, 0, 100), Err(Status::NotFound.into()));
    h.phase = Phase::VmStart;
    assert_eq!(h.buffer(t, 0, 100).unwrap(), b"vm-config");
    assert_eq!(h.buffer(t, 3, 3).unwrap(), b"con");
    assert!(matches!(h.buffer(t, 99, 1), Err(HostError::Trap(_))));
    assert_eq!(h.buffer(t, usize::MAX, 2), Err(Status::BadArgument.into()));
    assert_eq!(h.buffer(42, 0, 1), Err(Status::BadArgument.into()));
    // No stream on the root context.
    assert_eq!(
        h.buffer(buffer_type::HTTP_REQUEST_BODY, 0, 1),
        Err(Status::NotFound.into())
    );
}

#[test]
fn callout_maps_exist_only_during_their_callback() {
    let mut h = with_stream();
    let t = map_type::HTTP_CALL_RESPONSE_HEADERS;
    assert_eq!(h.map(t, false).err(), Some(Status::BadArgument));
    h.callout = Some(CalloutData {
        headers: Some(Headers::from([(":status", "200")])),
        body: b"ok".to_vec(),
        trailers: None,
    });
    assert_eq!(
        h.map(t, false).unwrap().get(":status").as_deref(),
        Some("200")
    );
    assert_eq!(
        h.map(map_type::HTTP_CALL_RESPONSE_TRAILERS, false).err(),
        Some(Status::BadArgument)
    );
    assert_eq!(
        h.buffer(buffer_type::HTTP_CALL_RESPONSE_BODY, 0, 9)
            .unwrap(),
        b"ok"
    );
}

#[test]
fn request_header_mutations_are_counted() {
    let mut h = with_stream();
    let t = map_type::REQUEST_HEADERS;
    assert_eq!(
        h.mutate_map(t, |m| m.add("a", b"1")),
        Err(Status::BadArgument)
    );
    h.stream().unwrap().begin_request_headers(Headers::new());
    h.mutate_map(t, |m| m.add("a", b"1")).unwrap();
    h.mutate_map(t, |m| m.remove("a")).unwrap();
    assert_eq!(h.stream().unwrap().request_header_mutations, 2);
}

#[test]
fn local_reply_is_queued_once_and_not_from_root() {
    let mut h = with_stream();
    let headers = encode_pairs(&[("x-a", "1")]);
    h.send_local_response(403, "no entry", b"denied".to_vec(), &headers, -1)
        .unwrap();
    h.send_local_response(500, "", vec![], &[], -1).unwrap();
    assert_eq!(h.local_replies, vec![2]);
    let reply = h.stream().unwrap().local_response.clone().unwrap();
    assert_eq!(reply.details, "no_entry");
    assert_eq!(reply.grpc_status, None);
    assert_eq!(
        h.send_local_response(403, "", vec![], &[1, 0, 0, 0], -1),
        Err(Status::SerializationFailure)
    );
    h.set_effective_context(1).unwrap();
    h.send_local_response(403, "", vec![], &[], 7).unwrap();
    assert_eq!(h.local_replies, vec![2]);
}

#[test]
fn continue_with_parked_body_schedules_delivery() {
    let mut h = with_stream();
    let s = h.stream().unwrap();
    s.begin_request_headers(Headers::new());
    s.end_request_headers(Action::Pause, 0);
    assert_eq!(s.accept_body(true, b"early", true), None);
    h.continue_stream(stream_type::HTTP_REQUEST).unwrap();
    assert_eq!(h.resumed_bodies, vec![(2, true)]);
    // Nothing parked on the response side: nothing to deliver.
    h.continue_stream(stream_type::HTTP_RESPONSE).unwrap();
    assert_eq!(h.resumed_bodies, vec![(2, true)]);
    h.set_effective_context(1).unwrap();
    assert_eq!(
        h.continue_stream(stream_type::HTTP_REQUEST),
        Err(Status::BadArgument)
    );
}

#[test]
fn metrics_shared_by_name_ids_per_vm() {
    let p = Arc::new(Mutex::new(Process::new(0, 0, Duration::from_secs(1))));
    let mut a = host_on(&p, 1);
    let mut b = host_on(&p, 2);
    let other = a.define_metric(0, "other").unwrap();
    let ca = a.define_metric(0, "requests").unwrap();
    let cb = b.define_metric(0, "requests").unwrap();
    assert_eq!((other, ca, cb), (1, 2, 1));
    a.increment_metric(ca, 2).unwrap();
    b.increment_metric(cb, 3).unwrap();
    assert_eq!(a.get_metric(ca), Ok(5));
    assert_eq!(a.define_metric(1, "requests"), Err(Status::BadArgument));
    assert_eq!(a.define_metric(9, "x"), Err(Status::BadArgument));
    assert_eq!(a.record_metric(99, 1), Err(Status::NotFound));
}

#[test]
fn shared_data_and_queues_are_per_vm_id() {
    let p = Arc::new(Mutex::new(Process::new(0, 0, Duration::from_secs(1))));
    let a = host_on(&p, 1);
    let b = host_on(&p, 2);
    a.set_shared_data("k", b"v".to_vec(), 0).unwrap();
    let (v, cas) = b.get_shared_data("k").unwrap();
    assert_eq!(v, b"v");
    assert_eq!(
        b.set_shared_data("k", vec![], cas + 1),
        Err(Status::CasMismatch)
    );
    let q = a.register_queue("q");
    assert_eq!(b.resolve_queue("", "q"), Some(q));
    assert_eq!(b.resolve_queue("vm", "q"), Some(q));
    assert_eq!(b.resolve_queue("other", "q"), None);
}

#[test]
fn ticks_clock_context_and_random() {
    let mut h = host();
    h.set_tick_period(5);
    assert_eq!(h.next_tick_ns, Some(1_000 + 5_000_000));
    h.set_tick_period(0);
    assert_eq!(h.next_tick_ns, None);
    assert_eq!(h.clock_time(0), Ok(1_000));
    assert_eq!(h.clock_time(1), Ok(0));
    assert_eq!(h.clock_time(9), Err(28));
    assert_eq!(h.set_effective_context(5), Err(Status::BadArgument));
    assert_eq!(h.log(9, "x".into()), Err(Status::BadArgument));
    h.log(2, "hi".into()).unwrap();
    assert_eq!(h.logs[0].context_id, 1);
    let mut same = host();
    assert_eq!(h.next_random(), same.next_random(), "seeded per VM");
}

#[test]
fn properties_and_filter_state_need_a_stream() {
    let mut h = host();
    assert_eq!(
        h.set_property(b"k".to_vec(), b"v".to_vec()),
        Err(Status::NotFound)
    );
    assert_eq!(h.get_property(b"plugin_vm_id"), Some(b"vm".to_vec()));
    let mut h = with_stream();
    h.set_property(b"k".to_vec(), b"v".to_vec()).unwrap();
    assert_eq!(h.get_property(b"k"), Some(b"v".to_vec()));
}

#[test]
fn callouts_check_declared_clusters() {
    let mut h = with_stream();
    let req = encode_pairs(&[(":method", "GET"), (":path", "/"), (":authority", "a")]);
    assert_eq!(
        h.http_call("auth".into(), &req, vec![], &[], 100),
        Err(Status::BadArgument)
    );
    lock(&h.process).clusters.insert("auth".into());
    let t = h.http_call("auth".into(), &req, vec![], &[], 100).unwrap();
    assert_eq!(h.callouts.http[&t].context_id, 2);
    assert_eq!(h.callouts.next_deadline(), Some(1_000 + 100_000_000));
}
