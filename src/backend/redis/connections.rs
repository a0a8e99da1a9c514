//! The pool of Redis connections, and knowing which of them are alive.
//!
//! A bb8 pool of multiplexed connections: bb8 opens them in the background, hands them out,
//! and drops the ones that report themselves broken. The manager is ours rather than
//! bb8-redis's, for two reasons that its 40 lines cannot change: bb8-redis opens connections
//! with redis-rs's default response timeout (500 ms, which would cut every operation deadline
//! above it short), and it never reports a connection broken, so bb8 would hand a dead one out
//! again. bb8's own remedy, a PING on every checkout, doubles Redis traffic; instead a connection
//! remembers whether it broke, when it last carried a reply, and how many losses the pool had
//! seen, and one that is suspect is PINGed before a batch goes on it.
//!
//! Behind Sentinel (see `sentinel`), each new connection goes to the master the sentinels name
//! at that moment, and four things change: while a sentinel fails the master over, every
//! command fails at once with `Unavailable`, instead of being acknowledged by a master about to
//! be abandoned; a connection opened before the last switch (or failover) is replaced, not
//! used; a connection that breaks for any reason (`READONLY` from a demoted master, a drop, a
//! timeout) makes every other one suspect; and a suspect connection must answer `ROLE` as a
//! master rather than just `PING`, so neither writes nor reads stay on a server that has become
//! a replica.
//!
//! Why this file is long: it is one job, deciding which connection may carry a pipeline and
//! what a failed pipeline says about the others, for a server and for a master behind
//! Sentinel alike; the one `send` that every topology's pipelines go through is here so that
//! a connection is marked broken, suspect or alive in one place.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bb8::{ManageConnection, Pool, PooledConnection};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError, Value};
use tokio::sync::Notify;

use super::errors::{redis_error, setup_error, store_refusal};
use super::sentinel::Sentinels;
use crate::config::RedisConfig;
use crate::error::{Error, StoreError};

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
    pub(super) conn: MultiplexedConnection,
    pub(super) broken: bool,
    /// When a reply last arrived on it (or it was opened).
    pub(super) alive_at: Instant,
    /// The backend's connection-loss count when it last proved alive: a loss seen on another
    /// connection since (a Redis restart, `CLIENT KILL`) makes this one suspect too.
    losses_seen: u64,
    /// Behind Sentinel: the sentinels' switch count when this connection was opened.
    switches_seen: u64,
}

/// Where new connections go.
enum Target {
    /// The server a client points at.
    Server(Box<redis::Client>),
    /// The master the sentinels name when the connection opens.
    Sentinel(Arc<Sentinels>),
}

/// Opens connections with our timeouts (a response timeout of `redis.response_timeout_ms`) and
/// tells bb8 which ones broke.
pub(crate) struct Manager {
    target: Target,
    config: AsyncConnectionConfig,
    /// Connections found dead after a batch was sent on them, and behind Sentinel connections
    /// found broken for any reason (shared with `Connections`).
    losses: Arc<AtomicU64>,
    /// Why the last attempt to connect failed, if it did: bb8 connects in the background and
    /// hands a waiting caller only a timeout, which would hide a wrong password or a refused
    /// connection.
    last_error: Arc<Mutex<Option<Error>>>,
    /// Woken when an attempt to connect fails (see [`Connections::fail_fast`]).
    failed: Arc<Notify>,
}

