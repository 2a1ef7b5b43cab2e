//! meshguard's tooling as a library: the filter registry (each filter's
//! config checked by the filter's own stage), and the one renderer of Envoy
//! config that `make run`, the end-to-end tests, the benchmark and
//! docker-compose use.

pub mod envoy;
pub mod filters;
pub mod oci;
pub mod policy;
pub mod rules;
pub mod yaml;
