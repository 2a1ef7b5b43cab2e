//! meshguard's tooling as a library: the filter registry (each filter's
//! config checked by the filter's own stage), and the one renderer of Envoy
//! config that `make run`, the end-to-end tests, the benchmark and
//! docker-compose use; the policy file and what `meshguard render` makes
//! of it (`policy`), Istio's validation rules (`rules`), YAML with a line
//! for every node (`yaml`).

pub mod envoy;
pub mod filters;
pub mod oci;
pub mod policy;
pub mod rules;
pub mod sign;
pub mod token;
pub mod yaml;
