//! The engine end to end, one test binary: commands sent through `testing::Handle` to a
//! `SessionActor` and its backend, against a real Redis (a private `redis-server` per test,
//! from `support::RedisServer`) and, where the point is the semantics, the memory backend too.
//! Plus the shipped config files, which need no server, and the master found through Sentinel.
//!
//! One binary with a module per concern, because every test binary links actix-web again.

#[path = "../support/mod.rs"]
mod support;

mod acceptance;
mod batching;
mod config_files;
mod differential;
mod expiry;
mod fast_writes;
mod index_lag;
#[cfg(feature = "metrics")]
mod observed_metrics;
mod outages;
mod scripts;
mod sentinel;
mod server_errors;
mod spans;
mod users;
