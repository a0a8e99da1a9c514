//! HTTP-level tests, one test binary: the app of `support::app` behind `SessionMiddleware`,
//! most tests against a private `redis-server` of their own, some on the memory backend, and
//! the demo example spoken to over real HTTP; the Sentinel tests on a master, a replica and three
//! sentinels of their own; two app instances on one Redis.
//!
//! One binary with a module per concern, because every test binary links actix-web again.

#[path = "../support/mod.rs"]
mod support;

mod acl;
#[cfg(feature = "actix-session")]
mod actix_session;
mod api;
mod auth_and_memory_faults;
mod concurrency;
mod connection_faults;
mod cookies;
mod demo;
mod errors;
mod expiry;
mod header;
mod limits;
mod sentinel;
#[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
mod tls;
mod two_instances;
mod update;
mod users;
