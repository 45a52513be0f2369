//! The end-to-end tests with a real `llama-server` live in `llama.rs` beside this file. They
//! are a package of their own so that its build script can tell whether a `llama-server` is
//! installed and compile the tests that need one as ignored when none is: `cargo test` then
//! shows them as ignored, not as passed.
