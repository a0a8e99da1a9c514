//! The engine end to end: `SessionEngine::call` → `SessionActor` → backend → a real Redis
//! (started per test by `support::RedisServer`), and the same acceptance run on the memory
//! backend so both stores are known to behave alike.

mod support;

use std::sync::Arc;
use std::time::Duration;

use circumflex_session::testing::{
    self, Command, Handle, Limits, Op, Reply, WriteMode, META_CREATED,
};
use circumflex_session::{
    ActorConfig, Error, MemoryBackend, RedisBackend, RedisConfig, SessionEngine,
};
use futures::future::join_all;
use support::RedisServer;

/// TTL of sessions that must outlive the test.
const TTL: Duration = Duration::from_secs(60);
/// Creation stamp written as metadata by creating writes.
const CREATED: u64 = 1_700_000_000;
/// Bound on anything that must not hang; far above every deadline used here.
const NO_HANG: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// What the tests do with a handle on an engine's actor.
trait Client {
    async fn run(&self, key: &Arc<str>, op: Op, refresh: Option<Duration>) -> Result<Reply, Error>;
    async fn ok(&self, key: &Arc<str>, op: Op, refresh: Option<Duration>) -> Reply;
    async fn batch(&self, commands: Vec<Command>) -> Vec<Result<Reply, Error>>;
}

