//! What Envoy does once a VM call returns (its after-VM-call actions):
//! send the local replies the filter asked for, and deliver body data that
//! arrived while the filter kept its headers paused to the filter that
//! just continued.

use super::{StreamCallback, Vm};
use crate::error::Error;
use crate::state::local_reply::reply_message;

impl Vm {
    pub(super) fn after_call(&mut self) -> Result<(), Error> {
        loop {
            let replies = std::mem::take(&mut self.host_mut().local_replies);
            let bodies = std::mem::take(&mut self.host_mut().resumed_bodies);
            if replies.is_empty() && bodies.is_empty() {
                return Ok(());
            }
            for id in replies {
                self.send_local_reply(id)?;
            }
            for (id, request) in bodies {
                self.deliver_parked_body(id, request)?;
            }
        }
    }

    /// Before the response started the reply goes through the filter
    /// chain (`on_response_headers`, `on_response_body`); afterwards it
    /// replaces the response directly.
    fn send_local_reply(&mut self, id: u32) -> Result<(), Error> {
        let Some(s) = self.stream_state_mut(id) else {
            return Ok(());
        };
        s.live.request_headers = false;
        s.live.request_body = false;
        s.request_paused = false;
        let Some(reply) = s.local_response.clone() else {
            return Ok(());
        };
        let message = reply_message(&reply, s.request_headers.as_ref());
        let through_filter = !s.response_started;
        s.response_started = true;
        s.response_headers = Some(message.headers.clone());
        s.response_body.forwarded.clear();
        if !through_filter {
            s.response_body.forwarded = message.body;
            return Ok(());
        }
        s.live.response_headers = true;
        let n = message.headers.len() as i32;
        let body = message.body;
        let end = i32::from(body.is_empty());
        self.call_stream(StreamCallback::ResponseHeaders, id, n, end)?;
        if let Some(s) = self.stream_state_mut(id) {
            s.live.response_headers = false;
            s.response_body.buffered = body.clone();
            s.live.response_body = !body.is_empty();
        }
        if !body.is_empty() {
            self.call_stream(StreamCallback::ResponseBody, id, body.len() as i32, 1)?;
        }
        if let Some(s) = self.stream_state_mut(id) {
            s.live.response_body = false;
            s.response_body.forwarded = std::mem::take(&mut s.response_body.buffered);
        }
        Ok(())
    }

    /// Envoy's `continueDecoding`/`continueEncoding`: the buffered body goes
    /// to `on_*_body` (with end of stream if it came), and on to the
    /// upstream/client if the filter continues.
    fn deliver_parked_body(&mut self, id: u32, request: bool) -> Result<(), Error> {
        let Some(s) = self.stream_state_mut(id) else {
            return Ok(());
        };
        let paused = if request {
            s.request_paused
        } else {
            s.response_paused
        };
        if s.local_response.is_some() || paused {
            return Ok(());
        }
        let end = if request {
            s.request_body.parked_end
        } else {
            s.response_body.parked_end
        };
        let size = s.unpark(request) as i32;
        let which = if request {
            StreamCallback::RequestBody
        } else {
            StreamCallback::ResponseBody
        };
        let action = self.call_stream(which, id, size, i32::from(end))?;
        if let Some(s) = self.stream_state_mut(id) {
            s.end_body(request, action);
        }
        Ok(())
    }
}
