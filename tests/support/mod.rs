//! Test support shared by the test binaries (`tests/http/`, `tests/engine/`) and the engine
//! benchmark: a private `redis-server` per test, the HTTP app and its request helpers, the
//! engine-level helpers on `testing::Handle`, the fault tests' Redis administration, a
//! capture of what is logged, and (with a TLS feature) certificates and a TLS-only server.
#![allow(dead_code)]

pub mod app;
pub mod engine;
pub mod faults;
pub mod logs;
mod redis_server;
#[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
pub mod tls;

// `benches/engine.rs` includes this module too, and uses only `RedisServer`.
#[allow(unused_imports)]
pub use redis_server::{unused_port, RedisServer};
