//! Header names and values handed from stages to the shell without copying
//! what the configuration already holds.

use std::fmt;
use std::rc::Rc;

/// A header name or value: a literal, a string shared with the compiled
/// config (cloning is a reference-count bump, no allocation), or bytes built
/// for this request. Values may hold any byte a header can (obs-text);
/// names are always text.
#[derive(Clone, PartialEq, Eq)]
pub enum Text {
    Static(&'static str),
    Shared(Rc<str>),
    /// A `Vec`, not a boxed slice: converting a `String` or `Vec` would
    /// otherwise shrink (reallocate) it, on per-request paths.
    Owned(Vec<u8>),
}

impl Text {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Text::Static(s) => s.as_bytes(),
            Text::Shared(s) => s.as_bytes(),
            Text::Owned(b) => b,
        }
    }

    /// The text, if it is UTF-8 (names always are; values usually).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Text::Static(s) => Some(s),
            Text::Shared(s) => Some(s),
            Text::Owned(b) => std::str::from_utf8(b).ok(),
        }
    }

    /// Case-insensitive comparison with a header name.
    pub fn is_name(&self, name: &[u8]) -> bool {
        self.as_bytes().eq_ignore_ascii_case(name)
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Self {
        Text::Static(s)
    }
}
impl From<Rc<str>> for Text {
    fn from(s: Rc<str>) -> Self {
        Text::Shared(s)
    }
}
impl From<&Rc<str>> for Text {
    fn from(s: &Rc<str>) -> Self {
        Text::Shared(Rc::clone(s))
    }
}
impl From<String> for Text {
    fn from(s: String) -> Self {
        Text::Owned(s.into_bytes())
    }
}
impl From<Vec<u8>> for Text {
    fn from(b: Vec<u8>) -> Self {
        Text::Owned(b)
    }
}
