//! Standalone Redis: one pipeline per batch over a bb8-redis pool.
//!
//! How commands become Redis commands:
//!
//! | op | Redis |
//! |---|---|
//! | `Get` / `mget` | `HMGET` (reads of one session in a batch fuse into one `HMGET`) |
//! | `Entries` | `HGETALL` |
//! | `Set`, `Remove`, `Incr`, `SetIfAbsent` | `EVALSHA` of the write script |
//! | `Invalidate` | `EVALSHA` of a one-line `UNLINK` script |
//! | `Touch`, and the refresh of a read | `PEXPIRE` (at most one per session per batch) |
//! | `Renew` | `EVALSHA` of the renew script (`RENAME`, O(1) whatever the session's size) |
//!
//! The scripts are in `lua/`, each with its contract. The write script checks `EXISTS` first,
//! so a write to an expired or invalidated session replies "gone" instead of creating a partial
//! hash under the old id, and it enforces the session's size limits. Scripts are sent by SHA;
//! on `NOSCRIPT` (a restarted Redis) they are loaded and the batch is sent once more. That is
//! safe because every state-changing command runs inside a script, and none ran; what did run
//! (reads, `EXISTS`, `PEXPIRE`) gives the same answers when repeated.
//!
//! # Faults
//! - A connection that sat idle or predates a connection loss is PINGed before a batch goes
//!   on it (after 250 ms idle), so a connection that Redis, a proxy or a restart closed is
//!   replaced before anything is sent on it.
//! - A connection that dies with a batch in flight fails its writes (they may have run) and
//!   sends its reads, refreshes and logouts once more on a live connection.
//! - `NOAUTH`, `WRONGPASS`, `NOPERM`, `LOADING`, `READONLY`, `MASTERDOWN` and `MISCONF` make
//!   the whole batch [`Error::Unavailable`] and the connection is replaced, so a corrected
//!   password or a finished load is picked up at once.
//! - `OOM` (over `maxmemory`) fails only the writes that would grow Redis, with
//!   [`Error::StoreFull`]; reads, removals and logouts keep working.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bb8::{ManageConnection, Pool, PooledConnection};
use bb8_redis::RedisConnectionManager;
use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo, RedisError, Script, Value};

use crate::actor::message::{Command, Op, Reply, WriteMode, META_PREFIX};
use crate::backend::{Backend, BatchReplies};
use crate::config::RedisConfig;
use crate::error::Error;
use crate::stats::Stats;

const WRITE_SCRIPT: &str = include_str!("lua/write.lua");
const RENEW_SCRIPT: &str = include_str!("lua/renew.lua");
const INVALIDATE_SCRIPT: &str = include_str!("lua/invalidate.lua");

/// Most fields in one `HMGET` that fuses the reads of one session: one Redis call stays short
/// however many requests read one session at once.
const MAX_FUSED_FIELDS: usize = 1024;

/// A connection that carried no reply for this long is PINGed before a batch goes on it.
///
/// Redis (`timeout`), proxies, NATs and load balancers close idle connections, and a restarted
/// Redis leaves every pooled connection dead. A batch sent on such a connection fails, and a
/// write that fails after it was sent may or may not have run, so it cannot be sent again.
/// A PING that fails proves the batch was never sent: the connection is dropped and the batch
/// goes out on another one. Under load connections never sit idle this long, so the check
/// costs nothing there; on a quiet site it costs one round trip after each pause.
const IDLE_CHECK: Duration = Duration::from_millis(250);

/// A pooled multiplexed connection that remembers whether it broke, so bb8 drops it instead of
/// handing it out again (bb8-redis never reports a connection broken, and bb8's PING on
/// checkout, which would notice, doubles Redis traffic and is turned off).
pub(crate) struct TrackedConnection {
    conn: MultiplexedConnection,
    broken: bool,
    /// When a reply last arrived on it (or it was opened).
    alive_at: Instant,
    /// The backend's connection-loss count when it last proved alive: a loss seen on another
    /// connection since (a Redis restart, `CLIENT KILL`) makes this one suspect too.
    losses_seen: u64,
}

