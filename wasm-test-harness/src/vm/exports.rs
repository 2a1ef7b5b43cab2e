//! The guest's exported callbacks. Missing ones are skipped, as in Envoy.

use wasmtime::{Instance, Store, TypedFunc};

use crate::imports::VmData;

/// (context, token, headers, body size, trailers)
type I32x5 = (i32, i32, i32, i32, i32);
type I32x3 = (i32, i32, i32);

#[derive(Clone)]
pub(super) struct Exports {
    pub on_context_create: Option<TypedFunc<(i32, i32), ()>>,
    pub on_vm_start: Option<TypedFunc<(i32, i32), i32>>,
    pub on_configure: Option<TypedFunc<(i32, i32), i32>>,
    pub on_tick: Option<TypedFunc<i32, ()>>,
    pub on_queue_ready: Option<TypedFunc<(i32, i32), ()>>,
    pub on_request_headers: Option<TypedFunc<I32x3, i32>>,
    pub on_request_body: Option<TypedFunc<I32x3, i32>>,
    pub on_request_trailers: Option<TypedFunc<(i32, i32), i32>>,
    pub on_response_headers: Option<TypedFunc<I32x3, i32>>,
    pub on_response_body: Option<TypedFunc<I32x3, i32>>,
    pub on_response_trailers: Option<TypedFunc<(i32, i32), i32>>,
    pub on_log: Option<TypedFunc<i32, ()>>,
    pub on_done: Option<TypedFunc<i32, i32>>,
    pub on_delete: Option<TypedFunc<i32, ()>>,
    pub on_http_call_response: Option<TypedFunc<I32x5, ()>>,
    pub on_grpc_receive_initial_metadata: Option<TypedFunc<I32x3, ()>>,
    pub on_grpc_receive: Option<TypedFunc<I32x3, ()>>,
    pub on_grpc_receive_trailing_metadata: Option<TypedFunc<I32x3, ()>>,
    pub on_grpc_close: Option<TypedFunc<I32x3, ()>>,
}

impl Exports {
    pub fn find(instance: &Instance, store: &mut Store<VmData>) -> Self {
        macro_rules! export {
            ($name:literal) => {
                instance.get_typed_func(&mut *store, $name).ok()
            };
        }
        Exports {
            on_context_create: export!("proxy_on_context_create"),
            on_vm_start: export!("proxy_on_vm_start"),
            on_configure: export!("proxy_on_configure"),
            on_tick: export!("proxy_on_tick"),
            on_queue_ready: export!("proxy_on_queue_ready"),
            on_request_headers: export!("proxy_on_request_headers"),
            on_request_body: export!("proxy_on_request_body"),
            on_request_trailers: export!("proxy_on_request_trailers"),
            on_response_headers: export!("proxy_on_response_headers"),
            on_response_body: export!("proxy_on_response_body"),
            on_response_trailers: export!("proxy_on_response_trailers"),
            on_log: export!("proxy_on_log"),
            on_done: export!("proxy_on_done"),
            on_delete: export!("proxy_on_delete"),
            on_http_call_response: export!("proxy_on_http_call_response"),
            on_grpc_receive_initial_metadata: export!("proxy_on_grpc_receive_initial_metadata"),
            on_grpc_receive: export!("proxy_on_grpc_receive"),
            on_grpc_receive_trailing_metadata: export!("proxy_on_grpc_receive_trailing_metadata"),
            on_grpc_close: export!("proxy_on_grpc_close"),
        }
    }
}
