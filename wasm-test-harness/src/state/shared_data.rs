//! Shared data with proxy-wasm-cpp-host semantics (src/shared_data.cc):
//! one key space per vm_id, every write gets a new CAS, and a write with a
//! non-zero CAS only succeeds if the key still has that CAS.

use std::collections::{BTreeMap, HashMap};

use crate::abi::Status;

pub(crate) struct SharedData {
    /// vm_id → key → (value, cas)
    by_vm: HashMap<String, BTreeMap<String, (Vec<u8>, u32)>>,
    next_cas: u32,
}

impl Default for SharedData {
    fn default() -> Self {
        Self {
            by_vm: HashMap::new(),
            next_cas: 1,
        }
    }
}

impl SharedData {
    pub fn get(&self, vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
        self.by_vm.get(vm_id).and_then(|m| m.get(key)).cloned()
    }

    /// Every key of `vm_id`, sorted (shared data cannot delete keys: the
    /// count only grows).
    pub fn keys(&self, vm_id: &str) -> Vec<String> {
        self.by_vm
            .get(vm_id)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// `cas` 0 writes unconditionally. A missing key is created whatever
    /// the CAS (cpp-host does the same).
    pub fn set(&mut self, vm_id: &str, key: &str, value: Vec<u8>, cas: u32) -> Result<(), Status> {
        let next = self.next_cas;
        let map = self.by_vm.entry(vm_id.to_string()).or_default();
        match map.get_mut(key) {
            Some(entry) => {
                if cas != 0 && cas != entry.1 {
                    return Err(Status::CasMismatch);
                }
                *entry = (value, next);
            }
            None => {
                map.insert(key.to_string(), (value, next));
            }
        }
        // Never hand out 0: it means "no CAS" to the guest.
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_guards_writes() {
        let mut d = SharedData::default();
        assert_eq!(d.get("vm", "k"), None);
        d.set("vm", "k", b"1".to_vec(), 0).unwrap();
        let (v, cas) = d.get("vm", "k").unwrap();
        assert_eq!(v, b"1");
        assert_eq!(
            d.set("vm", "k", b"2".to_vec(), cas + 1),
            Err(Status::CasMismatch)
        );
        d.set("vm", "k", b"2".to_vec(), cas).unwrap();
        let (v, cas2) = d.get("vm", "k").unwrap();
        assert_eq!(v, b"2");
        assert_ne!(cas, cas2);
        // The old CAS is stale now.
        assert_eq!(
            d.set("vm", "k", b"3".to_vec(), cas),
            Err(Status::CasMismatch)
        );
        // Unconditional write always succeeds.
        d.set("vm", "k", b"4".to_vec(), 0).unwrap();
    }

    #[test]
    fn vm_ids_are_separate_and_missing_keys_ignore_cas() {
        let mut d = SharedData::default();
        d.set("a", "k", b"a".to_vec(), 77).unwrap();
        assert_eq!(d.get("b", "k"), None);
        assert_eq!(d.get("a", "k").unwrap().0, b"a");
        assert_eq!(d.keys("a"), vec!["k".to_string()]);
        assert!(d.keys("b").is_empty());
    }

    #[test]
    fn cas_never_zero_after_wrap() {
        let mut d = SharedData {
            next_cas: u32::MAX,
            ..SharedData::default()
        };
        d.set("vm", "a", vec![], 0).unwrap();
        d.set("vm", "b", vec![], 0).unwrap();
        assert_eq!(d.get("vm", "a").unwrap().1, u32::MAX);
        assert_eq!(d.get("vm", "b").unwrap().1, 1);
    }
}
