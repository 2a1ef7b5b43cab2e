//! An HTTP stream handle: drive one request through the filter the way
//! Envoy's filter manager does, and inspect what the filter did.

use crate::abi::Action;
use crate::error::Error;
use crate::headers::Headers;
use crate::state::local_reply::LocalResponse;
use crate::state::stream::StreamState;
use crate::vm::{StreamCallback, Vm};

impl Vm {
    /// Creates an HTTP stream context (`proxy_on_context_create`).
    pub fn new_http(&mut self) -> Result<Http<'_>, Error> {
        let id = self.create_stream()?;
        Ok(Http::new(self, id))
    }

    /// Handle to an existing stream.
    pub fn http(&mut self, id: u32) -> Result<Http<'_>, Error> {
        if self.stream_state(id).is_none() {
            return Err(Error::Harness(format!("no HTTP stream {id}")));
        }
        Ok(Http::new(self, id))
    }
}

/// One HTTP stream context of a [`Vm`]. Borrowing the VM keeps the order of
/// events explicit; get it back later with [`Vm::http`] and the id.
pub struct Http<'v> {
    vm: &'v mut Vm,
    id: u32,
}

impl<'v> Http<'v> {
    pub(crate) fn new(vm: &'v mut Vm, id: u32) -> Self {
        Self { vm, id }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn vm(&mut self) -> &mut Vm {
        self.vm
    }

    fn state(&self) -> Result<&StreamState, Error> {
        self.vm
            .stream_state(self.id)
            .ok_or_else(|| Error::Harness(format!("HTTP stream {} was deleted", self.id)))
    }

    fn state_mut(&mut self) -> Result<&mut StreamState, Error> {
        let id = self.id;
        self.vm
            .stream_state_mut(id)
            .ok_or_else(|| Error::Harness(format!("HTTP stream {id} was deleted")))
    }

    /// Sets a property for this stream, e.g.
    /// `set_property(&["source", "address"], property::string("10.0.0.1:5000"))`.
    pub fn set_property(&mut self, path: &[&str], value: Vec<u8>) -> Result<&mut Self, Error> {
        self.state_mut()?
            .properties
            .insert(crate::property::path(path), value);
        Ok(self)
    }

    /// What `set_property` stored under this (raw, `\0`-joined) path.
    pub fn filter_state(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.state()
            .ok()?
            .filter_state
            .get(&crate::property::path(path))
            .cloned()
    }

    /// Request headers arrive: `on_request_headers`. While the filter keeps
    /// the request paused, its request headers stay mutable (e.g. from
    /// `on_http_call_response`); once it continues, Envoy no longer exposes them.
    pub fn request_headers(
        &mut self,
        headers: impl Into<Headers>,
        end_of_stream: bool,
    ) -> Result<Action, Error> {
        let headers = headers.into();
        let n = headers.len() as i32;
        let resumed_before = {
            let s = self.state_mut()?;
            s.begin_request_headers(headers);
            s.request_resumed
        };
        let action = self.vm.call_stream(
            StreamCallback::RequestHeaders,
            self.id,
            n,
            i32::from(end_of_stream),
        )?;
        self.state_mut()?
            .end_request_headers(action, resumed_before);
        Ok(action)
    }

    /// A request body chunk. While request headers are paused Envoy buffers
    /// the data without calling the filter (returns `Pause` here) and
    /// delivers it to `on_request_body` as soon as the filter continues.
    /// When `on_request_body` returns `Pause`, the next call sees the whole
    /// body so far (StopIterationAndBuffer).
    pub fn request_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Result<Action, Error> {
        self.body(true, chunk, end_of_stream)
    }

    pub fn response_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Result<Action, Error> {
        self.body(false, chunk, end_of_stream)
    }

    fn body(&mut self, request: bool, chunk: &[u8], end_of_stream: bool) -> Result<Action, Error> {
        let Some(size) = self.state_mut()?.accept_body(request, chunk, end_of_stream) else {
            return Ok(Action::Pause);
        };
        let which = if request {
            StreamCallback::RequestBody
        } else {
            StreamCallback::ResponseBody
        };
        let action = self
            .vm
            .call_stream(which, self.id, size as i32, i32::from(end_of_stream))?;
        self.state_mut()?.end_body(request, action);
        Ok(action)
    }

    pub fn request_trailers(&mut self, trailers: impl Into<Headers>) -> Result<Action, Error> {
        self.trailers(true, trailers.into())
    }

    /// Trailers are mutable only while their callback runs.
    fn trailers(&mut self, request: bool, t: Headers) -> Result<Action, Error> {
        let n = t.len() as i32;
        let set_live = |s: &mut StreamState, live: bool| {
            if request {
                s.live.request_trailers = live;
            } else {
                s.live.response_trailers = live;
            }
        };
        {
            let s = self.state_mut()?;
            if request {
                s.request_trailers = Some(t);
            } else {
                s.response_trailers = Some(t);
            }
            set_live(s, true);
        }
        let action = self.vm.call_trailers(request, self.id, n)?;
        set_live(self.state_mut()?, false);
        Ok(action)
    }

    /// Response headers arrive from the upstream: `on_response_headers`.
    pub fn response_headers(
        &mut self,
        headers: impl Into<Headers>,
        end_of_stream: bool,
    ) -> Result<Action, Error> {
        let headers = headers.into();
        let n = headers.len() as i32;
        self.state_mut()?.begin_response_headers(headers);
        let action = self.vm.call_stream(
            StreamCallback::ResponseHeaders,
            self.id,
            n,
            i32::from(end_of_stream),
        )?;
        self.state_mut()?.end_response_headers(action);
        Ok(action)
    }

    pub fn response_trailers(&mut self, trailers: impl Into<Headers>) -> Result<Action, Error> {
        self.trailers(false, trailers.into())
    }

    /// `on_log` (access-log phase: maps readable, not writable).
    pub fn log(&mut self) -> Result<(), Error> {
        self.state_mut()?.live.in_log = true;
        let r = self.vm.call_log(self.id);
        if let Ok(s) = self.state_mut() {
            s.live.in_log = false;
        }
        r
    }

    /// `on_done`; returns the guest's answer.
    pub fn done(&mut self) -> Result<bool, Error> {
        self.vm.call_done(self.id)
    }

    /// `on_delete`. The stream's state is dropped with it: inspect before.
    pub fn delete(&mut self) -> Result<(), Error> {
        self.vm.call_delete(self.id)
    }

    /// End of stream as Envoy does it: `on_log`, `on_done`, `on_delete`
    /// (after which the stream's state is gone).
    pub fn finish(&mut self) -> Result<(), Error> {
        self.log()?;
        self.done()?;
        self.delete()
    }

    /// A full simple exchange: request headers (no body), then — unless the
    /// filter answered locally or paused — a `200` response, then finish.
    /// Returns the request action.
    pub fn round_trip(&mut self, request: impl Into<Headers>) -> Result<Action, Error> {
        let action = self.request_headers(request, true)?;
        if action == Action::Continue && self.local_response().is_none() {
            self.response_headers(Headers::from_pairs(&[(":status", "200")]), true)?;
        }
        self.finish()?;
        Ok(action)
    }

    // ---- what happened ---------------------------------------------------------

    /// Request headers as they are now (what the upstream gets once the
    /// filter continues).
    pub fn request_headers_map(&self) -> Headers {
        self.state()
            .ok()
            .and_then(|s| s.request_headers.clone())
            .unwrap_or_default()
    }

    pub fn request_header(&self, name: &str) -> Option<String> {
        self.request_headers_map().get(name)
    }

    pub fn request_trailers_map(&self) -> Headers {
        self.state()
            .ok()
            .and_then(|s| s.request_trailers.clone())
            .unwrap_or_default()
    }

    /// Response headers as they are now (what the client gets).
    pub fn response_headers_map(&self) -> Headers {
        self.state()
            .ok()
            .and_then(|s| s.response_headers.clone())
            .unwrap_or_default()
    }

    pub fn response_header(&self, name: &str) -> Option<String> {
        self.response_headers_map().get(name)
    }

    /// Request body the filter let through so far.
    pub fn request_body_forwarded(&self) -> Vec<u8> {
        self.state()
            .map(|s| s.request_body.forwarded.clone())
            .unwrap_or_default()
    }

    /// Request body the filter holds back (buffered while paused).
    pub fn request_body_buffered(&self) -> Vec<u8> {
        self.state()
            .map(|s| s.request_body.buffered.clone())
            .unwrap_or_default()
    }

    pub fn response_body_forwarded(&self) -> Vec<u8> {
        self.state()
            .map(|s| s.response_body.forwarded.clone())
            .unwrap_or_default()
    }

    /// The first `send_local_response`, if any.
    pub fn local_response(&self) -> Option<LocalResponse> {
        self.state().ok().and_then(|s| s.local_response.clone())
    }

    /// How many times the filter called `send_local_response`.
    pub fn local_response_count(&self) -> u32 {
        self.state().map(|s| s.local_responses).unwrap_or(0)
    }

    /// Times the filter resumed the request / response (`continue_stream`).
    pub fn request_resumed(&self) -> u32 {
        self.state().map(|s| s.request_resumed).unwrap_or(0)
    }

    pub fn response_resumed(&self) -> u32 {
        self.state().map(|s| s.response_resumed).unwrap_or(0)
    }

    /// The filter closed (reset) the stream.
    pub fn closed(&self) -> bool {
        self.state().map(|s| s.closed).unwrap_or(false)
    }

    /// Request-header changes the filter made (each clears Envoy's route
    /// cache, so routing sees the new headers).
    pub fn request_header_mutations(&self) -> u32 {
        self.state()
            .map(|s| s.request_header_mutations)
            .unwrap_or(0)
    }
}
