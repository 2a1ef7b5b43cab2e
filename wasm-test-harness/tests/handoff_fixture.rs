//! The bench's handoff experiment (bench/fixtures/handoff) does what its
//! two variants claim, so the CPU it measures is the handoff's: in queue
//! mode every logged record goes onto the shared queue and the last worker
//! to register takes them all off; in local mode nothing is queued.

mod common;

use common::fixtures::fixture;
use wasm_test_harness::{Harness, Headers};

fn log_one(vm: &mut wasm_test_harness::Vm) {
    let mut http = vm.new_http().unwrap();
    http.request_headers(Headers::from_pairs(&[(":path", "/")]), true)
        .unwrap();
    http.response_headers(Headers::from_pairs(&[(":status", "200")]), true)
        .unwrap();
    http.finish().unwrap();
}

#[test]
fn queue_mode_hands_every_record_to_the_last_registered_worker() {
    let h = Harness::new();
    let m = h.module(fixture("handoff-experiment")).unwrap();
    let mut producer = h.vm(&m).vm_id("al").start().unwrap();
    assert!(producer.configure(br#"{"mode": "queue"}"#).unwrap());
    let mut consumer = h.vm(&m).vm_id("al").start().unwrap();
    assert!(consumer.configure(br#"{"mode": "queue"}"#).unwrap());
    for _ in 0..3 {
        log_one(&mut producer);
    }
    log_one(&mut consumer);
    let queued = h.queue_items("al", "meshguard-handoff");
    assert_eq!(queued.len(), 4);
    assert!(queued.iter().all(|r| r.len() == 1024));
    // The producer is not notified; the consumer takes everything.
    producer.poll().unwrap();
    assert_eq!(h.queue_items("al", "meshguard-handoff").len(), 4);
    consumer.poll().unwrap();
    assert!(h.queue_items("al", "meshguard-handoff").is_empty());
    // The bench's check: received records counted per hundred.
    assert_eq!(h.counter("handoff_records_received"), 0);
    for _ in 0..96 {
        log_one(&mut producer);
    }
    consumer.poll().unwrap();
    assert_eq!(h.counter("handoff_records_received"), 100);
    assert!(producer.failure().is_none() && consumer.failure().is_none());
}

#[test]
fn local_mode_queues_nothing() {
    let h = Harness::new();
    let m = h.module(fixture("handoff-experiment")).unwrap();
    let mut vm = h.vm(&m).vm_id("al").start().unwrap();
    assert!(vm.configure(br#"{"mode": "local"}"#).unwrap());
    for _ in 0..100 {
        log_one(&mut vm);
    }
    assert!(h.queue_items("al", "meshguard-handoff").is_empty());
    assert_eq!(h.counter("handoff_records_received"), 100);
    assert!(vm.failure().is_none());
}