/// bb8-redis's manager plus broken-connection tracking and our own timeouts: connections are
/// opened with a response timeout equal to `redis.response_timeout_ms` (redis-rs defaults to
/// 500 ms, which would cut every operation deadline above it short).
pub(crate) struct Manager {
    client: redis::Client,
    config: AsyncConnectionConfig,
    ping: RedisConnectionManager,
    /// Connections found dead after a batch was sent on them (shared with the backend).
    losses: Arc<AtomicU64>,
    /// Why the last attempt to connect failed, if it did: bb8 connects in the background and
    /// hands a waiting caller only a timeout, which would hide a wrong password or a refused
    /// connection.
    last_error: Arc<Mutex<Option<RedisError>>>,
}

impl ManageConnection for Manager {
    type Connection = TrackedConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await;
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = conn.as_ref().err().cloned();
        let conn = conn?;
        Ok(TrackedConnection {
            conn,
            broken: false,
            alive_at: Instant::now(),
            losses_seen: self.losses.load(Relaxed),
        })
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        self.ping.is_valid(&mut conn.conn).await
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        conn.broken
    }
}

/// Sessions in a standalone Redis (or any server speaking its protocol).
///
/// ```no_run
/// # async fn run() -> Result<(), circumflex_session::Error> {
/// use circumflex_session::{RedisBackend, RedisConfig};
/// let backend = RedisBackend::connect(RedisConfig::new("redis://127.0.0.1:6379").db(2)).await?;
/// # Ok(()) }
/// ```
pub struct RedisBackend {
    pool: Pool<Manager>,
    pool_size: u32,
    losses: Arc<AtomicU64>,
    last_error: Arc<Mutex<Option<RedisError>>>,
    prefix: String,
    write: Script,
    renew: Script,
    invalidate: Script,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("prefix", &self.prefix)
            .field("pool", &self.pool.state())
            .finish()
    }
}

