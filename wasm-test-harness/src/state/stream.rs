//! One HTTP stream as Envoy's filter manager sees it, and the rules for
//! what the filter may touch when: request headers only while
//! `on_request_headers` runs or the request is paused, trailers only in
//! their callback, every map readable but none writable in `on_log`,
//! bodies buffered while the filter pauses, data arriving while headers
//! are paused parked until the filter continues.

use std::collections::HashMap;

use super::local_reply::LocalResponse;
use crate::abi::{buffer_type, map_type, stream_type, Action, Status};
use crate::headers::Headers;

/// Which maps and buffers Envoy exposes to the filter right now.
#[derive(Default, Clone, Copy)]
pub(crate) struct Live {
    pub request_headers: bool,
    pub request_trailers: bool,
    pub request_body: bool,
    pub response_headers: bool,
    pub response_trailers: bool,
    pub response_body: bool,
    /// `on_log`: every map readable, none writable.
    pub in_log: bool,
}

/// One direction's body: what the filter sees, what it let through, and
/// what arrived while its headers were paused.
#[derive(Default)]
pub(crate) struct Body {
    /// Bytes the filter currently sees (buffered while it pauses).
    pub buffered: Vec<u8>,
    pub forwarded: Vec<u8>,
    /// Arrived while headers were paused: Envoy delivers it once the
    /// filter continues.
    pub parked: Vec<u8>,
    /// The end of stream arrived with (or after) the parked data.
    pub parked_end: bool,
}

#[derive(Default)]
pub(crate) struct StreamState {
    pub live: Live,
    /// The filter returned Pause and has not resumed yet.
    pub request_paused: bool,
    pub response_paused: bool,
    pub request_body: Body,
    pub response_body: Body,
    /// Values the guest stored with `set_property` (Envoy filter state).
    pub filter_state: HashMap<Vec<u8>, Vec<u8>>,
    /// Times the request headers were modified (each clears Envoy's route cache).
    pub request_header_mutations: u32,
    /// Response headers reached the filter (from upstream or a local reply).
    pub response_started: bool,
    pub request_headers: Option<Headers>,
    pub request_trailers: Option<Headers>,
    pub response_headers: Option<Headers>,
    pub response_trailers: Option<Headers>,
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    pub local_response: Option<LocalResponse>,
    pub local_responses: u32,
    pub request_resumed: u32,
    pub response_resumed: u32,
    pub closed: bool,
}

impl StreamState {
    /// A stream header map (`map_type` 0–3), if the filter may use it now;
    /// `write` asks for mutation.
    pub fn map(&mut self, t: i32, write: bool) -> Result<&mut Headers, Status> {
        let (live, map) = match t {
            map_type::REQUEST_HEADERS => (self.live.request_headers, &mut self.request_headers),
            map_type::REQUEST_TRAILERS => (self.live.request_trailers, &mut self.request_trailers),
            map_type::RESPONSE_HEADERS => (self.live.response_headers, &mut self.response_headers),
            map_type::RESPONSE_TRAILERS => {
                (self.live.response_trailers, &mut self.response_trailers)
            }
            _ => return Err(Status::BadArgument),
        };
        if self.live.in_log {
            if write {
                return Err(Status::BadArgument);
            }
            return map.as_mut().ok_or(Status::NotFound);
        }
        if !live {
            return Err(Status::BadArgument);
        }
        Ok(map.get_or_insert_with(Headers::new))
    }

    pub fn note_mutation(&mut self, t: i32) {
        if t == map_type::REQUEST_HEADERS {
            self.request_header_mutations += 1;
        }
    }

    fn body_of(&mut self, t: i32) -> Option<(&mut Body, bool)> {
        match t {
            buffer_type::HTTP_REQUEST_BODY => {
                Some((&mut self.request_body, self.live.request_body))
            }
            buffer_type::HTTP_RESPONSE_BODY => {
                Some((&mut self.response_body, self.live.response_body))
            }
            _ => None,
        }
    }

    /// The body the filter sees (readable any time, as in Envoy's buffer).
    pub fn body(&self, request: bool) -> &[u8] {
        if request {
            &self.request_body.buffered
        } else {
            &self.response_body.buffered
        }
    }

    /// Envoy `Buffer::copyFrom` rules: start 0 drains `size` then prepends;
    /// start at/after the end appends; anything else is refused. Only
    /// while the body callback runs.
    pub fn set_body(
        &mut self,
        t: i32,
        start: usize,
        size: usize,
        data: &[u8],
    ) -> Result<(), Status> {
        let (body, live) = self.body_of(t).ok_or(Status::BadArgument)?;
        if !live {
            return Err(Status::NotFound);
        }
        let buf = &mut body.buffered;
        if start == 0 {
            buf.drain(..size.min(buf.len()));
            buf.splice(0..0, data.iter().copied());
        } else if start >= buf.len() {
            buf.extend_from_slice(data);
        } else {
            return Err(Status::BadArgument);
        }
        Ok(())
    }

