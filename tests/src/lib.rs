//! Test peers for nodelet's tests: a Kubernetes API server faithful to the API conventions,
//! and helpers for the end-to-end tests. Not a product part.

pub mod apiserver;
pub mod harness;