impl Client for Handle {
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

fn key(id: &str) -> Arc<str> {
    Arc::from(format!("session:{id}"))
}

fn cmd(key: &Arc<str>, op: Op, refresh: Option<Duration>) -> Command {
    Command {
        key: key.clone(),
        op,
        refresh,
        limits: Default::default(),
    }
}

fn get(fields: &[&str]) -> Op {
    Op::Get(fields.iter().map(|f| f.to_string()).collect())
}

fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

fn create(ttl: Duration) -> WriteMode {
    WriteMode::Create {
        created: CREATED,
        ttl,
    }
}

fn set_new(ttl: Duration, kv: &[(&str, &str)]) -> Op {
    Op::Set(create(ttl), pairs(kv))
}

fn set(kv: &[(&str, &str)]) -> Op {
    Op::Set(WriteMode::Existing, pairs(kv))
}

fn incr(field: &str, by: i64) -> Op {
    Op::Incr(WriteMode::Existing, field.to_owned(), by)
}

fn values(expected: &[Option<&str>]) -> Reply {
    Reply::Values(
        expected
            .iter()
            .map(|v| v.map(|s| s.as_bytes().to_vec()))
            .collect(),
    )
}

fn entries(expected: &[(&str, &str)]) -> Reply {
    Reply::Entries(pairs(expected))
}

/// Entries in field order (Redis answers in hash order, the memory backend sorted).
fn sorted(reply: Reply) -> Reply {
    match reply {
        Reply::Entries(mut all) => {
            all.sort();
            Reply::Entries(all)
        }
        other => other,
    }
}

fn is_store_down(result: &Result<Reply, Error>) -> bool {
    matches!(result, Err(Error::Unavailable(_)) | Err(Error::Timeout(_)))
}

async fn redis_backend(server: &RedisServer) -> RedisBackend {
    RedisBackend::connect(RedisConfig::new(server.url()))
        .await
        .expect("a valid redis config")
}

async fn redis_client(server: &RedisServer) -> Handle {
    testing::start(&SessionEngine::new(redis_backend(server).await))
}

async fn redis_client_with(server: &RedisServer, config: ActorConfig) -> Handle {
    let engine = SessionEngine::with_config(redis_backend(server).await, config)
        .expect("a valid actor config");
    testing::start(&engine)
}

fn memory_client() -> Handle {
    testing::start(&SessionEngine::new(MemoryBackend::new()))
}

fn raw_exists(server: &RedisServer, key: &str) -> i64 {
    redis::cmd("EXISTS")
        .arg(key)
        .query(&mut server.connection())
        .expect("EXISTS")
}

fn raw_hgetall(server: &RedisServer, key: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut all: Vec<(Vec<u8>, Vec<u8>)> = redis::cmd("HGETALL")
        .arg(key)
        .query(&mut server.connection())
        .expect("HGETALL");
    all.sort();
    all
}

fn raw_pttl(server: &RedisServer, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query(&mut server.connection())
        .expect("PTTL")
}

fn raw_hget(server: &RedisServer, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query(&mut server.connection())
        .expect("HGET")
}

fn script_flush(server: &RedisServer) {
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query::<()>(&mut server.connection())
        .expect("SCRIPT FLUSH");
}

// ---------------------------------------------------------------------------------------------
// 1. Acceptance: every op, identical on Redis and in memory
// ---------------------------------------------------------------------------------------------

/// Every op's semantics, step by step, on one engine. Run against every backend.
async fn acceptance(engine: SessionEngine) {
    let c = testing::start(&engine);
    let s = key("acceptance");
    let fresh = Some(TTL);

    // A session that does not exist: reads see nothing; reads that refresh see it gone.
    assert_eq!(c.ok(&s, get(&["a"]), None).await, values(&[None]));
    assert_eq!(
        c.ok(&s, get(&["a", "b"]), None).await,
        values(&[None, None])
    );
    assert_eq!(c.ok(&s, get(&["a", "b"]), fresh).await, Reply::Gone);
    assert_eq!(c.ok(&s, Op::Entries, None).await, entries(&[]));
    assert_eq!(c.ok(&s, Op::Entries, fresh).await, Reply::Gone);
    assert_eq!(c.ok(&s, Op::Touch, fresh).await, Reply::Bool(false));
    assert_eq!(c.ok(&s, Op::Touch, None).await, Reply::Bool(false));

    // Create, then get and mget.
    assert_eq!(
        c.ok(&s, set_new(TTL, &[("a", "1")]), fresh).await,
        Reply::Done
    );
    assert_eq!(c.ok(&s, get(&["a"]), fresh).await, values(&[Some("1")]));
    assert_eq!(
        c.ok(&s, get(&["a", "b"]), None).await,
        values(&[Some("1"), None])
    );

    // Set many; entries show user fields only, never the metadata.
    assert_eq!(
        c.ok(&s, set(&[("b", "2"), ("c", "3")]), fresh).await,
        Reply::Done
    );
    assert_eq!(
        c.ok(&s, get(&["c", "a", "b"]), None).await,
        values(&[Some("3"), Some("1"), Some("2")])
    );
    let all = sorted(c.ok(&s, Op::Entries, fresh).await);
    assert_eq!(all, entries(&[("a", "1"), ("b", "2"), ("c", "3")]));
    let Reply::Entries(all) = all else {
        unreachable!()
    };
    assert!(
        all.iter()
            .all(|(k, _)| k != META_CREATED && !k.starts_with('\0')),
        "metadata leaked into entries: {all:?}"
    );
    assert_eq!(
        c.ok(&s, Op::Remove(vec![]), None).await,
        Reply::Int(0),
        "removing nothing removes nothing"
    );

    // Remove counts what it removed.
    assert_eq!(
        c.ok(&s, Op::Remove(vec!["b".into(), "missing".into()]), fresh)
            .await,
        Reply::Int(1)
    );
    assert_eq!(
        c.ok(&s, Op::Remove(vec!["b".into()]), None).await,
        Reply::Int(0)
    );
    assert_eq!(
        c.ok(&s, get(&["a", "b"]), None).await,
        values(&[Some("1"), None])
    );

    // Incr: a missing field counts as 0; an existing one is added to.
    assert_eq!(c.ok(&s, incr("n", 5), fresh).await, Reply::Int(5));
    assert_eq!(c.ok(&s, incr("n", -2), None).await, Reply::Int(3));
    assert_eq!(c.ok(&s, incr("a", 10), None).await, Reply::Int(11));
    assert_eq!(
        c.ok(&s, get(&["n", "a"]), None).await,
        values(&[Some("3"), Some("11")])
    );

    // Incr of a non-integer fails with NotAnInteger naming the field, and changes nothing.
    assert_eq!(c.ok(&s, set(&[("word", "hello")]), None).await, Reply::Done);
    match c.run(&s, incr("word", 1), None).await {
        Err(Error::NotAnInteger(field)) => assert_eq!(field, "word"),
        other => panic!("incr of a non-integer gave {other:?}"),
    }
    assert_eq!(
        c.ok(&s, get(&["word"]), None).await,
        values(&[Some("hello")])
    );
    match c.run(&s, incr("n", i64::MAX), None).await {
        Err(Error::NotAnInteger(field)) => assert_eq!(field, "n"),
        other => panic!("overflowing incr gave {other:?}"),
    }
    assert_eq!(c.ok(&s, get(&["n"]), None).await, values(&[Some("3")]));

    // SetIfAbsent sets once.
    let once = |v: &str| Op::SetIfAbsent(WriteMode::Existing, "once".into(), v.into());
    assert_eq!(c.ok(&s, once("x"), fresh).await, Reply::Bool(true));
    assert_eq!(c.ok(&s, once("y"), fresh).await, Reply::Bool(false));
    assert_eq!(c.ok(&s, get(&["once"]), None).await, values(&[Some("x")]));

    // Touch of a live session.
    assert_eq!(c.ok(&s, Op::Touch, fresh).await, Reply::Bool(true));
    assert_eq!(c.ok(&s, Op::Touch, None).await, Reply::Bool(true));

    // Existing-mode writes to a missing session are Gone and create nothing.
    let ghost = key("ghost");
    for op in [
        set(&[("a", "1")]),
        Op::Remove(vec!["a".into()]),
        incr("n", 1),
        Op::SetIfAbsent(WriteMode::Existing, "a".into(), b"1".to_vec()),
    ] {
        let what = format!("{op:?}");
        assert_eq!(c.ok(&ghost, op, fresh).await, Reply::Gone, "{what}");
    }
    assert_eq!(c.ok(&ghost, Op::Touch, None).await, Reply::Bool(false));
    assert_eq!(c.ok(&ghost, Op::Entries, None).await, entries(&[]));

    // Creating writes of every kind create.
    let counter = key("counter");
    let op = Op::Incr(create(TTL), "n".into(), 2);
    assert_eq!(c.ok(&counter, op, fresh).await, Reply::Int(2));
    assert_eq!(c.ok(&counter, Op::Touch, None).await, Reply::Bool(true));
    let flag = key("flag");
    let op = Op::SetIfAbsent(create(TTL), "f".into(), b"on".to_vec());
    assert_eq!(c.ok(&flag, op, fresh).await, Reply::Bool(true));
    assert_eq!(
        sorted(c.ok(&flag, Op::Entries, None).await),
        entries(&[("f", "on")])
    );
    // A creating write to a session that exists just writes (no reset of its data).
    assert_eq!(
        c.ok(&flag, set_new(TTL, &[("g", "2")]), fresh).await,
        Reply::Done
    );
    assert_eq!(
        sorted(c.ok(&flag, Op::Entries, None).await),
        entries(&[("f", "on"), ("g", "2")])
    );

    // Renew moves the data to the new key; the old key is gone.
    let before = sorted(c.ok(&s, Op::Entries, None).await);
    let renewed = key("acceptance-renewed");
    let renew = |to: &Arc<str>| Op::Renew {
        to: to.clone(),
        ttl: TTL,
    };
    assert_eq!(c.ok(&s, renew(&renewed), None).await, Reply::Done);
    assert_eq!(sorted(c.ok(&renewed, Op::Entries, fresh).await), before);
    assert_eq!(c.ok(&s, get(&["a"]), fresh).await, Reply::Gone);
    assert_eq!(c.ok(&s, Op::Touch, None).await, Reply::Bool(false));
    // Renew of a missing session is Gone and creates nothing.
    let nowhere = key("nowhere");
    assert_eq!(c.ok(&s, renew(&nowhere), None).await, Reply::Gone);
    assert_eq!(c.ok(&ghost, renew(&nowhere), None).await, Reply::Gone);
    assert_eq!(c.ok(&nowhere, Op::Touch, None).await, Reply::Bool(false));

    // Invalidate: true once, then false; the session is gone.
    assert_eq!(
        c.ok(&renewed, Op::Invalidate, None).await,
        Reply::Bool(true)
    );
    assert_eq!(
        c.ok(&renewed, Op::Invalidate, None).await,
        Reply::Bool(false)
    );
    assert_eq!(c.ok(&renewed, get(&["a"]), fresh).await, Reply::Gone);
    assert_eq!(c.ok(&renewed, Op::Entries, None).await, entries(&[]));
    assert_eq!(c.ok(&renewed, set(&[("a", "1")]), fresh).await, Reply::Gone);

    // Nothing above was refused by the store.
    let stats = c.stats();
    assert_eq!(stats.errors_unavailable + stats.errors_timeout, 0);
    assert_eq!(stats.queue_depth, 0);
}

#[actix_web::test]
async fn every_op_behaves_as_documented_on_redis() {
    let server = RedisServer::start();
    acceptance(SessionEngine::new(redis_backend(&server).await)).await;
}

#[actix_web::test]
async fn every_op_behaves_as_documented_in_memory() {
    acceptance(SessionEngine::new(MemoryBackend::new())).await;
}

// ---------------------------------------------------------------------------------------------
// 2. Time to idle
// ---------------------------------------------------------------------------------------------

/// A session idle for longer than its TTL is gone; one refreshed in time lives on.
async fn short_tti_expires(engine: SessionEngine) {
    let c = testing::start(&engine);
    let tti = Duration::from_millis(300);
    let idle = key("idle");
    assert_eq!(
        c.ok(&idle, set_new(tti, &[("a", "1")]), Some(tti)).await,
        Reply::Done
    );
    assert_eq!(c.ok(&idle, get(&["a"]), None).await, values(&[Some("1")]));

    // Generous margins: the refreshed session expires 3 s after its last refresh, and each
    // check comes 0.9 s after the previous step.
    let long = Duration::from_millis(3000);
    let kept = key("kept");
    assert_eq!(
        c.ok(&kept, set_new(long, &[("a", "1")]), Some(long)).await,
        Reply::Done
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(c.ok(&kept, Op::Touch, Some(long)).await, Reply::Bool(true));
    tokio::time::sleep(Duration::from_millis(900)).await;

    // 1.8 s in: `idle` (300 ms) is long gone, `kept` was refreshed 0.9 s ago (3 s TTL).
    assert_eq!(c.ok(&idle, get(&["a"]), None).await, values(&[None]));
    assert_eq!(c.ok(&idle, Op::Entries, None).await, entries(&[]));
    assert_eq!(c.ok(&idle, Op::Touch, None).await, Reply::Bool(false));
    assert_eq!(c.ok(&idle, get(&["a"]), Some(tti)).await, Reply::Gone);
    assert_eq!(c.ok(&kept, get(&["a"]), None).await, values(&[Some("1")]));
}

#[actix_web::test]
async fn short_tti_really_expires_the_session_on_redis() {
    let server = RedisServer::start();
    short_tti_expires(SessionEngine::new(redis_backend(&server).await)).await;
    assert_eq!(raw_exists(&server, "session:idle"), 0);
    assert_eq!(raw_exists(&server, "session:kept"), 1);
}

#[actix_web::test]
async fn short_tti_really_expires_the_session_in_memory() {
    short_tti_expires(SessionEngine::new(MemoryBackend::new())).await;
}

// ---------------------------------------------------------------------------------------------
// 3. Per-command server errors
// ---------------------------------------------------------------------------------------------

/// A session hash, and a plain string under another session key.
async fn good_and_bad(server: &RedisServer, c: &Handle) -> (Arc<str>, Arc<str>) {
    let good = key("good");
    let bad = key("bad");
    assert_eq!(
        c.ok(&good, set_new(TTL, &[("a", "1")]), Some(TTL)).await,
        Reply::Done
    );
    redis::cmd("SET")
        .arg(&*bad)
        .arg("not a hash")
        .query::<()>(&mut server.connection())
        .expect("SET");
    (good, bad)
}

fn assert_wrongtype(result: &Result<Reply, Error>) {
    match result {
        Err(Error::Server(msg)) => assert!(msg.contains("WRONGTYPE"), "{msg}"),
        other => panic!("expected a WRONGTYPE server error, got {other:?}"),
    }
}

#[actix_web::test]
async fn wrongtype_read_fails_only_that_command_of_the_batch() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let (good, bad) = good_and_bad(&server, &c).await;
    let other = key("other");
    let before = c.stats();

    let results = c
        .batch(vec![
            cmd(&good, get(&["a"]), Some(TTL)),
            cmd(&bad, get(&["a"]), Some(TTL)),
            cmd(&good, set(&[("b", "2")]), None),
            cmd(&good, incr("n", 1), None),
            cmd(&good, Op::Touch, Some(TTL)),
            cmd(&other, get(&["a", "b"]), None),
        ])
        .await;

    let after = c.stats();
    assert_eq!(after.pipelines - before.pipelines, 1, "one batch");
    assert_eq!(after.errors_server - before.errors_server, 1);
    assert_eq!(results[0].as_ref().unwrap(), &values(&[Some("1")]));
    assert_wrongtype(&results[1]);
    assert_eq!(results[2].as_ref().unwrap(), &Reply::Done);
    assert_eq!(results[3].as_ref().unwrap(), &Reply::Int(1));
    assert_eq!(results[4].as_ref().unwrap(), &Reply::Bool(true));
    assert_eq!(results[5].as_ref().unwrap(), &values(&[None, None]));
    assert_eq!(raw_hget(&server, &good, "b").as_deref(), Some("2"));
}

#[actix_web::test]
async fn wrongtype_write_fails_only_that_command_of_the_batch() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let (good, bad) = good_and_bad(&server, &c).await;
    let before = c.stats();

