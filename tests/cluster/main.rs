//! The Redis Cluster backend end to end, one test binary: each test starts a private cluster
//! of `redis-server`s (`support::RedisCluster`), three primaries with or without replicas, and
//! drives it through the engine or the HTTP middleware: the acceptance, differential and login
//! suites every store passes, the spread of sessions over the primaries, redirects, and the
//! faults a cluster adds (failover, reshard, `CLUSTERDOWN`, `TRYAGAIN`); and (with a TLS
//! feature) a cluster that speaks only TLS.
//!
//! One binary with a module per concern, because every test binary links actix-web again.

#[path = "../support/mod.rs"]
mod support;

mod failover;
mod healthy;
mod load;
mod outages;
mod redirects;
mod reshard;
#[cfg(any(feature = "tls-rustls", feature = "tls-native-tls"))]
mod tls;
mod users;
