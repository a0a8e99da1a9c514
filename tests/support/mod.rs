//! Test support shared by the test binaries (`tests/http/`, `tests/engine/`) and the engine
//! benchmark: a private `redis-server` per test, the HTTP app and its request helpers, the
//! engine-level helpers on `testing::Handle`, the fault tests' Redis administration, and a
//! capture of what is logged.
#![allow(dead_code)]

pub mod app;
pub mod engine;
pub mod faults;
pub mod logs;
pub mod redis_sentinel;
mod redis_server;

// `benches/engine.rs` includes this module too, and uses only `RedisServer`.
#[allow(unused_imports)]
pub use redis_server::{unused_port, RedisServer};