impl ManageConnection for Manager {
    type Connection = TrackedConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        // Read before connecting: a loss seen while this connection was being opened (after
        // the sentinels named its server, say) makes it suspect.
        let losses_seen = self.losses.load(Relaxed);
        let (conn, switches_seen, tls) = match &self.target {
            Target::Server(client) => (
                client
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await,
                0,
                is_tls(client),
            ),
            Target::Sentinel(sentinels) => {
                // Read before asking: a switch during the lookup makes this connection stale.
                let switches = sentinels.switches();
                match sentinels.master().await {
                    Ok(master) => (
                        master
                            .get_multiplexed_async_connection_with_config(&self.config)
                            .await,
                        switches,
                        is_tls(&master),
                    ),
                    Err(e) => (Err(e), switches, false),
                }
            }
        };
        // Behind Sentinel, an error of the lookup or of the connection to the master it found
        // names both, unless Redis refused us in words of its own.
        let error = conn.as_ref().err().map(|e| match &self.target {
            Target::Sentinel(sentinels) if store_refusal(e).is_none() => {
                sentinels.lookup_error(e.clone())
            }
            _ => setup_error(e, tls),
        });
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = error;
        if conn.is_err() {
            self.failed.notify_waiters();
        }
        let conn = conn?;
        Ok(TrackedConnection {
            conn,
            broken: false,
            alive_at: Instant::now(),
            losses_seen,
            switches_seen,
        })
    }

    async fn is_valid(&self, conn: &mut Self::Connection) -> Result<(), Self::Error> {
        // Not called: `test_on_check_out` is off, and `Connections::live` PINGs only the
        // connections that are suspect.
        redis::cmd("PING").query_async(&mut conn.conn).await
    }

    fn has_broken(&self, conn: &mut Self::Connection) -> bool {
        if conn.broken && matches!(self.target, Target::Sentinel(_)) {
            // Behind Sentinel a broken connection may mean a failover (READONLY from a demoted
            // master, a master gone): the others may point at the same server, so each proves
            // its role before its next batch.
            self.losses.fetch_add(1, Relaxed);
        }
        conn.broken
    }
}

/// The pool, and what it knows of its connections' health.
pub(super) struct Connections {
    pool: Pool<Manager>,
    pool_size: u32,
    /// The sentinels, when the master is found through them.
    sentinels: Option<Arc<Sentinels>>,
    /// Connections found dead after a batch was sent on them.
    losses: Arc<AtomicU64>,
    /// Why the last attempt to connect failed (shared with the manager).
    last_error: Arc<Mutex<Option<Error>>>,
    /// Woken by the manager when an attempt to connect fails; watched in fail-fast mode.
    failed: Option<Arc<Notify>>,
}

impl Connections {
    /// A pool that opens its connections through `client` on first use. A caller that needs
    /// a new connection while the server is down waits until `connect_timeout` for one, as
    /// bb8 retries in the background: a server that restarts within it is not noticed at all.
    pub(super) fn new(config: &RedisConfig, client: redis::Client) -> Self {
        Self::build(config, Target::Server(Box::new(client)), false)
    }

    /// A pool whose callers learn at once that an attempt to connect failed, instead of
    /// waiting out `connect_timeout` while bb8 retries: for a cluster node, where one node that
    /// is down must not hold up the batch that also carries the other nodes' commands (and a
    /// failover, not a retry, is what brings its slots back).
    pub(super) fn fail_fast(config: &RedisConfig, client: redis::Client) -> Self {
        Self::build(config, Target::Server(Box::new(client)), true)
    }

    /// A pool whose connections go, on first use, to the master that `sentinels` name.
    pub(super) fn through_sentinels(config: &RedisConfig, sentinels: Sentinels) -> Self {
        Self::build(config, Target::Sentinel(Arc::new(sentinels)), false)
    }