    let results = c
        .batch(vec![
            cmd(&good, set(&[("b", "2")]), Some(TTL)),
            cmd(&bad, set(&[("b", "2")]), Some(TTL)),
            cmd(&good, get(&["a", "b"]), None),
        ])
        .await;

    let after = c.stats();
    assert_eq!(after.pipelines - before.pipelines, 1, "one batch");
    assert_eq!(results[0].as_ref().unwrap(), &Reply::Done);
    assert_wrongtype(&results[1]);
    assert_eq!(
        results[2].as_ref().unwrap(),
        &values(&[Some("1"), Some("2")])
    );
    let raw: String = redis::cmd("GET")
        .arg(&*bad)
        .query(&mut server.connection())
        .expect("GET");
    assert_eq!(raw, "not a hash", "the bad key was left alone");
}

// ---------------------------------------------------------------------------------------------
// 4. Batching and 5. fusion
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn concurrent_operations_share_few_pipelines() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let sessions: Vec<Arc<str>> = (0..100).map(|i| key(&format!("busy-{i}"))).collect();
    let created = c
        .batch(
            sessions
                .iter()
                .map(|s| cmd(s, set_new(TTL, &[("name", "ann")]), Some(TTL)))
                .collect(),
        )
        .await;
    assert!(created.iter().all(|r| matches!(r, Ok(Reply::Done))));
    let before = c.stats();

    // Five rounds over the 100 sessions, all sent at once: incr, read, incr, set, incr.
    let commands = (0..500)
        .map(|i| {
            let s = &sessions[i % 100];
            let op = match i / 100 {
                0 | 2 | 4 => incr("hits", 1),
                1 => get(&["hits", "name"]),
                _ => set(&[("seen", "yes")]),
            };
            cmd(s, op, Some(TTL))
        })
        .collect();
    let results = c.batch(commands).await;

    for (i, result) in results.iter().enumerate() {
        let expected = match i / 100 {
            0 => Reply::Int(1),
            1 => values(&[Some("1"), Some("ann")]),
            2 => Reply::Int(2),
            3 => Reply::Done,
            _ => Reply::Int(3),
        };
        assert_eq!(result.as_ref().ok(), Some(&expected), "command {i}");
    }
    for s in sessions.iter().step_by(17) {
        assert_eq!(raw_hget(&server, s, "hits").as_deref(), Some("3"));
        assert_eq!(raw_hget(&server, s, "seen").as_deref(), Some("yes"));
    }

    let after = c.stats();
    let commands = after.commands - before.commands;
    let pipelines = after.pipelines - before.pipelines;
    assert_eq!(commands, 500);
    assert!(
        pipelines * 10 <= commands,
        "{commands} commands took {pipelines} pipelines"
    );
    assert!(after.max_batch > 1, "max_batch {}", after.max_batch);
    assert_eq!(after.queue_depth, 0);
}

