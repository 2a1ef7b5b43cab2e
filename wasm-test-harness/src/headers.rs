//! Header maps as Envoy keeps them: ordered, duplicate keys allowed, keys
//! lowercased on insert, values raw bytes (which may be non-UTF-8).

use std::fmt;

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    pairs: Vec<(String, Vec<u8>)>,
}

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    /// From `(name, value)` string pairs; names are lowercased as Envoy does.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> Self {
        let mut h = Self::new();
        for (k, v) in pairs {
            h.add(k.as_ref(), v.as_ref().as_bytes());
        }
        h
    }

    /// From raw byte pairs (non-UTF-8 values allowed).
    pub fn from_bytes<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(K, V)]) -> Self {
        let mut h = Self::new();
        for (k, v) in pairs {
            h.add(&String::from_utf8_lossy(k.as_ref()), v.as_ref());
        }
        h
    }

    /// First value of `name`, as UTF-8 (lossy).
    pub fn get(&self, name: &str) -> Option<String> {
        self.get_bytes(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        let name = name.to_ascii_lowercase();
        self.pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        self.pairs
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get_bytes(name).is_some()
    }

    /// Appends (Envoy `addCopy`); pseudo-headers stay ahead of regular ones.
    pub fn add(&mut self, name: &str, value: &[u8]) {
        let name = name.to_ascii_lowercase();
        if name.starts_with(':') {
            let at = self
                .pairs
                .iter()
                .take_while(|(k, _)| k.starts_with(':'))
                .count();
            self.pairs.insert(at, (name, value.to_vec()));
        } else {
            self.pairs.push((name, value.to_vec()));
        }
    }

    /// Removes every value of `name`.
    pub fn remove(&mut self, name: &str) {
        let name = name.to_ascii_lowercase();
        self.pairs.retain(|(k, _)| *k != name);
    }

    /// Envoy `setCopy`: every existing value is removed and the new one is
    /// appended (verified against Envoy 1.40 in
    /// tests/tests/envoy_vs_harness.rs: the header moves to the end).
    pub fn replace(&mut self, name: &str, value: &[u8]) {
        self.remove(name);
        self.add(name, value);
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// All pairs in order, values lossily decoded.
    pub fn pairs(&self) -> Vec<(String, String)> {
        self.pairs
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    pub fn raw_pairs(&self) -> &[(String, Vec<u8>)] {
        &self.pairs
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        crate::abi::encode_pairs(&self.pairs)
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.pairs()).finish()
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> From<[(K, V); N]> for Headers {
    fn from(pairs: [(K, V); N]) -> Self {
        Headers::from_pairs(&pairs)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> From<&[(K, V)]> for Headers {
    fn from(pairs: &[(K, V)]) -> Self {
        Headers::from_pairs(pairs)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> From<Vec<(K, V)>> for Headers {
    fn from(pairs: Vec<(K, V)>) -> Self {
        Headers::from_pairs(&pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_semantics() {
        let mut h = Headers::from_pairs(&[("X-A", "1"), ("b", "2"), ("x-a", "3")]);
        assert_eq!(h.get("x-a").as_deref(), Some("1"));
        assert_eq!(h.get_all("X-A"), vec!["1", "3"]);
        h.replace("x-a", b"9");
        assert_eq!(
            h.pairs(),
            vec![("b".into(), "2".into()), ("x-a".into(), "9".into())]
        );
        h.add("B", b"4");
        h.remove("b");
        assert_eq!(h.len(), 1);
        h.add(":path", b"/");
        assert_eq!(h.pairs()[0].0, ":path");
        h.replace("new", b"v");
        assert_eq!(h.get("new").as_deref(), Some("v"));
    }
}
