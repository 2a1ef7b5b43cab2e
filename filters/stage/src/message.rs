//! A request or response as a stage sees it: the headers read in place
//! (Envoy's pairs buffer, never copied per header) overlaid with the edits
//! earlier stages made, plus the body when a stage asked for it. Stages never
//! write to the proxy: they record [`Edits`], and the shell applies them
//! once, in as few host calls as the final result needs.

use meshguard_common::headers::{HeaderSource, PairsView};

use crate::text::Text;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Drop every value, then set this one (Envoy's replace).
    Set,
    /// Append a value, keeping the others.
    Add,
    /// Drop every value.
    Remove,
}

#[derive(Debug, Clone)]
struct Edit {
    op: Op,
    name: Text,
    value: Option<Text>,
}

/// Header edits recorded by stages, in order.
#[derive(Debug, Clone, Default)]
pub struct Edits {
    list: Vec<Edit>,
    refused: u32,
}

/// RFC 9110 `tchar`, lowercase or not.
fn is_tchar(b: u8) -> bool {
    matches!(b, b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'!' | b'#'..=b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// A header value Envoy can send on as is: no CR, LF or NUL.
pub fn valid_value(v: &[u8]) -> bool {
    !v.iter().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// A header name meshguard may set: a non-empty token.
pub fn valid_name(n: &[u8]) -> bool {
    !n.is_empty() && n.iter().all(|b| is_tchar(*b))
}

/// One host call the shell makes to apply [`Edits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEdit<'e> {
    /// Remove every value of `name`, then add `value`.
    Replace(&'e Text, &'e Text),
    Add(&'e Text, &'e Text),
    Remove(&'e Text),
}

impl Edits {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn clear(&mut self) {
        self.list.clear();
    }

    fn push(&mut self, op: Op, name: Text, value: Option<Text>) {
        // A header value from hostile input (a token claim, an auth
        // service's answer) must never split the request upstream. Literals
        // and config strings (`Static`, `Shared`) were checked when the
        // config was; only bytes built per request are checked here.
        let name_ok = !matches!(name, Text::Owned(_)) || valid_name(name.as_bytes());
        let value_ok = match &value {
            Some(v @ Text::Owned(_)) => valid_value(v.as_bytes()),
            _ => true,
        };
        if !(name_ok && value_ok) {
            self.refused += 1;
            log::debug!(
                "meshguard: refused header edit {name:?}: invalid name or CR/LF/NUL in value"
            );
            return;
        }
        self.list.push(Edit { op, name, value });
    }

    /// Edits refused since the last [`Edits::take_refused`] (invalid name,
    /// CR/LF/NUL in a value).
    pub fn take_refused(&mut self) -> u32 {
        std::mem::take(&mut self.refused)
    }

    /// Whether any edit concerns `name`.
    fn touches(&self, name: &[u8]) -> bool {
        self.list.iter().any(|e| e.name.is_name(name))
    }

    /// Whether `name` was set or removed, so the original values are gone.
    fn overrides(&self, name: &[u8]) -> bool {
        self.list
            .iter()
            .any(|e| e.op != Op::Add && e.name.is_name(name))
    }

    /// Whether edit `i` contributes a value to the final map.
    fn live(&self, i: usize) -> bool {
        self.list.get(i).is_some_and(|e| e.op != Op::Remove) && !self.superseded(i)
    }

    /// The values the edits contribute to the final map, in order.
    fn live_values(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.list.iter().enumerate().filter_map(|(i, e)| {
            let value = e.value.as_ref()?;
            self.live(i).then(|| (e.name.as_bytes(), value.as_bytes()))
        })
    }

    /// The host calls that apply the edits, in order: each edit not undone
    /// by a later set/remove of the same name. A set is always a replace
    /// (on an absent header Envoy's replace is an add), so the plan needs no
    /// look at the original map and costs a few instructions per edit.
    pub fn plan(&self, mut emit: impl FnMut(HostEdit<'_>)) {
        for (i, e) in self.list.iter().enumerate() {
            if self.superseded(i) {
                continue;
            }
            match (&e.op, &e.value) {
                (Op::Set, Some(v)) => emit(HostEdit::Replace(&e.name, v)),
                (Op::Add, Some(v)) => emit(HostEdit::Add(&e.name, v)),
                (Op::Remove, _) => emit(HostEdit::Remove(&e.name)),
                _ => {}
            }
        }
    }

    /// Whether a later set/remove of the same name undoes edit `i`.
    fn superseded(&self, i: usize) -> bool {
        let Some(edit) = self.list.get(i) else {
            return true;
        };
        self.list
            .iter()
            .skip(i + 1)
            .any(|later| later.op != Op::Add && later.name.is_name(edit.name.as_bytes()))
    }

    /// Applies the edits to a plain header list, the way the shell applies
    /// them to the proxy's map. For native tests and tools.
    pub fn apply_to(&self, headers: &mut Vec<(String, Vec<u8>)>) {
        for e in &self.list {
            let name = String::from_utf8_lossy(e.name.as_bytes()).to_ascii_lowercase();
            if e.op != Op::Add {
                headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&name));
            }
            if let Some(v) = &e.value {
                headers.push((name, v.as_bytes().to_vec()));
            }
        }
    }
}

/// Headers (and body) of one direction of a stream, with the edits so far.
/// Reads see earlier edits: a later stage reads what an earlier one set.
pub struct Message<'a> {
    original: &'a PairsView<'a>,
    edits: &'a mut Edits,
    body: Option<&'a [u8]>,
    end_of_stream: bool,
}

/// The request as a stage sees it.
pub type Request<'a> = Message<'a>;
/// The response as a stage sees it.
pub type Response<'a> = Message<'a>;

impl<'a> Message<'a> {
    pub fn new(original: &'a PairsView<'a>, edits: &'a mut Edits) -> Self {
        Self {
            original,
            edits,
            body: None,
            end_of_stream: false,
        }
    }

    pub fn with_body(mut self, body: Option<&'a [u8]>, end_of_stream: bool) -> Self {
        self.body = body;
        self.end_of_stream = end_of_stream;
        self
    }

    /// First value of `name` (case-insensitive), after earlier edits.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.first(name)
    }

    /// The buffered body, when this hook was given one.
    pub fn body(&self) -> Option<&[u8]> {
        self.body
    }

    /// Whether the whole message has been seen (no more body follows).
    pub fn end_of_stream(&self) -> bool {
        self.end_of_stream
    }

    /// The headers as the proxy holds them, without this chain's edits.
    pub fn original(&self) -> &PairsView<'a> {
        self.original
    }

    /// Replaces every value of `name` with `value`.
    pub fn set(&mut self, name: impl Into<Text>, value: impl Into<Text>) {
        self.edits.push(Op::Set, name.into(), Some(value.into()));
    }

    /// Appends a value, keeping existing ones.
    pub fn add(&mut self, name: impl Into<Text>, value: impl Into<Text>) {
        self.edits.push(Op::Add, name.into(), Some(value.into()));
    }

    /// Removes every value of `name`.
    pub fn remove(&mut self, name: impl Into<Text>) {
        self.edits.push(Op::Remove, name.into(), None);
    }
}

