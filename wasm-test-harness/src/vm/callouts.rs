//! The test's side of callouts: answer, fail or time out what the guest
//! dispatched. Envoy delivers every callout result on the root context
//! (the SDK switches to the calling context itself).

use wasmtime::{TypedFunc, WasmParams};

use super::Vm;
use crate::error::Error;
use crate::headers::Headers;
use crate::state::callouts::{CalloutData, GrpcCall, GrpcStream, HttpCall, HttpCallResponse};

impl Vm {
    /// Runs a callout callback with `callout` readable and `status` what
    /// `proxy_get_status` answers.
    fn deliver<P: WasmParams>(
        &mut self,
        name: &str,
        f: Option<TypedFunc<P, ()>>,
        callout: Option<CalloutData>,
        status: Option<(u32, Vec<u8>)>,
        params: P,
    ) -> Result<(), Error> {
        let h = self.host_mut();
        h.callout = callout;
        h.grpc_status = status;
        let r = self.invoke(name, self.root_context, f, params).map(|_| ());
        let h = self.host_mut();
        h.callout = None;
        h.grpc_status = None;
        r
    }

    /// Pending HTTP callouts, oldest first.
    pub fn http_calls(&self) -> Vec<HttpCall> {
        self.host().callouts.http.values().cloned().collect()
    }

    fn take_http_call(&mut self, token: u32) -> Result<HttpCall, Error> {
        self.host_mut()
            .callouts
            .http
            .remove(&token)
            .ok_or_else(|| Error::Harness(format!("no pending HTTP call with token {token}")))
    }

    fn take_grpc_call(&mut self, token: u32) -> Result<GrpcCall, Error> {
        self.host_mut()
            .callouts
            .grpc
            .remove(&token)
            .ok_or_else(|| Error::Harness(format!("no pending gRPC call with token {token}")))
    }

    fn check_grpc_stream(&self, token: u32) -> Result<(), Error> {
        if self.host().callouts.streams.contains_key(&token) {
            Ok(())
        } else {
            Err(Error::Harness(format!("no gRPC stream with token {token}")))
        }
    }

    /// Answers a callout: runs `on_http_call_response` in the calling context.
    pub fn respond_http_call(
        &mut self,
        token: u32,
        response: HttpCallResponse,
    ) -> Result<(), Error> {
        self.take_http_call(token)?;
        let params = (
            self.root_context as i32,
            token as i32,
            response.headers.len() as i32,
            response.body.len() as i32,
            response.trailers.len() as i32,
        );
        let data = CalloutData {
            headers: Some(response.headers),
            body: response.body,
            trailers: Some(response.trailers),
        };
        let f = self.exports.on_http_call_response.clone();
        self.deliver("proxy_on_http_call_response", f, Some(data), None, params)
    }

    /// A failed callout (reset, no healthy upstream): Envoy calls
    /// `on_http_call_response` with no headers, body or trailers and
    /// reports BrokenConnection "reset" through `proxy_get_status`.
    pub fn fail_http_call(&mut self, token: u32) -> Result<(), Error> {
        self.take_http_call(token)?;
        let root = self.root_context as i32;
        let f = self.exports.on_http_call_response.clone();
        self.deliver(
            "proxy_on_http_call_response",
            f,
            Some(CalloutData::default()),
            Some((11, b"reset".to_vec())),
            (root, token as i32, 0, 0, 0),
        )
    }

    /// A callout whose timeout passed: Envoy's async client answers with a
    /// local `504` (`upstream request timeout`).
    pub fn time_out_http_call(&mut self, token: u32) -> Result<(), Error> {
        self.respond_http_call(token, HttpCallResponse::timeout())
    }

    /// Pending unary gRPC calls.
    pub fn grpc_calls(&self) -> Vec<GrpcCall> {
        self.host().callouts.grpc.values().cloned().collect()
    }

    /// Successful unary reply: Envoy calls only `on_grpc_receive` (the SDK
    /// reports status 0 to `on_grpc_call_response`).
    pub fn respond_grpc_call(&mut self, token: u32, message: &[u8]) -> Result<(), Error> {
        self.take_grpc_call(token)?;
        self.grpc_receive(token, message)
    }

    fn grpc_receive(&mut self, token: u32, message: &[u8]) -> Result<(), Error> {
        let data = CalloutData {
            headers: None,
            body: message.to_vec(),
            trailers: None,
        };
        let params = (self.root_context as i32, token as i32, message.len() as i32);
        let f = self.exports.on_grpc_receive.clone();
        self.deliver("proxy_on_grpc_receive", f, Some(data), None, params)
    }

    /// Failed unary call: `on_grpc_close` with `status` (and the message
    /// available through `proxy_get_status`).
    pub fn fail_grpc_call(&mut self, token: u32, status: u32, message: &str) -> Result<(), Error> {
        self.take_grpc_call(token)?;
        self.close_grpc(token, status, message)
    }

    fn close_grpc(&mut self, token: u32, status: u32, message: &str) -> Result<(), Error> {
        let params = (self.root_context as i32, token as i32, status as i32);
        let f = self.exports.on_grpc_close.clone();
        let status = Some((status, message.as_bytes().to_vec()));
        self.deliver("proxy_on_grpc_close", f, None, status, params)
    }

    /// gRPC streams the guest opened.
    pub fn grpc_streams(&self) -> Vec<GrpcStream> {
        self.host().callouts.streams.values().cloned().collect()
    }

    /// Delivers one message on a gRPC stream (`on_grpc_receive`).
    pub fn grpc_stream_message(&mut self, token: u32, message: &[u8]) -> Result<(), Error> {
        self.check_grpc_stream(token)?;
        self.grpc_receive(token, message)
    }

    /// Initial metadata on a gRPC stream (`on_grpc_receive_initial_metadata`).
    pub fn grpc_stream_initial_metadata(
        &mut self,
        token: u32,
        metadata: Headers,
    ) -> Result<(), Error> {
        self.grpc_stream_metadata(token, metadata, true)
    }

    fn grpc_stream_metadata(
        &mut self,
        token: u32,
        metadata: Headers,
        initial: bool,
    ) -> Result<(), Error> {
        self.check_grpc_stream(token)?;
        let params = (
            self.root_context as i32,
            token as i32,
            metadata.len() as i32,
        );
        let (name, f, data) = if initial {
            (
                "proxy_on_grpc_receive_initial_metadata",
                self.exports.on_grpc_receive_initial_metadata.clone(),
                CalloutData {
                    headers: Some(metadata),
                    ..CalloutData::default()
                },
            )
        } else {
            (
                "proxy_on_grpc_receive_trailing_metadata",
                self.exports.on_grpc_receive_trailing_metadata.clone(),
                CalloutData {
                    trailers: Some(metadata),
                    ..CalloutData::default()
                },
            )
        };
        self.deliver(name, f, Some(data), None, params)
    }

    /// Remote end of a gRPC stream: trailing metadata (if any), then
    /// `on_grpc_close` with `status` and `message` (via `proxy_get_status`).
    pub fn grpc_stream_close(
        &mut self,
        token: u32,
        trailing_metadata: Headers,
        status: u32,
        message: &str,
    ) -> Result<(), Error> {
        self.check_grpc_stream(token)?;
        if !trailing_metadata.is_empty() {
            self.grpc_stream_metadata(token, trailing_metadata, false)?;
        }
        self.host_mut().callouts.streams.remove(&token);
        self.close_grpc(token, status, message)
    }
}