    /// `proxy_continue_stream`: the direction resumes; its headers and
    /// trailers are no longer exposed. Returns true when body data waits
    /// to be delivered (the VM does that once the current call returns).
    pub fn continue_stream(&mut self, t: i32) -> Result<bool, Status> {
        let body = match t {
            stream_type::HTTP_REQUEST => {
                self.request_resumed += 1;
                self.live.request_headers = false;
                self.live.request_trailers = false;
                self.request_paused = false;
                &self.request_body
            }
            stream_type::HTTP_RESPONSE => {
                self.response_resumed += 1;
                self.live.response_headers = false;
                self.live.response_trailers = false;
                self.response_paused = false;
                &self.response_body
            }
            // No network filter callbacks in an HTTP context.
            stream_type::DOWNSTREAM => return Err(Status::BadArgument),
            stream_type::UPSTREAM => return Err(Status::Unimplemented),
            _ => return Err(Status::BadArgument),
        };
        Ok(!body.parked.is_empty() || body.parked_end)
    }

    /// Connection-level close needs network filter callbacks, which an
    /// HTTP context does not have (the SDK's close_downstream() therefore
    /// panics in Envoy).
    pub fn close_stream(&mut self, t: i32) -> Result<(), Status> {
        match t {
            stream_type::HTTP_REQUEST | stream_type::HTTP_RESPONSE => {
                self.closed = true;
                Ok(())
            }
            _ => Err(Status::BadArgument),
        }
    }

    /// Only the first local reply counts (Envoy ignores later ones);
    /// returns true if this one is to be sent.
    pub fn record_local_response(&mut self, reply: LocalResponse) -> bool {
        self.local_responses += 1;
        if self.local_response.is_some() {
            return false;
        }
        self.local_response = Some(reply);
        true
    }

    // ---- driver side: what happens around each callback ------------------

    pub fn begin_request_headers(&mut self, headers: Headers) {
        self.request_headers = Some(headers);
        self.live.request_headers = true;
    }

    /// Paused unless the filter continued, answered locally, or resumed
    /// from inside the callback (`resumed_before` = count at the start).
    pub fn end_request_headers(&mut self, action: Action, resumed_before: u32) {
        let continues = matches!(action, Action::Continue | Action::ContinueAndEndStream);
        if continues || self.local_response.is_some() || self.request_resumed != resumed_before {
            self.live.request_headers = false;
            self.request_paused = false;
        } else {
            self.request_paused = true;
        }
    }

    pub fn begin_response_headers(&mut self, headers: Headers) {
        self.response_started = true;
        self.response_headers = Some(headers);
        self.live.response_headers = true;
    }

    pub fn end_response_headers(&mut self, action: Action) {
        if matches!(action, Action::Continue | Action::ContinueAndEndStream) {
            self.live.response_headers = false;
            self.response_paused = false;
        } else {
            self.response_paused = true;
        }
    }

    /// A body chunk arrives. While headers are paused it is parked and the
    /// filter is not called (`None`); else it joins what the filter
    /// buffered and the callback sees the size returned.
    pub fn accept_body(&mut self, request: bool, chunk: &[u8], end: bool) -> Option<usize> {
        let paused = if request {
            self.request_paused
        } else {
            self.response_paused
        };
        let body = self.body_mut(request);
        body.parked.extend_from_slice(chunk);
        body.parked_end |= end;
        if paused {
            return None;
        }
        Some(self.unpark(request))
    }

    /// Moves parked data into the filter's view and opens the buffer;
    /// returns the size the callback is told.
    pub fn unpark(&mut self, request: bool) -> usize {
        let body = self.body_mut(request);
        let parked = std::mem::take(&mut body.parked);
        body.parked_end = false;
        body.buffered.extend_from_slice(&parked);
        let size = body.buffered.len();
        self.set_body_live(request, true);
        size
    }

    /// After the body callback: Continue (or a local reply) forwards what
    /// the filter holds; Pause keeps buffering (StopIterationAndBuffer).
    pub fn end_body(&mut self, request: bool, action: Action) {
        self.set_body_live(request, false);
        if action != Action::Continue && self.local_response.is_none() {
            return;
        }
        let body = self.body_mut(request);
        let data = std::mem::take(&mut body.buffered);
        body.forwarded.extend_from_slice(&data);
    }

    fn body_mut(&mut self, request: bool) -> &mut Body {
        if request {
            &mut self.request_body
        } else {
            &mut self.response_body
        }
    }