#[actix_web::test]
async fn concurrent_reads_of_one_session_fuse_into_one_hmget_and_one_refresh() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let s = key("fused");
    let kv = [("a", "1"), ("b", "2"), ("c", "3")];
    assert_eq!(c.ok(&s, set_new(TTL, &kv), Some(TTL)).await, Reply::Done);
    let before = c.stats();
    let longer = Some(TTL * 2);

    let results = c
        .batch(vec![
            cmd(&s, get(&["a"]), longer),
            cmd(&s, get(&["b", "c"]), longer),
            cmd(&s, get(&["c", "a"]), longer),
            cmd(&s, get(&["zz"]), longer),
            cmd(&s, Op::Touch, longer),
        ])
        .await;

    let replies: Vec<Reply> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        replies,
        vec![
            values(&[Some("1")]),
            values(&[Some("2"), Some("3")]),
            values(&[Some("3"), Some("1")]),
            values(&[None]),
            Reply::Bool(true),
        ]
    );
    let after = c.stats();
    assert_eq!(after.pipelines - before.pipelines, 1, "one batch");
    assert_eq!(
        after.fused_reads - before.fused_reads,
        3,
        "three reads joined"
    );
    assert_eq!(
        after.fused_refreshes - before.fused_refreshes,
        4,
        "one refresh for five commands"
    );
    assert_eq!(
        after.redis_commands - before.redis_commands,
        2,
        "one PEXPIRE and one HMGET"
    );
    // The one refresh that was sent took effect: the TTL is now past the creation TTL.
    assert!(raw_pttl(&server, &s) > TTL.as_millis() as i64);
}