impl RedisBackend {
    /// Creates the pool. Connections are opened on first use, so an application starts (and
    /// answers 503 on session use) while Redis is still down. Must run inside a Tokio runtime.
    pub async fn connect(config: RedisConfig) -> Result<Self, Error> {
        config.validate()?;
        let mut info = config
            .url_or_default()
            .into_connection_info()
            .map_err(|e| Error::Config(format!("invalid redis url: {e}")))?;
        let mut settings = info.redis_settings().clone();
        if let Some(db) = config.db {
            settings = settings.set_db(db);
        }
        if let Some(user) = &config.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &config.password {
            settings = settings.set_password(password);
        }
        // TCP_NODELAY: with more than one pipeline in flight, Nagle's algorithm would hold a
        // pipeline back until the previous one's bytes are acknowledged.
        info = info
            .set_redis_settings(settings)
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        let losses = Arc::new(AtomicU64::new(0));
        let last_error: Arc<Mutex<Option<RedisError>>> = Arc::default();
        let manager = Manager {
            client: redis::Client::open(info.clone()).map_err(Error::Unavailable)?,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connect_timeout_duration()))
                .set_response_timeout(Some(config.response_timeout_duration())),
            ping: RedisConnectionManager::new(info).map_err(Error::Unavailable)?,
            losses: losses.clone(),
            last_error: last_error.clone(),
        };
        let pool = Pool::builder()
            .max_size(config.pool_size)
            .min_idle(None)
            .test_on_check_out(false)
            .connection_timeout(config.connect_timeout_duration())
            .build_unchecked(manager);
        Ok(Self {
            pool,
            pool_size: config.pool_size,
            losses,
            last_error,
            prefix: config.key_prefix,
            write: Script::new(WRITE_SCRIPT),
            renew: Script::new(RENEW_SCRIPT),
            invalidate: Script::new(INVALIDATE_SCRIPT),
        })
    }

    async fn checkout(&self) -> Result<PooledConnection<'_, Manager>, Error> {
        self.pool.get().await.map_err(|e| {
            let e = match e {
                bb8::RunError::User(e) => e,
                bb8::RunError::TimedOut => {
                    // The connection attempts behind the timeout failed: say why.
                    let last = self
                        .last_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    last.unwrap_or_else(|| {
                        RedisError::from((
                            redis::ErrorKind::Io,
                            "timed out waiting for a pooled Redis connection",
                        ))
                    })
                }
            };
            store_refusal(&e).unwrap_or(Error::Unavailable(e))
        })
    }

    /// A connection that is alive as far as can be known without sending the batch: one that
    /// sat idle (see [`IDLE_CHECK`]) or predates a connection loss must answer a PING first. A
    /// dead one is dropped and the next tried, up to one more than the pool holds, so that a
    /// pool full of dead connections is replaced within one call.
    async fn live_connection(&self) -> Result<PooledConnection<'_, Manager>, Error> {
        let mut tries = 0;
        loop {
            let mut conn = self.checkout().await?;
            let suspect = conn.alive_at.elapsed() >= IDLE_CHECK
                || conn.losses_seen != self.losses.load(Relaxed);
            if !suspect {
                return Ok(conn);
            }
            match redis::cmd("PING").query_async::<()>(&mut conn.conn).await {
                Ok(()) => {
                    conn.alive_at = Instant::now();
                    conn.losses_seen = self.losses.load(Relaxed);
                    return Ok(conn);
                }
                Err(e) => {
                    conn.broken = true;
                    tries += 1;
                    if tries > self.pool_size || !e.is_connection_dropped() {
                        return Err(store_refusal(&e).unwrap_or(Error::Unavailable(e)));
                    }
                }
            }
        }
    }

    /// Sends a plan on a live connection (loading the scripts once if Redis lost them).
    async fn run(&self, plan: &Plan<'_>) -> Result<Vec<Value>, Failure> {
        let mut conn = self.live_connection().await.map_err(Failure::Unsent)?;
        let pipe = plan.pipeline(&self.write, &self.renew, &self.invalidate);
        let mut replies = self.query(&mut conn, &pipe).await?;
        if replies.iter().any(is_noscript) {
            // NOSCRIPT: no script ran, and what did run is safe to repeat (see the module doc).
            let mut load = redis::pipe();
            load.cmd("SCRIPT").arg("LOAD").arg(WRITE_SCRIPT);
            load.cmd("SCRIPT").arg("LOAD").arg(RENEW_SCRIPT);
            load.cmd("SCRIPT").arg("LOAD").arg(INVALIDATE_SCRIPT);
            self.query(&mut conn, &load).await?;
            replies = self.query(&mut conn, &pipe).await?;
        }
        if replies.len() != plan.steps.len() {
            conn.broken = true;
            return Err(Failure::Sent(Error::Unavailable(RedisError::from((
                redis::ErrorKind::Client,
                "pipeline answered with the wrong number of replies",
            )))));
        }
        // Refusals that concern the connection, not a command (NOAUTH after a password was
        // set live, LOADING after a restart, ...): the store is unavailable for the batch.
        if let Some(refusal) = replies.iter().find_map(|v| match v {
            Value::ServerError(e) => store_refusal(&RedisError::from(e.clone())),
            _ => None,
        }) {
            conn.broken = true;
            return Err(Failure::Sent(refusal));
        }
        conn.alive_at = Instant::now();
        Ok(replies)
    }

    async fn query(
        &self,
        conn: &mut TrackedConnection,
        pipe: &redis::Pipeline,
    ) -> Result<Vec<Value>, Failure> {
        match pipe.query_async::<Value>(&mut conn.conn).await {
            Ok(Value::Array(items)) => Ok(items),
            Ok(other) => {
                conn.broken = true;
                Err(Failure::Sent(Error::Unavailable(RedisError::from((
                    redis::ErrorKind::Client,
                    "unexpected pipeline reply",
                    format!("{other:?}"),
                )))))
            }
            Err(e) => {
                conn.broken = true;
                if e.is_connection_dropped() {
                    self.losses.fetch_add(1, Relaxed);
                    Err(Failure::Lost(Error::Unavailable(e)))
                } else {
                    Err(Failure::Sent(Error::Unavailable(e)))
                }
            }
        }
    }

    /// Runs a batch; if its connection was lost after it was sent, sends again the commands
    /// that may safely run twice (see [`replay_safe`]) on a live connection, once, and fails
    /// the others.
    async fn execute_batch(&self, batch: &[Command], stats: &Stats) -> Result<BatchReplies, Error> {
        let plan = Plan::build(batch);
        plan.count(stats);
        let lost = match self.run(&plan).await {
            Ok(replies) => return Ok(plan.answer(batch, replies)),
            Err(Failure::Lost(error)) => error,
            Err(Failure::Sent(error) | Failure::Unsent(error)) => return Err(error),
        };
        let (safe, unsafe_): (Vec<usize>, Vec<usize>) =
            (0..batch.len()).partition(|&i| replay_safe(&batch[i].op));
        tracing::debug!(error = %lost, replayed = safe.len(), failed = unsafe_.len(),
            "Redis connection lost with a batch in flight");
        if safe.is_empty() {
            return Err(lost);
        }
        let again: Vec<Command> = safe.iter().map(|&i| batch[i].clone()).collect();
        let plan = Plan::build(&again);
        plan.count(stats);
        let replies = match self.run(&plan).await {
            Ok(replies) => plan.answer(&again, replies),
            Err(Failure::Lost(e) | Failure::Sent(e) | Failure::Unsent(e)) => return Err(e),
        };
        let mut answers: Vec<Option<Result<Reply, Error>>> = vec![None; batch.len()];
        for (i, reply) in safe.into_iter().zip(replies) {
            answers[i] = Some(reply);
        }
        Ok(answers
            .into_iter()
            .map(|answer| answer.unwrap_or_else(|| Err(lost.clone())))
            .collect())
    }
}

