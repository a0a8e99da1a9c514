//! Test support shared by the test binaries (`tests/http/`, `tests/engine/`, `tests/cluster/`)
//! and the engine benchmark: a private `redis-server` (or Redis Cluster) per test, the HTTP app
//! and its request helpers, the engine-level helpers on `testing::Handle`, the suites every
//! store must pass (acceptance, differential, the two-browser flow of sessions by user), the
//! fault tests' Redis administration, a record of the sentinels' failover events, a
//! capture of what is logged and of the spans opened, a reader of Prometheus scrapes, and
//! (with a TLS feature) certificates and a TLS-only server; the
//! cluster and Sentinel starters also start their nodes TLS-only on request.
#![allow(dead_code)]

pub mod acceptance;
pub mod app;
pub mod differential;
pub mod engine;
pub mod faults;
pub mod flow;
pub mod logs;
pub mod prometheus;
mod redis_cluster;
pub mod redis_sentinel;
mod redis_server;
pub mod sentinel_events;
#[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
pub mod tls;
pub mod users;

// `benches/engine.rs` includes this module too, and uses only `RedisServer`.
#[allow(unused_imports)]
pub use redis_cluster::{owner_in, view_of, RedisCluster, SlotView};
#[allow(unused_imports)]
pub use redis_server::{unused_port, RedisServer, TlsFiles};
