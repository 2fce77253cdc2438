//! Intentionally empty: this library exists only so that the `paddock` package's own tests
//! can depend on the package with the `test-hooks` feature (a dev-dependency on a package
//! needs a library target; cargo ignores one without). Everything of paddock is in the
//! `paddock` binary (`src/main.rs`).
//!
//! With that feature (which `cargo test` enables for this package, and release builds do
//! not), the daemon reads `PADDOCK_TEST_PAUSE_AT`, the crash test's pause points, and the
//! supervisor's test hooks are compiled in.