/// How a batch failed as a whole.
enum Failure {
    /// Nothing of it was sent: no live connection could be had.
    Unsent(Error),
    /// The connection died before the replies came: some commands may have run.
    Lost(Error),
    /// It was sent and failed otherwise (a response timeout, a garbled reply, Redis refusing
    /// us): some commands may have run.
    Sent(Error),
}

/// Whether a command may run twice with the same outcome, and so be sent again after its
/// connection died with the batch in flight: reads, TTL refreshes and logout. A write may
/// have run (an increment would count twice, a renew would find its old id gone), so it is
/// failed instead, with [`Error::Unavailable`]: a 503 whose write may have been applied.
fn replay_safe(op: &Op) -> bool {
    matches!(op, Op::Get(_) | Op::Entries | Op::Touch | Op::Invalidate)
}

/// A Redis refusal that makes the store unavailable to us as a whole rather than failing one
/// command: authentication and permission errors, a server still loading its data, a replica
/// or a master that lost its replicas, a failing disk. The error names the cause in words an
/// operator can act on (it never holds a password: Redis does not echo it).
fn store_refusal(e: &RedisError) -> Option<Error> {
    let detail = || {
        format!("{} {}", e.code().unwrap_or(""), e.detail().unwrap_or(""))
            .trim()
            .to_owned()
    };
    // Redis answers a long command from a client that has not authenticated with a protocol
    // error instead of NOAUTH (and closes the connection).
    let unauthenticated = e
        .detail()
        .is_some_and(|d| d.starts_with("Protocol error: unauthenticated"));
    let cause = match e.code() {
        _ if unauthenticated => "Redis requires a password that is not configured (NOAUTH)",
        Some("NOAUTH") => "Redis requires a password that is not configured (NOAUTH)",
        Some("WRONGPASS") => "Redis rejected the configured user name or password (WRONGPASS)",
        _ if e.kind() == redis::ErrorKind::AuthenticationFailed => {
            "Redis rejected the configured credentials"
        }
        Some("NOPERM") => "the Redis user lacks a permission the session store needs (NOPERM)",
        Some("LOADING") => "Redis is still loading its data set (LOADING)",
        Some("READONLY") => "Redis is a read-only replica: point the URL at a master (READONLY)",
        Some("MASTERDOWN") => "the Redis replica lost its master (MASTERDOWN)",
        Some("MISCONF") => "Redis cannot persist to disk and refuses writes (MISCONF)",
        _ => return None,
    };
    Some(Error::Unavailable(RedisError::from((
        redis::ErrorKind::AuthenticationFailed,
        cause,
        detail(),
    ))))
}

fn is_noscript(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

impl Backend for RedisBackend {
    fn execute<'a>(
        &'a self,
        batch: &'a [Command],
        stats: &'a Stats,
    ) -> BoxFuture<'a, Result<BatchReplies, Error>> {
        Box::pin(self.execute_batch(batch, stats))
    }

    fn key_prefix(&self) -> &str {
        &self.prefix
    }

    fn name(&self) -> &'static str {
        "redis"
    }
}

