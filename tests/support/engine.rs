//! Helpers of the engine tests: commands sent straight to an engine's actor through
//! `circumflex_session::testing::Handle`, and raw looks at what Redis holds.

use std::sync::Arc;
use std::time::Duration;

use circumflex_session::testing::{self, Command, Handle, Op, Reply, WriteMode};
use circumflex_session::{
    ActorConfig, Error, MemoryBackend, RedisBackend, RedisConfig, SessionEngine,
};
use futures::future::join_all;

use super::RedisServer;

/// TTL of sessions that must outlive the test.
pub const TTL: Duration = Duration::from_secs(60);
/// Creation stamp written as metadata by creating writes.
pub const CREATED: u64 = 1_700_000_000;
/// Bound on anything that must not hang; far above every deadline used here.
pub const NO_HANG: Duration = Duration::from_secs(15);

/// What the tests do with a handle on an engine's actor.
pub trait HandleExt {
    async fn run(&self, key: &Arc<str>, op: Op, refresh: Option<Duration>) -> Result<Reply, Error>;
    async fn ok(&self, key: &Arc<str>, op: Op, refresh: Option<Duration>) -> Reply;
    async fn batch(&self, commands: Vec<Command>) -> Vec<Result<Reply, Error>>;
}

impl HandleExt for Handle {
    async fn run(&self, key: &Arc<str>, op: Op, refresh: Option<Duration>) -> Result<Reply, Error> {
        self.call(cmd(key, op, refresh)).await
    }

    /// Runs a command that must succeed.
    async fn ok(&self, key: &Arc<str>, op: Op, refresh: Option<Duration>) -> Reply {
        let what = format!("{op:?} on {key:?}");
        self.run(key, op, refresh)
            .await
            .unwrap_or_else(|e| panic!("{what} failed: {e}"))
    }

    /// Sends every command before awaiting any, so they reach the actor together (one batch
    /// unless they exceed `max_batch`).
    async fn batch(&self, commands: Vec<Command>) -> Vec<Result<Reply, Error>> {
        join_all(commands.into_iter().map(|c| self.call(c))).await
    }
}

pub fn key(id: &str) -> Arc<str> {
    Arc::from(format!("session:{id}"))
}

/// `session:{<tag>}:<id>`: keys with one tag share a cluster slot, as a session's old and new
/// key do across a renew.
pub fn tagged(tag: &str, id: &str) -> Arc<str> {
    Arc::from(format!("session:{{{tag}}}:{id}"))
}

pub fn cmd(key: &Arc<str>, op: Op, refresh: Option<Duration>) -> Command {
    Command {
        key: key.clone(),
        op,
        refresh,
        limits: Default::default(),
        reindex: false,
    }
}

pub fn get(fields: &[&str]) -> Op {
    Op::Get(fields.iter().map(|f| f.to_string()).collect())
}

pub fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

pub fn create(ttl: Duration) -> WriteMode {
    WriteMode::Create {
        created: CREATED,
        ttl,
    }
}

pub fn set_new(ttl: Duration, kv: &[(&str, &str)]) -> Op {
    Op::Set(create(ttl), pairs(kv).into())
}

pub fn set(kv: &[(&str, &str)]) -> Op {
    Op::Set(WriteMode::Existing, pairs(kv).into())
}

pub fn incr(field: &str, by: i64) -> Op {
    Op::Incr(WriteMode::Existing, field.to_owned(), by)
}

pub fn values(expected: &[Option<&str>]) -> Reply {
    Reply::Values(
        expected
            .iter()
            .map(|v| v.map(|s| s.as_bytes().to_vec()))
            .collect(),
    )
}

pub fn entries(expected: &[(&str, &str)]) -> Reply {
    Reply::Entries(pairs(expected))
}

/// Entries in field order (Redis answers in hash order, the memory backend sorted).
pub fn sorted(reply: Reply) -> Reply {
    match reply {
        Reply::Entries(mut all) => {
            all.sort();
            Reply::Entries(all)
        }
        other => other,
    }
}

pub fn is_store_down(result: &Result<Reply, Error>) -> bool {
    matches!(result, Err(Error::Unavailable(_)) | Err(Error::Timeout(_)))
}

pub async fn redis_backend(server: &RedisServer) -> RedisBackend {
    RedisBackend::connect(RedisConfig::new(server.url()))
        .await
        .expect("a valid redis config")
}

pub async fn redis_client(server: &RedisServer) -> Handle {
    testing::start(&SessionEngine::new(redis_backend(server).await))
}

pub async fn redis_client_with(server: &RedisServer, config: ActorConfig) -> Handle {
    let engine = SessionEngine::with_config(redis_backend(server).await, config)
        .expect("a valid actor config");
    testing::start(&engine)
}

pub fn memory_client() -> Handle {
    testing::start(&SessionEngine::new(MemoryBackend::new()))
}

pub fn raw_exists(server: &RedisServer, key: &str) -> i64 {
    redis::cmd("EXISTS")
        .arg(key)
        .query(&mut server.connection())
        .expect("EXISTS")
}

pub fn raw_hgetall(server: &RedisServer, key: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut all: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(key)
        .query(&mut server.connection())
        .expect("HGETALL");
    all.sort();
    all
}

pub fn raw_pttl(server: &RedisServer, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query(&mut server.connection())
        .expect("PTTL")
}

/// A member's score in a sorted set (a user's index), `None` when it is not a member.
pub fn raw_zscore(server: &RedisServer, key: &str, member: &str) -> Option<f64> {
    redis::cmd("ZSCORE")
        .arg(key)
        .arg(member)
        .query(&mut server.connection())
        .expect("ZSCORE")
}

pub fn raw_hget(server: &RedisServer, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query(&mut server.connection())
        .expect("HGET")
}

pub fn script_flush(server: &RedisServer) {
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query::<()>(&mut server.connection())
        .expect("SCRIPT FLUSH");
}
