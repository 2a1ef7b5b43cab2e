//! `get_property` lookup: values the test set (per stream, then per VM),
//! then values derived from the stream the way Envoy derives them
//! (`request.path`, `request.headers`, `response.code`, `plugin_name`…),
//! then filter state the guest wrote with `set_property` — which Envoy
//! finds only through a single top-level path segment.

use std::collections::HashMap;

use super::stream::StreamState;
use crate::headers::Headers;
use crate::property as enc;

/// What a property lookup can see from the calling context.
pub(crate) struct Scope<'a> {
    pub stream: Option<&'a StreamState>,
    pub vm_properties: &'a HashMap<Vec<u8>, Vec<u8>>,
    pub plugin_name: &'a str,
    pub root_id: &'a str,
    pub vm_id: &'a str,
}

pub(crate) fn lookup(h: &Scope<'_>, path: &[u8]) -> Option<Vec<u8>> {
    if let Some(v) = h.stream.and_then(|s| s.properties.get(path)) {
        return Some(v.clone());
    }
    if let Some(v) = h.vm_properties.get(path) {
        return Some(v.clone());
    }
    let segments: Vec<&[u8]> = path.split(|b| *b == 0).collect();
    let text: Vec<String> = segments
        .iter()
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    let parts: Vec<&str> = text.iter().map(String::as_str).collect();
    match parts.as_slice() {
        ["plugin_name"] => return Some(enc::string(h.plugin_name)),
        ["plugin_root_id"] => return Some(enc::string(h.root_id)),
        ["plugin_vm_id"] => return Some(enc::string(h.vm_id)),
        _ => {}
    }
    let s = h.stream?;
    let derived = derive(
        s.request_headers.as_ref(),
        s.response_headers.as_ref(),
        s.local_response
            .as_ref()
            .map(|l| (l.status, l.details.clone())),
        &parts,
    );
    if derived.is_some() {
        return derived;
    }
    if segments.len() == 1 {
        return s.filter_state.get(path).cloned();
    }
    None
}

fn joined_map(h: &Headers) -> Vec<(String, String)> {
    // Envoy joins repeated header values with "," in property maps.
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in h.pairs() {
        match out.iter_mut().find(|(ek, _)| *ek == k) {
            Some((_, ev)) => {
                ev.push(',');
                ev.push_str(&v);
            }
            None => out.push((k, v)),
        }
    }
    out
}

fn derive(
    req: Option<&Headers>,
    resp: Option<&Headers>,
    local: Option<(u32, String)>,
    parts: &[&str],
) -> Option<Vec<u8>> {
    let header =
        |m: Option<&Headers>, name: &str| m.and_then(|h| h.get(name)).map(|v| enc::string(&v));
    match parts {
        ["request", "path"] => header(req, ":path"),
        ["request", "url_path"] => req
            .and_then(|h| h.get(":path"))
            .map(|p| enc::string(p.split(['?', '#']).next().unwrap_or_default())),
        ["request", "query"] => req
            .and_then(|h| h.get(":path"))
            .map(|p| enc::string(p.split_once('?').map(|(_, q)| q).unwrap_or_default())),
        ["request", "host"] => header(req, ":authority"),
        ["request", "method"] => header(req, ":method"),
        ["request", "scheme"] => header(req, ":scheme"),
        ["request", "id"] => header(req, "x-request-id"),
        ["request", "useragent"] => header(req, "user-agent"),
        ["request", "referer"] => header(req, "referer"),
        ["request", "headers"] => req.map(|h| enc::map(&joined_map(h))),
        ["request", "headers", name] => req
            .and_then(|h| joined_map(h).into_iter().find(|(k, _)| k == name))
            .map(|(_, v)| enc::string(&v)),
        ["response", "code"] => resp
            .and_then(|h| h.get(":status"))
            .and_then(|s| s.parse::<i64>().ok())
            .or(local.as_ref().map(|(s, _)| i64::from(*s)))
            .map(enc::int),
        ["response", "code_details"] => local.map(|(_, d)| enc::string(&d)),
        ["response", "headers"] => resp.map(|h| enc::map(&joined_map(h))),
        ["response", "headers", name] => resp
            .and_then(|h| joined_map(h).into_iter().find(|(k, _)| k == name))
            .map(|(_, v)| enc::string(&v)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::Action;

    fn get(
        stream: Option<&StreamState>,
        vm: &HashMap<Vec<u8>, Vec<u8>>,
        path: &[&str],
    ) -> Option<Vec<u8>> {
        let scope = Scope {
            stream,
            vm_properties: vm,
            plugin_name: "p",
            root_id: "r",
            vm_id: "v",
        };
        lookup(&scope, &enc::path(path))
    }

    #[test]
    fn test_values_then_derived_then_filter_state() {
        let mut vm = HashMap::new();
        vm.insert(enc::path(&["node", "id"]), b"n1".to_vec());
        assert_eq!(get(None, &vm, &["node", "id"]), Some(b"n1".to_vec()));
        assert_eq!(get(None, &vm, &["plugin_root_id"]), Some(b"r".to_vec()));
        assert_eq!(get(None, &vm, &["request", "path"]), None);

        let mut s = StreamState::default();
        s.begin_request_headers(Headers::from([
            (":path", "/a/b?q=1"),
            ("x-d", "1"),
            ("x-d", "2"),
        ]));
        s.end_request_headers(Action::Continue, 0);
        s.properties
            .insert(enc::path(&["node", "id"]), b"stream".to_vec());
        s.filter_state.insert(b"mine".to_vec(), b"x".to_vec());
        s.filter_state.insert(enc::path(&["a", "b"]), b"y".to_vec());
        let s = Some(&s);
        assert_eq!(get(s, &vm, &["node", "id"]), Some(b"stream".to_vec()));
        assert_eq!(
            get(s, &vm, &["request", "url_path"]),
            Some(b"/a/b".to_vec())
        );
        assert_eq!(get(s, &vm, &["request", "query"]), Some(b"q=1".to_vec()));
        assert_eq!(
            get(s, &vm, &["request", "headers", "x-d"]),
            Some(b"1,2".to_vec())
        );
        assert_eq!(get(s, &vm, &["response", "code"]), None);
        assert_eq!(get(s, &vm, &["mine"]), Some(b"x".to_vec()));
        // Envoy finds filter state only through one top-level segment.
        assert_eq!(get(s, &vm, &["a", "b"]), None);
    }
}
