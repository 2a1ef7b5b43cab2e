//! What Envoy shares between workers — the clock, shared data, shared
//! queues, stats, declared clusters — owned by one harness and locked by
//! every VM that touches it (VMs may run on separate threads).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::metrics::Metrics;
use super::queues::Queues;
use super::shared_data::SharedData;

pub(crate) struct Process {
    pub now_unix_ns: u64,
    pub start_unix_ns: u64,
    pub seed: u64,
    pub next_vm: u64,
    pub call_timeout: Duration,
    pub shared_data: SharedData,
    pub queues: Queues,
    pub metrics: Metrics,
    pub clusters: BTreeSet<String>,
}

pub(crate) type SharedProcess = Arc<Mutex<Process>>;

impl Process {
    pub fn new(start_unix_ns: u64, seed: u64, call_timeout: Duration) -> Self {
        Self {
            now_unix_ns: start_unix_ns,
            start_unix_ns,
            seed,
            next_vm: 0,
            call_timeout,
            shared_data: SharedData::default(),
            queues: Queues::default(),
            metrics: Metrics::default(),
            clusters: BTreeSet::new(),
        }
    }

    /// Moves the clock forward, never back.
    pub fn advance_to(&mut self, unix_ns: u64) {
        self.now_unix_ns = self.now_unix_ns.max(unix_ns);
    }
}

pub(crate) fn lock(p: &Mutex<Process>) -> MutexGuard<'_, Process> {
    // A panicking test thread must not wedge the others: take the data anyway.
    p.lock().unwrap_or_else(|poison| poison.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_only_moves_forward() {
        let mut p = Process::new(100, 0, Duration::from_secs(1));
        p.advance_to(50);
        assert_eq!(p.now_unix_ns, 100);
        p.advance_to(150);
        assert_eq!(p.now_unix_ns, 150);
        assert_eq!(p.start_unix_ns, 100);
    }
}
