//! Placeholder: the conformance run is `tests/conformance.rs`.