/// One Redis command of the pipeline.
#[derive(Debug, PartialEq)]
enum Step<'a> {
    Expire(&'a str, u64),
    HMGet(&'a str, Vec<&'a str>),
    HGetAll(&'a str),
    /// The write script, with the TTL refresh it carries (0: none).
    Write(&'a Command, u64),
    Exists(&'a str),
    Del(&'a str),
    Renew(&'a str, &'a str, u64),
}

/// Where a command's answer is found.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Route {
    /// The step that answers it.
    step: usize,
    /// For a fused `HMGET`: the first of this command's fields within the step.
    offset: usize,
    /// A `PEXPIRE` of this session earlier in the batch: if it found nothing, a read is `Gone`.
    expire: Option<usize>,
}

/// A batch turned into pipeline steps, with fusion applied.
#[derive(Debug)]
struct Plan<'a> {
    steps: Vec<Step<'a>>,
    routes: Vec<Route>,
    fused_reads: u64,
    fused_refreshes: u64,
}

/// What the batch so far did to one session.
#[derive(Default)]
struct SessionState {
    /// The TTL was already refreshed in this batch.
    refreshed: bool,
    /// The `PEXPIRE` step that refreshed it, if a plain one did.
    expire: Option<usize>,
    /// An `HMGET` later reads may join: no write to the session since.
    open_read: Option<usize>,
}

fn millis(d: std::time::Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

impl<'a> Plan<'a> {
    fn build(batch: &'a [Command]) -> Self {
        let mut plan = Plan {
            steps: Vec::with_capacity(batch.len() + 4),
            routes: Vec::with_capacity(batch.len()),
            fused_reads: 0,
            fused_refreshes: 0,
        };
        let mut sessions: HashMap<&str, SessionState> = HashMap::with_capacity(batch.len());
        for command in batch {
            let key: &str = &command.key;
            let state = sessions.entry(key).or_default();
            // Reads and touches refresh with a plain PEXPIRE placed before them; writes refresh
            // inside their script. Either way, once per session per batch.
            let wants_refresh = command.refresh.is_some();
            if wants_refresh && state.refreshed {
                plan.fused_refreshes += 1;
            }
            let refresh = command.refresh.filter(|_| !state.refreshed);
            let is_read = matches!(command.op, Op::Get(_) | Op::Entries);
            if is_read && command.refresh.is_some() && state.expire.is_none() {
                // A refreshing read must learn whether the session exists, and only a plain
                // PEXPIRE earlier in the batch (with no creating write, invalidate or renew since)
                // tells it. A refresh folded into a write script does not: check existence here.
                state.expire = Some(plan.steps.len());
                match refresh {
                    Some(ttl) => {
                        plan.steps.push(Step::Expire(key, millis(ttl)));
                        state.refreshed = true;
                    }
                    None => plan.steps.push(Step::Exists(key)),
                }
            }
            let route = match &command.op {
                // A fused HMGET stays bounded: past MAX_FUSED_FIELDS a new one starts.
                Op::Get(fields) => match state.open_read.filter(|&step| {
                    matches!(&plan.steps[step], Step::HMGet(_, f) if f.len() + fields.len() <= MAX_FUSED_FIELDS)
                }) {
                    Some(step) => {
                        let Step::HMGet(_, existing) = &mut plan.steps[step] else {
                            unreachable!("open_read always points at an HMGET")
                        };
                        let offset = existing.len();
                        existing.extend(fields.iter().map(String::as_str));
                        plan.fused_reads += 1;
                        Route {
                            step,
                            offset,
                            expire: state.expire,
                        }
                    }
                    None => {
                        let step = plan.steps.len();
                        plan.steps.push(Step::HMGet(
                            key,
                            fields.iter().map(String::as_str).collect(),
                        ));
                        state.open_read = Some(step);
                        Route {
                            step,
                            offset: 0,
                            expire: state.expire,
                        }
                    }
                },
                Op::Entries => plan.push(Step::HGetAll(key), state.expire),
                Op::Touch => match (state.expire, command.refresh) {
                    // The session's PEXPIRE earlier in the batch already answers "exists?".
                    (Some(step), _) => Route {
                        step,
                        offset: 0,
                        expire: None,
                    },
                    (None, Some(ttl)) => {
                        let route = plan.push(Step::Expire(key, millis(ttl)), None);
                        state.refreshed = true;
                        state.expire = Some(route.step);
                        route
                    }
                    (None, None) => plan.push(Step::Exists(key), None),
                },
                Op::Invalidate => {
                    state.open_read = None;
                    state.expire = None;
                    plan.push(Step::Del(key), None)
                }
                Op::Renew { to, ttl } => {
                    state.open_read = None;
                    state.expire = None;
                    plan.push(Step::Renew(key, to, millis(*ttl)), None)
                }
                Op::Set(..) | Op::Remove(_) | Op::Incr(..) | Op::SetIfAbsent(..) => {
                    state.open_read = None;
                    if matches!(command.op.write_mode(), Some(WriteMode::Create { .. })) {
                        // It may create the session an earlier PEXPIRE found missing.
                        state.expire = None;
                    }
                    let refresh_ms = match refresh {
                        Some(ttl) => {
                            state.refreshed = true;
                            millis(ttl)
                        }
                        None => 0,
                    };
                    plan.push(Step::Write(command, refresh_ms), None)
                }
            };
            plan.routes.push(route);
        }
        plan
    }

    fn count(&self, stats: &Stats) {
        stats
            .redis_commands
            .fetch_add(self.steps.len() as u64, Relaxed);
        stats.fused_reads.fetch_add(self.fused_reads, Relaxed);
        stats
            .fused_refreshes
            .fetch_add(self.fused_refreshes, Relaxed);
    }

    fn push(&mut self, step: Step<'a>, expire: Option<usize>) -> Route {
        self.steps.push(step);
        Route {
            step: self.steps.len() - 1,
            offset: 0,
            expire,
        }
    }

    /// Encodes the steps as one pipeline; per-command errors stay in their slots.
    fn pipeline(&self, write: &Script, renew: &Script, invalidate: &Script) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for step in &self.steps {
            match step {
                Step::Expire(key, ms) => {
                    pipe.cmd("PEXPIRE").arg(*key).arg(*ms);
                }
                Step::Exists(key) => {
                    pipe.cmd("EXISTS").arg(*key);
                }
                Step::HMGet(key, fields) => {
                    pipe.cmd("HMGET").arg(*key).arg(fields.as_slice());
                }
                Step::HGetAll(key) => {
                    pipe.cmd("HGETALL").arg(*key);
                }
                Step::Del(key) => {
                    pipe.cmd("EVALSHA")
                        .arg(invalidate.get_hash())
                        .arg(1)
                        .arg(*key);
                }
                Step::Renew(from, to, ms) => {
                    pipe.cmd("EVALSHA")
                        .arg(renew.get_hash())
                        .arg(2)
                        .arg(*from)
                        .arg(*to)
                        .arg(*ms);
                }
                Step::Write(command, refresh_ms) => {
                    pipe.cmd("EVALSHA")
                        .arg(write.get_hash())
                        .arg(1)
                        .arg(&*command.key);
                    write_args(&mut pipe, command, *refresh_ms);
                }
            }
        }
        pipe
    }

    fn answer(&self, batch: &[Command], mut replies: Vec<Value>) -> BatchReplies {
        // HMGET steps may answer several commands; take their arrays out once.
        let mut arrays: HashMap<usize, Vec<Value>> = HashMap::new();
        for (i, step) in self.steps.iter().enumerate() {
            if matches!(step, Step::HMGet(..)) && matches!(replies[i], Value::Array(_)) {
                if let Value::Array(items) = std::mem::take(&mut replies[i]) {
                    arrays.insert(i, items);
                }
            }
        }
        batch
            .iter()
            .zip(&self.routes)
            .map(|(command, route)| {
                // A refreshing read learns from the session's PEXPIRE (or EXISTS) whether the
                // session exists; a plain read just reads, like the memory backend.
                if let Some(expire) = route.expire {
                    let reads = matches!(command.op, Op::Get(_) | Op::Entries);
                    if reads
                        && command.refresh.is_some()
                        && matches!(replies[expire], Value::Int(0))
                    {
                        return Ok(Reply::Gone);
                    }
                }
                if let Value::ServerError(e) = &replies[route.step] {
                    return Err(server_error(command, e));
                }
                match &command.op {
                    Op::Get(fields) => {
                        let slice = arrays.get_mut(&route.step).and_then(|items| {
                            items.get_mut(route.offset..route.offset + fields.len())
                        });
                        match slice {
                            Some(slice) => Ok(Reply::Values(
                                slice.iter_mut().map(|v| bytes(std::mem::take(v))).collect(),
                            )),
                            None => Err(Error::Server("unexpected HMGET reply".to_owned())),
                        }
                    }
                    Op::Entries => Ok(entries(std::mem::take(&mut replies[route.step]))),
                    Op::Touch | Op::Invalidate => Ok(Reply::Bool(
                        matches!(replies[route.step], Value::Int(n) if n > 0),
                    )),
                    Op::Renew { .. } => Ok(match replies[route.step] {
                        Value::Int(1) => Reply::Done,
                        _ => Reply::Gone,
                    }),
                    Op::Set(..) | Op::Remove(_) | Op::Incr(..) | Op::SetIfAbsent(..) => {
                        write_reply(command, &replies[route.step])
                    }
                }
            })
            .collect()
    }
}

/// Appends the write script's arguments to the pipeline's last command.
fn write_args(cmd: &mut redis::Pipeline, command: &Command, refresh_ms: u64) {
    let (mode, created, ttl_ms) = match command.op.write_mode() {
        Some(WriteMode::Create { created, ttl }) => ("c", created, millis(ttl)),
        _ => ("e", 0, refresh_ms),
    };
    cmd.arg(mode)
        .arg(created)
        .arg(ttl_ms)
        .arg(command.limits.max_keys)
        .arg(command.limits.max_bytes);
    match &command.op {
        Op::Set(_, entries) => {
            cmd.arg("s");
            for (field, value) in entries {
                cmd.arg(field.as_str()).arg(value.as_slice());
            }
        }
        Op::Remove(fields) => {
            cmd.arg("d").arg(fields.as_slice());
        }
        Op::Incr(_, field, by) => {
            cmd.arg("i").arg(field.as_str()).arg(*by);
        }
        Op::SetIfAbsent(_, field, value) => {
            cmd.arg("n").arg(field.as_str()).arg(value.as_slice());
        }
        _ => {}
    }
}

fn write_reply(command: &Command, value: &Value) -> Result<Reply, Error> {
    let unexpected = || Error::Server(format!("unexpected write reply {value:?}"));
    let Value::Array(items) = value else {
        return Err(unexpected());
    };
    match (items.first(), items.get(1), items.get(2)) {
        (Some(Value::Int(0)), _, _) => Ok(Reply::Gone),
        (Some(Value::Int(1)), Some(Value::Int(n)), _) => Ok(match command.op {
            Op::Set(..) => Reply::Done,
            Op::SetIfAbsent(..) => Reply::Bool(*n == 1),
            _ => Reply::Int(*n),
        }),
        // An increment answers the counter as a string: exact beyond Lua's 2^53.
        (Some(Value::Int(1)), Some(Value::BulkString(n)), _) => std::str::from_utf8(n)
            .ok()
            .and_then(|n| n.parse().ok())
            .map(Reply::Int)
            .ok_or_else(unexpected),
        (Some(Value::Int(2)), Some(Value::Int(keys)), Some(Value::Int(bytes))) => {
            Err(command.limits.exceeded((*keys as u64, *bytes as u64)))
        }
        _ => Err(unexpected()),
    }
}

fn server_error(command: &Command, e: &redis::ServerError) -> Error {
    let text = match e.details() {
        Some(details) => format!("{} {details}", e.code()),
        None => e.code().to_owned(),
    };
    if let Op::Incr(_, field, _) = &command.op {
        if text.contains("not an integer") || text.contains("overflow") {
            return Error::NotAnInteger(field.clone());
        }
    }
    // Redis 7 keeps the code of an error raised inside a script; Redis 6 wraps it in ERR.
    if e.code() == "OOM" || text.contains("OOM command not allowed") {
        return Error::StoreFull(text);
    }
    Error::Server(text)
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

fn entries(value: Value) -> Reply {
    let pairs: Vec<(Value, Value)> = match value {
        Value::Map(pairs) => pairs,
        Value::Array(items) => {
            let mut iter = items.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (iter.next(), iter.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        _ => Vec::new(),
    };
    let entries = pairs
        .into_iter()
        .filter_map(|(k, v)| {
            let field = String::from_utf8(bytes(k)?).ok()?;
            if field.as_bytes().first() == Some(&META_PREFIX) {
                return None;
            }
            Some((field, bytes(v)?))
        })
        .collect();
    Reply::Entries(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actor::message::{Limits, META_CREATED};

    fn cmd(key: &str, op: Op, refresh: bool) -> Command {
        Command {
            key: Arc::from(key),
            op,
            refresh: refresh.then_some(Duration::from_secs(60)),
            limits: Limits::default(),
        }
    }

    fn get(fields: &[&str]) -> Op {
        Op::Get(fields.iter().map(|f| f.to_string()).collect())
    }

    #[test]
    fn reads_of_one_session_fuse_into_one_hmget_with_one_refresh() {
        let batch = vec![
            cmd("s:1", get(&["a"]), true),
            cmd("s:2", get(&["x"]), true),
            cmd("s:1", get(&["b", "c"]), true),
        ];
        let plan = Plan::build(&batch);
        assert_eq!(
            plan.steps,
            vec![
                Step::Expire("s:1", 60_000),
                Step::HMGet("s:1", vec!["a", "b", "c"]),
                Step::Expire("s:2", 60_000),
                Step::HMGet("s:2", vec!["x"]),
            ]
        );
        assert_eq!(
            plan.routes[2],
            Route {
                step: 1,
                offset: 1,
                expire: Some(0)
            }
        );
        assert_eq!((plan.fused_reads, plan.fused_refreshes), (1, 1));
    }

    #[test]
    fn a_write_between_two_reads_keeps_them_apart() {
        let set = Op::Set(WriteMode::Existing, vec![("a".into(), b"1".to_vec())]);
        let batch = vec![
            cmd("s:1", get(&["a"]), false),
            cmd("s:1", set, false),
            cmd("s:1", get(&["a"]), false),
        ];
        let plan = Plan::build(&batch);
        assert_eq!(plan.steps.len(), 3);
        assert_eq!(plan.fused_reads, 0);
    }

    #[test]
    fn replies_are_routed_back_to_fused_readers() {
        let batch = vec![
            cmd("s:1", get(&["a"]), false),
            cmd("s:1", get(&["b", "c"]), false),
        ];
        let plan = Plan::build(&batch);
        let reply = Value::Array(vec![
            Value::BulkString(b"1".to_vec()),
            Value::Nil,
            Value::BulkString(b"3".to_vec()),
        ]);
        let answers = plan.answer(&batch, vec![reply]);
        assert_eq!(
            answers[0].as_ref().unwrap(),
            &Reply::Values(vec![Some(b"1".to_vec())])
        );
        assert_eq!(
            answers[1].as_ref().unwrap(),
            &Reply::Values(vec![None, Some(b"3".to_vec())])
        );
    }

    #[test]
    fn a_refresh_that_finds_no_session_makes_the_read_gone() {
        let batch = vec![cmd("s:1", get(&["a"]), true)];
        let plan = Plan::build(&batch);
        let answers = plan.answer(&batch, vec![Value::Int(0), Value::Array(vec![Value::Nil])]);
        assert_eq!(answers[0].as_ref().unwrap(), &Reply::Gone);
    }

    #[test]
    fn entries_hide_metadata() {
        let reply = entries(Value::Array(vec![
            Value::BulkString(META_CREATED.as_bytes().to_vec()),
            Value::BulkString(b"17".to_vec()),
            Value::BulkString(b"user".to_vec()),
            Value::BulkString(b"\"ann\"".to_vec()),
        ]));
        assert_eq!(
            reply,
            Reply::Entries(vec![("user".into(), b"\"ann\"".to_vec())])
        );
    }
}