    fn build(config: &RedisConfig, target: Target, fail_fast: bool) -> Self {
        let sentinels = match &target {
            Target::Sentinel(sentinels) => Some(sentinels.clone()),
            Target::Server(_) => None,
        };
        let losses = Arc::new(AtomicU64::new(0));
        let last_error: Arc<Mutex<Option<Error>>> = Arc::default();
        let failed = Arc::new(Notify::new());
        let manager = Manager {
            target,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connect_timeout_duration()))
                .set_response_timeout(Some(config.response_timeout_duration())),
            losses: losses.clone(),
            last_error: last_error.clone(),
            failed: failed.clone(),
        };
        let pool = Pool::builder()
            .max_size(config.pool_size)
            .min_idle(None)
            .test_on_check_out(false)
            .retry_connection(!fail_fast)
            .connection_timeout(config.connect_timeout_duration())
            .build_unchecked(manager);
        Self {
            pool,
            pool_size: config.pool_size,
            sentinels,
            losses,
            last_error,
            failed: fail_fast.then_some(failed),
        }
    }

    /// Behind Sentinel, asks the sentinels whether they know the master (see
    /// `Sentinels::check`); otherwise nothing.
    pub(super) async fn check_sentinels(&self) -> Result<(), Error> {
        match &self.sentinels {
            Some(sentinels) => sentinels.check().await,
            None => Ok(()),
        }
    }

    /// The pool's state, for `Debug`.
    pub(super) fn state(&self) -> bb8::State {
        self.pool.state()
    }

    /// Records that a connection died with a batch in flight: every other connection is
    /// suspect until it answers a PING.
    pub(super) fn lost(&self) {
        self.losses.fetch_add(1, Relaxed);
    }

    async fn checkout(&self) -> Result<PooledConnection<'_, Manager>, Error> {
        // Behind Sentinel, an error of the lookup or of the connection to the master it found
        // names both, unless Redis refused us in words of its own.
        let redis_error = |e: RedisError| match &self.sentinels {
            Some(sentinels) if store_refusal(&e).is_none() => sentinels.lookup_error(e),
            _ => redis_error(e),
        };
        let got = match &self.failed {
            None => self.pool.get().await,
            Some(failed) => {
                // Registered before asking the pool, so that a failure of the attempt the
                // request starts cannot slip by unseen.
                let failure = failed.notified();
                tokio::pin!(failure);
                failure.as_mut().enable();
                tokio::select! {
                    got = self.pool.get() => got,
                    // Reported with the failed attempt's error, as a timeout is below.
                    () = failure => Err(bb8::RunError::TimedOut),
                }
            }
        };
        got.map_err(|e| match e {
            bb8::RunError::User(e) => redis_error(e),
            bb8::RunError::TimedOut => {
                // The connection attempts behind the timeout failed: say why.
                let last = self
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                match last {
                    Some(e) => e,
                    None => Error::unavailable(StoreError::new(
                        "timed out waiting for a pooled Redis connection",
                    )),
                }
            }
        })
    }

    /// The startup check's probe on one server: `PING`, then on `<base>:probe` (which no
    /// session has) the logout script by its SHA (`NOSCRIPT` is fine: it proves the
    /// permission), `HMGET` and `PEXPIRE` (which a replica refuses); then the listing script,
    /// whole (`EVAL`: it must run, not just be allowed, for Redis to check the commands it
    /// calls, `TIME` among them), on the index of no user, `<base>:u:probe`. Changes nothing
    /// but deleting `<base>:probe`.
    pub(super) async fn probe(&self, base: &str, invalidate_sha: &str) -> Result<(), Error> {
        let (key, index) = (format!("{base}:probe"), format!("{base}:u:probe"));
        let mut conn = self.live().await?;
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("PING");
        pipe.cmd("EVALSHA").arg(invalidate_sha).arg(1).arg(&key);
        pipe.cmd("HMGET").arg(&key).arg("\0created");
        pipe.cmd("PEXPIRE").arg(&key).arg(1);
        pipe.cmd("EVAL")
            .arg(super::scripts::SESSIONS_SOURCE)
            .arg(1)
            .arg(&index)
            .arg("probe")
            .arg(1);
        let replies = self
            .send(&mut conn, &pipe, 5)
            .await
            .map_err(|(PipelineFailure::Lost(e) | PipelineFailure::Failed(e))| e)?;
        for reply in replies {
            if let Value::ServerError(e) = reply {
                if e.code() != "NOSCRIPT" {
                    return Err(redis_error(RedisError::from(e)));
                }
            }
        }
        Ok(())
    }

    /// Sends a pipeline of `expected` commands (errors kept in their slots) on a connection of
    /// this pool. The connection is marked broken if the pipeline fails as a whole, and if it
    /// died with the pipeline in flight, every other connection becomes suspect. A reply that
    /// refuses us as a client rather than one command (`NOAUTH`, `LOADING`, `READONLY`, ...:
    /// see [`store_refusal`]) fails the whole pipeline, and the connection is replaced so that
    /// a corrected password or a finished load is picked up at once.
    pub(super) async fn send(
        &self,
        conn: &mut TrackedConnection,
        pipe: &redis::Pipeline,
        expected: usize,
    ) -> Result<Vec<Value>, PipelineFailure> {
        let replies = match pipe.query_async::<Value>(&mut conn.conn).await {
            Ok(Value::Array(replies)) if replies.len() == expected => replies,
            Ok(other) => {
                conn.broken = true;
                let what = match other {
                    Value::Array(replies) => {
                        format!("{} replies to {expected} commands", replies.len())
                    }
                    other => format!("{other:?}"),
                };
                return Err(PipelineFailure::Failed(Error::unavailable(
                    StoreError::new(format!("unexpected pipeline reply: {what}")),
                )));
            }
            Err(e) => {
                conn.broken = true;
                return Err(if e.is_connection_dropped() {
                    self.lost();
                    PipelineFailure::Lost(redis_error(e))
                } else {
                    PipelineFailure::Failed(redis_error(e))
                });
            }
        };
        if let Some(refusal) = replies.iter().find_map(|v| match v {
            Value::ServerError(e) => store_refusal(&RedisError::from(e.clone())),
            _ => None,
        }) {
            conn.broken = true;
            return Err(PipelineFailure::Failed(refusal));
        }
        conn.alive_at = Instant::now();
        Ok(replies)
    }

    /// A connection that is alive as far as can be known without sending the batch: one that
    /// sat idle (see [`IDLE_CHECK`]) or predates a connection loss must answer a PING first
    /// (`ROLE`, as a master, behind Sentinel), and behind Sentinel one opened before the
    /// sentinels last named a new master is not used. A dead or stale one is dropped and the
    /// next tried, up to one more than the pool holds, so that a pool full of dead connections
    /// is replaced within one call.
    pub(super) async fn live(&self) -> Result<PooledConnection<'_, Manager>, Error> {
        if let Some(sentinels) = &self.sentinels {
            sentinels.watch();
            if let Some(error) = sentinels.failing_over() {
                return Err(error);
            }
        }
        let mut tries = 0;
        loop {
            let mut conn = self.checkout().await?;
            let stale = self
                .sentinels
                .as_ref()
                .is_some_and(|s| conn.switches_seen != s.switches());
            let suspect = conn.alive_at.elapsed() >= IDLE_CHECK
                || conn.losses_seen != self.losses.load(Relaxed);
            let unusable = if stale {
                Unusable {
                    error: Error::unavailable(StoreError::new(
                        "the sentinels named a new master while connecting to it",
                    )),
                    try_another: true,
                }
            } else if !suspect {
                return Ok(conn);
            } else {
                match self.prove(&mut conn.conn).await {
                    Ok(()) => {
                        conn.alive_at = Instant::now();
                        conn.losses_seen = self.losses.load(Relaxed);
                        return Ok(conn);
                    }
                    Err(unusable) => unusable,
                }
            };
            conn.broken = true;
            tries += 1;
            if tries > self.pool_size || !unusable.try_another {
                return Err(unusable.error);
            }
        }
    }

    /// Whether a suspect connection still serves: it answers `PING`, or behind Sentinel
    /// `ROLE` as a master.
    async fn prove(&self, conn: &mut MultiplexedConnection) -> Result<(), Unusable> {
        let dead = |e: RedisError| Unusable {
            try_another: e.is_connection_dropped(),
            error: redis_error(e),
        };
        if self.sentinels.is_none() {
            return redis::cmd("PING")
                .query_async::<()>(conn)
                .await
                .map_err(dead);
        }
        match redis::cmd("ROLE").query_async::<redis::Role>(conn).await {
            Ok(redis::Role::Primary { .. }) => Ok(()),
            Ok(_) => Err(Unusable {
                error: Error::unavailable(StoreError::new(
                    "the Redis the sentinels named is no longer a master (failover in progress)",
                )),
                try_another: true,
            }),
            Err(e) => Err(dead(e)),
        }
    }
}

/// Whether a client's connections are TLS (`rediss://`), to say why a server hung up.
fn is_tls(client: &redis::Client) -> bool {
    matches!(
        client.get_connection_info().addr(),
        redis::ConnectionAddr::TcpTls { .. }
    )
}

/// How a pipeline failed as a whole.
pub(super) enum PipelineFailure {
    /// The connection died before the replies came: some commands may have run, and those
    /// that may run twice can be sent again.
    Lost(Error),
    /// Anything else: a response timeout, a garbled reply, Redis refusing us. Every command
    /// of the pipeline fails with the error.
    Failed(Error),
}

/// Why a pooled connection was not used, and whether another one may do.
struct Unusable {
    error: Error,
    try_another: bool,
}
