//! What Envoy does once a VM call returns (its after-VM-call actions):
//! send the local replies the filter asked for.

use super::{StreamCallback, Vm};
use crate::error::Error;
use crate::state::local_reply::reply_message;

impl Vm {
    pub(super) fn after_call(&mut self) -> Result<(), Error> {
        loop {
            let replies = std::mem::take(&mut self.host_mut().local_replies);
            if replies.is_empty() {
                return Ok(());
            }
            for id in replies {
                self.send_local_reply(id)?;
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
}