impl HeaderSource for Message<'_> {
    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        let edits = &*self.edits;
        let untouched = edits.list.is_empty();
        self.original
            .iter()
            .filter(move |(k, _)| untouched || !edits.overrides(k))
            .chain(edits.live_values())
    }

    fn first_many<'s, N: AsRef<str>>(&'s self, names: &[N], out: &mut [Option<&'s [u8]>]) {
        // One pass over the buffer; then only the names an edit touched
        // are looked up again through the overlay.
        self.original.first_many(names, out);
        if self.edits.list.is_empty() {
            return;
        }
        for (name, slot) in names.iter().zip(out.iter_mut()) {
            let name = name.as_ref();
            if self.edits.touches(name.as_bytes()) {
                *slot = self.first(name);
            }
        }
    }

    fn first(&self, name: &str) -> Option<&[u8]> {
        // Fast path: no edit touched this name, one scan of the buffer.
        if !self.edits.touches(name.as_bytes()) {
            return self.original.first(name);
        }
        self.pairs()
            .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(pairs: &[(&str, &str)]) -> Vec<u8> {
        meshguard_common::headers::encode_pairs(pairs)
    }

    fn plan_strings(edits: &Edits) -> Vec<String> {
        let mut out = Vec::new();
        edits.plan(|e| {
            out.push(match e {
                HostEdit::Replace(n, v) => format!("replace {n:?}={v:?}"),
                HostEdit::Add(n, v) => format!("add {n:?}={v:?}"),
                HostEdit::Remove(n) => format!("remove {n:?}"),
            })
        });
        out
    }

    #[test]
    fn reads_see_earlier_edits() {
        let buf = encode(&[("a", "1"), ("b", "2"), ("b", "3")]);
        let view = PairsView::parse(&buf).unwrap();
        let mut edits = Edits::default();
        let mut m = Message::new(&view, &mut edits);
        assert_eq!(m.header("A"), Some(b"1".as_slice()));
        m.set("a", "x");
        m.remove("b");
        m.add("c", "4");
        m.add("a", "y");
        assert_eq!(m.header("a"), Some(b"x".as_slice()));
        assert_eq!(m.header("b"), None);
        assert_eq!(m.header("c"), Some(b"4".as_slice()));
        let all: Vec<_> = m.pairs().collect();
        assert_eq!(
            all,
            vec![
                (b"a".as_slice(), b"x".as_slice()),
                (b"c".as_slice(), b"4".as_slice()),
                (b"a".as_slice(), b"y".as_slice())
            ]
        );
        m.remove("a");
        assert_eq!(m.header("a"), None);
        m.add("b", "5");
        assert_eq!(m.header("b"), Some(b"5".as_slice()));
    }

    #[test]
    fn plan_drops_undone_edits() {
        let buf = encode(&[("present", "1"), ("gone", "2")]);
        let view = PairsView::parse(&buf).unwrap();
        let mut edits = Edits::default();
        {
            let mut m = Message::new(&view, &mut edits);
            m.set("present", "new");
            m.add("early", "x");
            m.remove("gone");
            m.add("multi", "1");
            m.add("multi", "2");
            m.set("twice", "a");
            m.set("twice", "b"); // only the last set survives
            m.set("early", "y"); // undoes the add
            m.remove("dropped");
            m.add("dropped", "back");
        }
        assert_eq!(
            plan_strings(&edits),
            vec![
                "replace \"present\"=\"new\"",
                "remove \"gone\"",
                "add \"multi\"=\"1\"",
                "add \"multi\"=\"2\"",
                "replace \"twice\"=\"b\"",
                "replace \"early\"=\"y\"",
                "remove \"dropped\"",
                "add \"dropped\"=\"back\"",
            ]
        );
    }

    /// The plan, applied in order, gives what `apply_to` gives.
    #[test]
    fn plan_and_apply_to_agree() {
        let buf = encode(&[("a", "1"), ("b", "2"), ("b", "3")]);
        let view = PairsView::parse(&buf).unwrap();
        let scripts: &[&[(&str, &str, &str)]] = &[
            &[("set", "a", "x"), ("add", "a", "y"), ("remove", "b", "")],
            &[("add", "b", "4"), ("set", "b", "5"), ("add", "c", "6")],
            &[
                ("remove", "a", ""),
                ("add", "a", "7"),
                ("set", "c", "8"),
                ("remove", "c", ""),
            ],
        ];
        for script in scripts {
            let mut edits = Edits::default();
            {
                let mut m = Message::new(&view, &mut edits);
                for (op, n, v) in *script {
                    match *op {
                        "set" => m.set(n.to_string(), v.to_string()),
                        "add" => m.add(n.to_string(), v.to_string()),
                        _ => m.remove(n.to_string()),
                    }
                }
            }
            let start = vec![
                ("a".to_string(), b"1".to_vec()),
                ("b".to_string(), b"2".to_vec()),
                ("b".to_string(), b"3".to_vec()),
            ];
            let mut expected = start.clone();
            edits.apply_to(&mut expected);
            let mut planned = start;
            edits.plan(|e| match e {
                HostEdit::Replace(n, v) => {
                    let n = String::from_utf8_lossy(n.as_bytes()).into_owned();
                    planned.retain(|(k, _)| *k != n);
                    planned.push((n, v.as_bytes().to_vec()));
                }
                HostEdit::Add(n, v) => planned.push((
                    String::from_utf8_lossy(n.as_bytes()).into_owned(),
                    v.as_bytes().to_vec(),
                )),
                HostEdit::Remove(n) => {
                    let n = String::from_utf8_lossy(n.as_bytes()).into_owned();
                    planned.retain(|(k, _)| *k != n);
                }
            });
            assert_eq!(planned, expected, "{script:?}");
        }
    }

    #[test]
    fn header_injection_is_refused() {
        let buf = encode(&[]);
        let view = PairsView::parse(&buf).unwrap();
        let mut edits = Edits::default();
        {
            let mut m = Message::new(&view, &mut edits);
            m.set("x-user", "alice\r\nx-admin: true".to_string());
            m.set("x-user", b"a\0b".to_vec());
            m.add("bad name".to_string(), "v");
            m.add(":path".to_string(), "/x");
            m.remove(String::new());
            m.set("x-ok", "fine \u{e9}".to_string());
        }
        assert_eq!(
            plan_strings(&edits),
            vec!["replace \"x-ok\"=\"fine \u{e9}\""]
        );
        assert_eq!(edits.take_refused(), 5);
        assert_eq!(edits.take_refused(), 0);
    }

    #[test]
    fn apply_to_matches_the_plan() {
        let mut edits = Edits::default();
        let buf = encode(&[("x", "1")]);
        let view = PairsView::parse(&buf).unwrap();
        {
            let mut m = Message::new(&view, &mut edits);
            m.set("X", "2");
            m.add("y", "3");
        }
        let mut list = vec![("x".to_string(), b"1".to_vec())];
        edits.apply_to(&mut list);
        assert_eq!(
            list,
            vec![
                ("x".to_string(), b"2".to_vec()),
                ("y".to_string(), b"3".to_vec())
            ]
        );
    }
}