// Commands of one batch must behave as if run one after another (the memory backend does
// exactly that). These pin the cases where fusion could answer from a stale existence check.

/// A refreshing read batched after a write that found the session gone is Gone too.
async fn read_after_gone_write_in_one_batch(c: &Handle) {
    let s = key("expired-elsewhere");
    let results = c
        .batch(vec![
            cmd(&s, set(&[("a", "1")]), Some(TTL)),
            cmd(&s, get(&["a"]), Some(TTL)),
            cmd(&s, Op::Entries, Some(TTL)),
        ])
        .await;
    let replies: Vec<Reply> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(replies, vec![Reply::Gone, Reply::Gone, Reply::Gone]);
}

/// A read batched after the write that created the session sees it.
async fn read_after_creating_write_in_one_batch(c: &Handle) {
    let s = key("born-in-batch");
    let results = c
        .batch(vec![
            cmd(&s, get(&["a"]), Some(TTL)),
            cmd(&s, set_new(TTL, &[("a", "1")]), Some(TTL)),
            cmd(&s, get(&["a"]), Some(TTL)),
            cmd(&s, Op::Touch, Some(TTL)),
        ])
        .await;
    let replies: Vec<Reply> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        replies,
        vec![
            Reply::Gone,
            Reply::Done,
            values(&[Some("1")]),
            Reply::Bool(true)
        ]
    );
}