    fn set_body_live(&mut self, request: bool, live: bool) {
        if request {
            self.live.request_body = live;
        } else {
            self.live.response_body = live;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_headers_only_while_running_or_paused() {
        let mut s = StreamState::default();
        assert_eq!(
            s.map(map_type::REQUEST_HEADERS, false).err(),
            Some(Status::BadArgument)
        );
        s.begin_request_headers(Headers::from([("a", "1")]));
        s.map(map_type::REQUEST_HEADERS, true)
            .unwrap()
            .add("b", b"2");
        s.end_request_headers(Action::Pause, 0);
        assert!(s.request_paused);
        // Paused: still mutable (e.g. from a callout response).
        assert!(s.map(map_type::REQUEST_HEADERS, true).is_ok());
        assert_eq!(s.continue_stream(stream_type::HTTP_REQUEST), Ok(false));
        assert_eq!(
            s.map(map_type::REQUEST_HEADERS, false).err(),
            Some(Status::BadArgument)
        );
        // Response headers never arrived.
        assert_eq!(
            s.map(map_type::RESPONSE_HEADERS, false).err(),
            Some(Status::BadArgument)
        );
        assert_eq!(s.map(9, false).err(), Some(Status::BadArgument));
    }

    #[test]
    fn resumed_inside_the_callback_is_not_paused() {
        let mut s = StreamState::default();
        s.begin_request_headers(Headers::new());
        s.continue_stream(stream_type::HTTP_REQUEST).unwrap();
        s.end_request_headers(Action::Pause, 0);
        assert!(!s.request_paused);
    }

    #[test]
    fn on_log_reads_but_never_writes() {
        let mut s = StreamState::default();
        s.begin_request_headers(Headers::from([("a", "1")]));
        s.end_request_headers(Action::Continue, 0);
        s.live.in_log = true;
        assert!(s.map(map_type::REQUEST_HEADERS, false).is_ok());
        assert_eq!(
            s.map(map_type::REQUEST_HEADERS, true).err(),
            Some(Status::BadArgument)
        );
        assert_eq!(
            s.map(map_type::RESPONSE_TRAILERS, false).err(),
            Some(Status::NotFound)
        );
    }

    #[test]
    fn body_rewrite_rules() {
        let mut s = StreamState::default();
        let t = buffer_type::HTTP_REQUEST_BODY;
        assert_eq!(s.set_body(t, 0, 0, b"x"), Err(Status::NotFound));
        assert_eq!(s.accept_body(true, b"hello", false), Some(5));
        s.set_body(t, 0, 0, b">").unwrap();
        s.set_body(t, 99, 0, b"<").unwrap();
        assert_eq!(s.body(true), b">hello<");
        s.set_body(t, 0, 1, b"").unwrap();
        assert_eq!(s.body(true), b"hello<");
        assert_eq!(s.set_body(t, 2, 0, b"x"), Err(Status::BadArgument));
        assert_eq!(s.set_body(7, 0, 0, b"x"), Err(Status::BadArgument));
    }

    #[test]
    fn pause_buffers_continue_forwards() {
        let mut s = StreamState::default();
        assert_eq!(s.accept_body(true, b"ab", false), Some(2));
        s.end_body(true, Action::Pause);
        assert_eq!(s.accept_body(true, b"cd", true), Some(4));
        s.end_body(true, Action::Continue);
        assert_eq!(s.request_body.forwarded, b"abcd");
        assert!(s.request_body.buffered.is_empty());
    }

    #[test]
    fn data_while_headers_paused_is_parked_until_continue() {
        let mut s = StreamState::default();
        s.begin_request_headers(Headers::new());
        s.end_request_headers(Action::Pause, 0);
        assert_eq!(s.accept_body(true, b"early", true), None);
        assert!(s.request_body.buffered.is_empty());
        // Continue reports data to deliver, with the end of stream.
        assert_eq!(s.continue_stream(stream_type::HTTP_REQUEST), Ok(true));
        assert!(s.request_body.parked_end);
        assert_eq!(s.unpark(true), 5);
        assert!(s.live.request_body);
        s.end_body(true, Action::Continue);
        assert_eq!(s.request_body.forwarded, b"early");
    }

    #[test]
    fn only_the_first_local_reply_counts() {
        let mut s = StreamState::default();
        let reply = LocalResponse {
            status: 403,
            details: String::new(),
            headers: Headers::new(),
            body: vec![],
            grpc_status: None,
        };
        assert!(s.record_local_response(reply.clone()));
        assert!(!s.record_local_response(LocalResponse {
            status: 500,
            ..reply
        }));
        assert_eq!(s.local_responses, 2);
        assert_eq!(s.local_response.as_ref().map(|r| r.status), Some(403));
    }

    #[test]
    fn stream_control_errors() {
        let mut s = StreamState::default();
        assert_eq!(
            s.continue_stream(stream_type::DOWNSTREAM),
            Err(Status::BadArgument)
        );
        assert_eq!(
            s.continue_stream(stream_type::UPSTREAM),
            Err(Status::Unimplemented)
        );
        assert_eq!(
            s.close_stream(stream_type::DOWNSTREAM),
            Err(Status::BadArgument)
        );
        s.close_stream(stream_type::HTTP_RESPONSE).unwrap();
        assert!(s.closed);
    }
}
