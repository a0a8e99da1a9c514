//! Not part of the public API: no semver promise, no documentation, may change in any release.
//!
//! The door through which this crate's own integration tests and benchmarks reach the
//! machinery under [`AsyncSession`](crate::AsyncSession): raw commands on session hashes,
//! sent through a worker's actor without the checks the handle makes.

pub use crate::actor::message::{
    Binding, Command, Limits, Listed, Op, Reply, WriteMode, META_CREATED, META_USER,
};
pub use crate::actor::Handle;
use crate::engine::SessionEngine;

/// Starts an actor for `engine` on the current actix arbiter and returns its handle.
pub fn start(engine: &SessionEngine) -> Handle {
    engine.start()
}

/// The Redis Cluster hash slot of a key, as the cluster backend computes it.
pub fn cluster_slot(key: &str) -> u16 {
    crate::backend::redis::cluster_slot(key.as_bytes())
}

/// The slot tag of a user's sessions and index (`<prefix>:{<tag>}:u:<user>`).
pub fn user_tag(user: &str) -> String {
    crate::ticket::user_tag(user)
}