/// A refreshing read batched after an invalidate of the session is Gone.
async fn read_after_invalidate_in_one_batch(c: &Handle) {
    let s = key("logged-out");
    assert_eq!(
        c.ok(&s, set_new(TTL, &[("a", "1")]), Some(TTL)).await,
        Reply::Done
    );
    let results = c
        .batch(vec![
            cmd(&s, get(&["a"]), Some(TTL)),
            cmd(&s, Op::Invalidate, None),
            cmd(&s, get(&["a"]), Some(TTL)),
        ])
        .await;
    let replies: Vec<Reply> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        replies,
        vec![values(&[Some("1")]), Reply::Bool(true), Reply::Gone]
    );
}

#[actix_web::test]
async fn read_batched_after_a_write_to_a_missing_session_is_gone_on_redis() {
    let server = RedisServer::start();
    read_after_gone_write_in_one_batch(&redis_client(&server).await).await;
    assert_eq!(raw_exists(&server, "session:expired-elsewhere"), 0);
}

#[actix_web::test]
async fn read_batched_after_a_write_to_a_missing_session_is_gone_in_memory() {
    read_after_gone_write_in_one_batch(&memory_client()).await;
}

#[actix_web::test]
async fn read_batched_after_the_creating_write_sees_the_new_session_on_redis() {
    let server = RedisServer::start();
    read_after_creating_write_in_one_batch(&redis_client(&server).await).await;
}

#[actix_web::test]
async fn read_batched_after_the_creating_write_sees_the_new_session_in_memory() {
    read_after_creating_write_in_one_batch(&memory_client()).await;
}

#[actix_web::test]
async fn read_batched_after_an_invalidate_is_gone_on_redis() {
    let server = RedisServer::start();
    read_after_invalidate_in_one_batch(&redis_client(&server).await).await;
}

#[actix_web::test]
async fn read_batched_after_an_invalidate_is_gone_in_memory() {
    read_after_invalidate_in_one_batch(&memory_client()).await;
}

// ---------------------------------------------------------------------------------------------
// 6. and 12. Redis down
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn redis_killed_with_a_batch_in_flight_fails_every_waiter_and_the_engine_recovers() {
    let mut server = RedisServer::start();
    let config = ActorConfig {
        deadline_ms: 1000,
        ..ActorConfig::default()
    };
    let c = redis_client_with(&server, config).await;
    let s = key("doomed");
    // Warm up: a pooled connection exists and the scripts are loaded.
    assert_eq!(
        c.ok(&s, set_new(TTL, &[("a", "1")]), Some(TTL)).await,
        Reply::Done
    );

    // Freeze Redis so the next batch stays in flight, then kill it under that batch.
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(5000)
        .arg("ALL")
        .query::<()>(&mut server.connection())
        .expect("CLIENT PAUSE");
    let before = c.stats();
    let commands = (0..10)
        .map(|i| match i % 3 {
            0 => cmd(&s, get(&["a"]), Some(TTL)),
            1 => cmd(&s, incr("n", 1), Some(TTL)),
            _ => cmd(&key(&format!("other-{i}")), Op::Touch, None),
        })
        .collect();
    let kill = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.kill();
    };
    let (results, ()) =
        tokio::time::timeout(NO_HANG, futures::future::join(c.batch(commands), kill))
            .await
            .expect("every waiter is answered; none hangs");

    for (i, result) in results.iter().enumerate() {
        assert!(is_store_down(result), "command {i}: {result:?}");
    }
    let after = c.stats();
    assert!(after.pipelines > before.pipelines, "the batch was sent");
    assert_eq!(
        (after.errors_unavailable + after.errors_timeout)
            - (before.errors_unavailable + before.errors_timeout),
        10
    );

    // A new Redis on the same port (empty: no persistence): the same engine serves again.
    server.restart();
    let revived = key("revived");
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = tokio::time::timeout(
            NO_HANG,
            c.run(&revived, set_new(TTL, &[("a", "2")]), Some(TTL)),
        )
        .await
        .expect("no hang after restart");
        match result {
            Ok(reply) => {
                assert_eq!(reply, Reply::Done);
                break;
            }
            Err(Error::Unavailable(_) | Error::Timeout(_)) if attempts < 50 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("engine still failing after {attempts} attempts: {e}"),
        }
    }
    assert_eq!(
        c.ok(&revived, get(&["a"]), Some(TTL)).await,
        values(&[Some("2")])
    );
    assert_eq!(raw_hget(&server, &revived, "a").as_deref(), Some("2"));
    assert_eq!(c.stats().queue_depth, 0);
}

