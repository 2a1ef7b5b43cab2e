//! Shared queues with proxy-wasm-cpp-host semantics (src/shared_queue.cc):
//! a queue is named within its vm_id, registered by one VM's root context,
//! and every enqueue schedules `on_queue_ready` for that registrant (the
//! VM picks notifications up on its next poll).

use std::collections::{BTreeMap, VecDeque};

use crate::abi::Status;

struct Queue {
    vm_id: String,
    name: String,
    items: VecDeque<Vec<u8>>,
    owner: QueueOwner,
}

/// Who hears about new items: a VM (harness-wide number) and its root context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueOwner {
    pub vm: u64,
    pub context: u32,
}

pub(crate) struct Queues {
    queues: BTreeMap<u32, Queue>,
    next_token: u32,
    /// (owner, queue token) notifications not yet delivered.
    ready: Vec<(QueueOwner, u32)>,
}

impl Default for Queues {
    fn default() -> Self {
        Self {
            queues: BTreeMap::new(),
            next_token: 1,
            ready: Vec::new(),
        }
    }
}

impl Queues {
    /// Registers (or re-registers, moving notifications to `owner`).
    pub fn register(&mut self, vm_id: &str, name: &str, owner: QueueOwner) -> u32 {
        if let Some(token) = self.resolve(vm_id, name) {
            if let Some(q) = self.queues.get_mut(&token) {
                q.owner = owner;
            }
            return token;
        }
        let token = self.next_token;
        self.next_token += 1;
        self.queues.insert(
            token,
            Queue {
                vm_id: vm_id.to_string(),
                name: name.to_string(),
                items: VecDeque::new(),
                owner,
            },
        );
        token
    }

    pub fn resolve(&self, vm_id: &str, name: &str) -> Option<u32> {
        self.queues
            .iter()
            .find(|(_, q)| q.vm_id == vm_id && q.name == name)
            .map(|(t, _)| *t)
    }

    /// Appends and schedules `on_queue_ready` for the registrant.
    pub fn enqueue(&mut self, token: u32, item: Vec<u8>) -> Result<(), Status> {
        let q = self.queues.get_mut(&token).ok_or(Status::NotFound)?;
        q.items.push_back(item);
        self.ready.push((q.owner, token));
        Ok(())
    }

    pub fn dequeue(&mut self, token: u32) -> Result<Vec<u8>, Status> {
        let q = self.queues.get_mut(&token).ok_or(Status::NotFound)?;
        q.items.pop_front().ok_or(Status::Empty)
    }

    pub fn items(&self, vm_id: &str, name: &str) -> Vec<Vec<u8>> {
        self.resolve(vm_id, name)
            .and_then(|t| self.queues.get(&t))
            .map(|q| q.items.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Takes the notifications for VM `vm`: (root context, queue token).
    pub fn take_ready(&mut self, vm: u64) -> Vec<(u32, u32)> {
        let (mine, rest): (Vec<_>, Vec<_>) = self.ready.drain(..).partition(|(o, _)| o.vm == vm);
        self.ready = rest;
        mine.into_iter().map(|(o, t)| (o.context, t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: QueueOwner = QueueOwner { vm: 1, context: 1 };
    const B: QueueOwner = QueueOwner { vm: 2, context: 1 };

    #[test]
    fn register_resolve_enqueue_dequeue() {
        let mut q = Queues::default();
        let t = q.register("vm", "q", A);
        assert_eq!(q.resolve("vm", "q"), Some(t));
        assert_eq!(q.resolve("other", "q"), None);
        assert_eq!(q.dequeue(t), Err(Status::Empty));
        assert_eq!(q.dequeue(t + 1), Err(Status::NotFound));
        assert_eq!(q.enqueue(t + 1, vec![]), Err(Status::NotFound));
        q.enqueue(t, b"1".to_vec()).unwrap();
        q.enqueue(t, b"2".to_vec()).unwrap();
        assert_eq!(q.items("vm", "q"), vec![b"1".to_vec(), b"2".to_vec()]);
        assert_eq!(q.dequeue(t).unwrap(), b"1");
        assert_eq!(q.dequeue(t).unwrap(), b"2");
    }

    #[test]
    fn each_enqueue_notifies_the_current_registrant_once() {
        let mut q = Queues::default();
        let t = q.register("vm", "q", A);
        q.enqueue(t, vec![]).unwrap();
        assert_eq!(q.take_ready(B.vm), vec![]);
        assert_eq!(q.take_ready(A.vm), vec![(1, t)]);
        assert_eq!(q.take_ready(A.vm), vec![]);
        // Re-registration by another VM moves later notifications there.
        assert_eq!(q.register("vm", "q", B), t);
        q.enqueue(t, vec![]).unwrap();
        assert_eq!(q.take_ready(A.vm), vec![]);
        assert_eq!(q.take_ready(B.vm), vec![(1, t)]);
    }
}