#[actix_web::test]
async fn redis_down_from_the_start_fails_calls_instead_of_hanging() {
    let url = format!("redis://127.0.0.1:{}", support::unused_port());
    let backend =
        RedisBackend::connect(RedisConfig::new(url).connect_timeout(Duration::from_millis(300)))
            .await
            .expect("connect is lazy: no Redis needed yet");
    let config = ActorConfig {
        deadline_ms: 1000,
        ..ActorConfig::default()
    };
    let c = testing::start(&SessionEngine::with_config(backend, config).unwrap());
    let s = key("nobody-home");

    for op in [get(&["a"]), set_new(TTL, &[("a", "1")])] {
        let result = tokio::time::timeout(NO_HANG, c.run(&s, op, Some(TTL)))
            .await
            .expect("the call returns; it does not hang");
        assert!(is_store_down(&result), "{result:?}");
    }
    let stats = c.stats();
    assert_eq!(stats.errors_unavailable + stats.errors_timeout, 2);
    assert_eq!(stats.queue_depth, 0);
}

// ---------------------------------------------------------------------------------------------
// 7. Expiry guard and 8. renew, checked in Redis itself
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn write_to_expired_session_does_not_resurrect_it() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let s = key("expired");
    let short = Duration::from_millis(200);
    assert_eq!(
        c.ok(&s, set_new(short, &[("a", "1")]), Some(short)).await,
        Reply::Done
    );
    assert_eq!(raw_exists(&server, &s), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let before = c.stats();

    for op in [
        set(&[("a", "2")]),
        incr("n", 1),
        Op::SetIfAbsent(WriteMode::Existing, "a".into(), b"3".to_vec()),
        Op::Remove(vec!["a".into()]),
    ] {
        let what = format!("{op:?}");
        assert_eq!(c.ok(&s, op, Some(TTL)).await, Reply::Gone, "{what}");
        assert_eq!(raw_exists(&server, &s), 0, "{what} left a hash behind");
    }
    assert_eq!(c.stats().gone - before.gone, 4);
    assert_eq!(c.ok(&s, get(&["a"]), Some(TTL)).await, Reply::Gone);
    assert_eq!(raw_exists(&server, &s), 0);
}

#[actix_web::test]
async fn renew_keeps_the_data_and_drops_the_old_id() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let old = key("before-login");
    let new = key("after-login");
    let kv = [("cart", "3 items"), ("theme", "dark")];
    assert_eq!(c.ok(&old, set_new(TTL, &kv), Some(TTL)).await, Reply::Done);
    let stored = raw_hgetall(&server, &old);

    let longer = TTL * 2;
    let renew = Op::Renew {
        to: new.clone(),
        ttl: longer,
    };
    assert_eq!(c.ok(&old, renew, None).await, Reply::Done);

    assert_eq!(raw_exists(&server, &old), 0, "the old id is dropped");
    let moved = raw_hgetall(&server, &new);
    assert_eq!(moved, stored, "every field moved, metadata included");
    assert!(moved
        .iter()
        .any(|(k, v)| k == META_CREATED.as_bytes() && v == CREATED.to_string().as_bytes()));
    let pttl = raw_pttl(&server, &new);
    assert!(
        pttl > TTL.as_millis() as i64 && pttl <= longer.as_millis() as i64,
        "the new key carries the renew TTL, got PTTL {pttl}"
    );
    assert_eq!(
        sorted(c.ok(&new, Op::Entries, Some(longer)).await),
        entries(&kv)
    );
    assert_eq!(c.ok(&old, get(&["cart"]), Some(TTL)).await, Reply::Gone);
}

// ---------------------------------------------------------------------------------------------
// 9. Overload, 10. placement, 11. NOSCRIPT
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn full_queue_refuses_the_excess_with_overloaded_and_drains_to_zero() {
    let server = RedisServer::start();
    let config = ActorConfig {
        queue_depth: 5,
        ..ActorConfig::default()
    };
    let c = redis_client_with(&server, config).await;
    let s = key("crowded");
    assert_eq!(
        c.ok(&s, set_new(TTL, &[("n", "0")]), Some(TTL)).await,
        Reply::Done
    );
    let before = c.stats();

    let results = c
        .batch((0..50).map(|_| cmd(&s, incr("n", 1), None)).collect())
        .await;

    let done = results.iter().filter(|r| r.is_ok()).count();
    let overloaded = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Overloaded(_))))
        .count();
    assert_eq!(done + overloaded, 50, "only successes and refusals");
    assert!(done >= 5, "the queue takes 5, {done} got through");
    assert!(overloaded > 0, "nothing was refused");
    let after = c.stats();
    assert_eq!(
        after.errors_overloaded - before.errors_overloaded,
        overloaded as u64
    );
    assert_eq!(after.queue_depth, 0);
    // Refused commands never ran: the counter saw exactly the accepted ones.
    assert_eq!(
        c.ok(&s, get(&["n"]), None).await,
        values(&[Some(&done.to_string())])
    );
}

#[actix_web::test]
async fn writes_succeed_after_script_flush() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let s = key("scripted");
    assert_eq!(
        c.ok(&s, set_new(TTL, &[("a", "1")]), Some(TTL)).await,
        Reply::Done
    );

    script_flush(&server);
    assert_eq!(c.ok(&s, set(&[("a", "2")]), Some(TTL)).await, Reply::Done);
    assert_eq!(raw_hget(&server, &s, "a").as_deref(), Some("2"));

    script_flush(&server);
    assert_eq!(c.ok(&s, incr("n", 4), None).await, Reply::Int(4));
    assert_eq!(raw_hget(&server, &s, "n").as_deref(), Some("4"));

    script_flush(&server);
    let renewed = key("scripted-renewed");
    let renew = Op::Renew {
        to: renewed.clone(),
        ttl: TTL,
    };
    assert_eq!(c.ok(&s, renew, None).await, Reply::Done);
    assert_eq!(raw_hget(&server, &renewed, "a").as_deref(), Some("2"));
    assert_eq!(raw_exists(&server, &s), 0);
}

#[actix_web::test]
async fn batch_replayed_after_script_flush_reports_each_command_once() {
    let server = RedisServer::start();
    let c = redis_client(&server).await;
    let s = key("replayed");
    assert_eq!(
        c.ok(&s, set_new(TTL, &[("a", "1")]), Some(TTL)).await,
        Reply::Done
    );

    // The scripts are gone; the batch meets NOSCRIPT and is retried after loading them.
    // The write ran before the invalidate, so it succeeded and the invalidate found the session.
    script_flush(&server);
    let results = c
        .batch(vec![
            cmd(&s, set(&[("a", "2")]), Some(TTL)),
            cmd(&s, Op::Invalidate, None),
        ])
        .await;
    let replies: Vec<Reply> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(replies, vec![Reply::Done, Reply::Bool(true)]);
    assert_eq!(raw_exists(&server, &s), 0);
}

#[actix_web::test]
async fn a_write_of_more_fields_than_one_lua_unpack_takes_is_applied_whole() {
    let server = RedisServer::start();
    let client = redis_client(&server).await;
    let session = key("session:wide");
    let ttl = Duration::from_secs(60);
    // 1200 fields = 2400 arguments: more than one chunk of the write script's unpack.
    let wide: Vec<(String, Vec<u8>)> = (0..1200)
        .map(|i| (format!("f{i}"), format!("{i}").into_bytes()))
        .collect();
    let limits = Limits {
        max_keys: 1200,
        max_bytes: 1 << 20,
    };
    let write = |op| Command {
        key: session.clone(),
        op,
        refresh: None,
        limits,
    };
    let replies = client
        .batch(vec![write(Op::Set(create(ttl), wide.clone()))])
        .await;
    assert!(matches!(replies[..], [Ok(Reply::Done)]), "{replies:?}");
    let stored = raw_hgetall(&server, &session);
    assert_eq!(
        stored.len(),
        1202,
        "1200 fields, the creation stamp and the size"
    );
    let replies = client
        .batch(vec![write(Op::Remove(
            wide.iter().map(|(k, _)| k.clone()).collect(),
        ))])
        .await;
    assert!(matches!(replies[..], [Ok(Reply::Int(1200))]), "{replies:?}");
    assert_eq!(
        raw_hgetall(&server, &session).len(),
        2,
        "only the metadata is left"
    );
    assert_eq!(raw_hget(&server, &session, "\0size").as_deref(), Some("0"));
}
