//! Redis: one pipeline per batch over a bb8 pool of multiplexed connections, or on a Redis
//! Cluster one pipeline per primary (`cluster`, whose module doc says how redirects and
//! failovers are handled).
//!
//! This file sends a batch to a standalone server and decides what to do when that fails;
//! `plan` turns a batch into pipeline steps and routes the replies back; `connections` keeps a
//! pool and knows which connections are alive; `scripts` holds the Lua scripts; `client`
//! turns the configuration into a client for one server or node.
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
//! The scripts are in `lua/`, each with its contract. The write script first reads whether the
//! session exists (its `\0created` stamp), so a write to an expired or invalidated session
//! replies "gone" instead of creating a partial hash under the old id, and it enforces the
//! session's size limits. Scripts are sent by SHA; on `NOSCRIPT` (a restarted Redis) they are
//! loaded and the batch is sent once more. That is safe because every state-changing command
//! but the fast write runs inside a script, and none ran; what did run (reads, `EXISTS`,
//! `PEXPIRE`) gives the same answers when repeated. A fast write (`plan/fast.rs`: a `set` as a
//! `MULTI`) runs again too, to the same state (its `\0size` grows twice, and stays an upper
//! bound), and its first replies, which say what it found, are the ones kept.
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

use futures::future::BoxFuture;
use redis::Value;

use crate::actor::message::{Command, Reply};
use crate::backend::{Backend, BatchReplies};
use crate::config::{RedisConfig, Topology};
use crate::error::Error;
use crate::stats::Tally;

mod client;
mod cluster;
mod connections;
mod errors;
mod plan;
mod scripts;
mod sentinel;

pub(crate) use cluster::slot as cluster_slot;
use cluster::Cluster;
use connections::{Connections, PipelineFailure as Failure};
use plan::{replay_safe, Plan};
use scripts::{is_noscript, Scripts};

/// Sessions in a standalone Redis (or any server speaking its protocol), or in a Redis
/// Cluster.
///
/// ```no_run
/// # async fn run() -> Result<(), circumflex_session::Error> {
/// use circumflex_session::{RedisBackend, RedisConfig};
/// let backend = RedisBackend::connect(RedisConfig::new("redis://127.0.0.1:6379").db(2)).await?;
/// let cluster = RedisBackend::connect(RedisConfig::cluster([
///     "redis://10.0.0.1:7000",
///     "redis://10.0.0.2:7000",
/// ]))
/// .await?;
/// # Ok(()) }
/// ```
pub struct RedisBackend {
    store: Store,
    prefix: String,
    scripts: Scripts,
}

/// Where the sessions are.
enum Store {
    Standalone(Connections),
    Cluster(Cluster),
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut f = f.debug_struct("RedisBackend");
        f.field("prefix", &self.prefix);
        match &self.store {
            Store::Standalone(connections) => f.field("pool", &connections.state()),
            Store::Cluster(cluster) => f.field("cluster", cluster),
        };
        f.finish()
    }
}

impl RedisBackend {
    /// Creates the pool for the URL (or the master that the sentinels of `config.sentinel`
    /// name, see [`SentinelConfig`](crate::SentinelConfig)), database, credentials and TLS
    /// files of `config`; with `cluster_nodes`, a pool per cluster node (`pool_size` each),
    /// every node reached with the first node URL's scheme, credentials and TLS files.
    /// Connections are opened on first use (and a cluster's slot map is loaded by the first
    /// batch), so an application starts (and answers 503 on session use) while Redis is still
    /// down. Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid setting or URL, an unreadable TLS file, a client key
    /// the TLS library cannot use, or `rediss://` without a TLS feature.
    pub async fn connect(config: RedisConfig) -> Result<Self, Error> {
        config.validate()?;
        match config.topology() {
            Topology::Standalone(url) => {
                let info = client::connection_info(url, &config)?;
                let client = client::client(info, &config.tls)?;
                Ok(Self::with_client(client, config))
            }
            Topology::Cluster(nodes) => Ok(Self {
                store: Store::Cluster(Cluster::new(&config, nodes)?),
                prefix: config.key_prefix,
                scripts: Scripts::new(),
            }),
            Topology::Sentinel(sentinel) => {
                let sentinels = sentinel::Sentinels::new(&config, sentinel)?;
                let connections = Connections::through_sentinels(&config, sentinels);
                Ok(Self::with_connections(connections, config))
            }
        }
    }

    /// Uses a Redis client you built yourself (your own connection info, TLS settings or
    /// credentials provider), with the pool, timeouts and key prefix of `config`. The `url`,
    /// `db`, `username` and `password` of `config` are not used: the client has its own. Give
    /// it `TcpSettings` with `TCP_NODELAY`, as `connect` does, or small pipelines may wait on
    /// Nagle's algorithm.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use circumflex_session::{RedisBackend, RedisConfig};
    /// let client = redis::Client::open("redis://127.0.0.1:6379/2")?;
    /// let backend = RedisBackend::from_client(client, RedisConfig::default().key_prefix("app"))?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid pool or timeout setting.
    pub fn from_client(client: redis::Client, config: RedisConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self::with_client(client, config))
    }

    fn with_client(client: redis::Client, config: RedisConfig) -> Self {
        Self::with_connections(Connections::new(&config, client), config)
    }

    fn with_connections(connections: Connections, config: RedisConfig) -> Self {
        Self {
            store: Store::Standalone(connections),
            prefix: config.key_prefix,
            scripts: Scripts::new(),
        }
    }

    /// Connects now and checks that Redis serves us as the configured user: for a startup
    /// check that fails fast, with a clear error, on a wrong password, an unknown user, an ACL
    /// user without a permission sessions need, a read-only replica, a TLS certificate that
    /// does not verify or an unreachable server. Behind Sentinel it also says when no sentinel
    /// answers or none monitors the configured master name. Sessions do not need it:
    /// connections are otherwise opened on first use.
    ///
    /// Costs one round trip of five commands that change nothing: `PING`, and on a key under
    /// the prefix that no session can have (`<prefix>:{check}:probe`), `EVALSHA` of the
    /// logout script (which deletes only that key; `NOSCRIPT` is fine, it proves the
    /// permission), `HMGET` and `PEXPIRE` (which Redis refuses on a replica); then `EVAL` of
    /// the listing script of sessions by user on the index of no user
    /// (`<prefix>:{check}:u:probe`), which runs the commands the per-user scripts need
    /// beyond `@read` and `@write`: `TIME` is in no category but `@fast`. On a cluster, it
    /// first loads the slot map and checks that every slot has a primary, then sends the same
    /// five commands to every primary, on probe keys of a slot that primary owns.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), circumflex_session::Error> {
    /// use circumflex_session::{RedisBackend, RedisConfig};
    /// let config = RedisConfig::new("redis://app:secret@10.0.0.5:6379");
    /// let backend = RedisBackend::connect(config).await?;
    /// if let Err(error) = backend.check().await {
    ///     eprintln!("sessions cannot use Redis: {error}"); // for example a wrong password
    ///     std::process::exit(1);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Unavailable`], whose message names the cause (and never a password).
    pub async fn check(&self) -> Result<(), Error> {
        match &self.store {
            Store::Standalone(connections) => {
                connections.check_sentinels().await?;
                // A session's tag has four characters, so `{check}` is never a session's key.
                let base = format!("{}:{{check}}", self.prefix);
                connections
                    .probe(&base, self.scripts.invalidate.get_hash())
                    .await
            }
            Store::Cluster(cluster) => cluster.check(&self.prefix, &self.scripts).await,
        }
    }

    /// Sends a plan on a live connection (loading the scripts once if Redis lost them).
    async fn run(
        &self,
        connections: &Connections,
        plan: &Plan<'_>,
        tally: &Tally,
    ) -> Result<Vec<Value>, Failure> {
        let mut conn = connections.live().await.map_err(Failure::Failed)?;
        let pipe = plan.pipeline(&self.scripts);
        tally.round_trips(1);
        let mut replies = plan.fold(connections.send(&mut conn, &pipe, plan.commands()).await?);
        if replies.iter().any(is_noscript) {
            // NOSCRIPT: no script ran, and what did run is safe to repeat (see the module doc).
            // A fast write did run, and runs again: its first replies say what it found, so
            // they are the ones kept.
            self.load_scripts(connections, &mut conn, tally).await?;
            let again = plan.fold(connections.send(&mut conn, &pipe, plan.commands()).await?);
            replies = plan.keep_fast_writes(replies, again);
        }
        // Fast writes that met an orphan or may have crossed a limit: one more round trip.
        let follow_ups = plan.fast_follow_ups(&mut replies);
        if !follow_ups.is_empty() {
            let pipe = Plan::follow_up_pipeline(&follow_ups, &self.scripts);
            tally.redis_commands(follow_ups.len() as u64);
            let answers = self
                .send_loading(connections, &mut conn, &pipe, follow_ups.len(), tally)
                .await?;
            Plan::settled(&follow_ups, answers, &mut replies);
        }
        Ok(replies)
    }

    /// Sends the follow-ups of fast writes (deletes of orphans and settle scripts, all safe to
    /// repeat) as a pipeline of `expected` commands; if Redis lost the scripts, loads them and
    /// sends it again.
    async fn send_loading(
        &self,
        connections: &Connections,
        conn: &mut connections::TrackedConnection,
        pipe: &redis::Pipeline,
        expected: usize,
        tally: &Tally,
    ) -> Result<Vec<Value>, Failure> {
        tally.round_trips(1);
        let mut replies = connections.send(conn, pipe, expected).await?;
        if replies.iter().any(is_noscript) {
            self.load_scripts(connections, conn, tally).await?;
            replies = connections.send(conn, pipe, expected).await?;
        }
        Ok(replies)
    }

    /// Loads every script, before a pipeline that met `NOSCRIPT` is sent again (the round
    /// trips of the load and of the second send are counted).
    async fn load_scripts(
        &self,
        connections: &Connections,
        conn: &mut connections::TrackedConnection,
        tally: &Tally,
    ) -> Result<(), Failure> {
        let mut load = redis::pipe();
        Scripts::load(&mut load);
        tally.round_trips(2);
        connections
            .send(conn, &load, Scripts::LOAD_COMMANDS)
            .await?;
        Ok(())
    }

    /// Runs a batch; if its connection was lost after it was sent, sends again the commands
    /// that may safely run twice (see [`replay_safe`]) on a live connection, once, and fails
    /// the others.
    async fn execute_batch(
        &self,
        batch: &[Command],
        out: &mut BatchReplies,
        tally: &Tally,
    ) -> Result<(), Error> {
        let connections = match &self.store {
            Store::Standalone(connections) => connections,
            Store::Cluster(cluster) => {
                return cluster.execute(batch, out, tally, &self.scripts).await
            }
        };
        let plan = Plan::build(batch, true);
        plan.count(tally);
        let lost = match self.run(connections, &plan, tally).await {
            Ok(replies) => {
                plan.answer(batch, replies, out);
                return Ok(());
            }
            Err(Failure::Lost(error)) => error,
            Err(Failure::Failed(error)) => return Err(error),
        };
        let (safe, unsafe_): (Vec<usize>, Vec<usize>) =
            (0..batch.len()).partition(|&i| replay_safe(&batch[i].op));
        tracing::debug!(error = %lost, replayed = safe.len(), failed = unsafe_.len(),
            "Redis connection lost with a batch in flight");
        if safe.is_empty() {
            return Err(lost);
        }
        let again: Vec<Command> = safe.iter().map(|&i| batch[i].clone()).collect();
        let plan = Plan::build(&again, true);
        plan.count(tally);
        let mut replies = BatchReplies::with_capacity(again.len());
        match self.run(connections, &plan, tally).await {
            Ok(values) => plan.answer(&again, values, &mut replies),
            Err(Failure::Lost(e) | Failure::Failed(e)) => return Err(e),
        };
        let mut answers: Vec<Option<Result<Reply, Error>>> = vec![None; batch.len()];
        for (i, reply) in safe.into_iter().zip(replies) {
            answers[i] = Some(reply);
        }
        out.extend(
            answers
                .into_iter()
                .map(|answer| answer.unwrap_or_else(|| Err(lost.clone()))),
        );
        Ok(())
    }
}

impl Backend for RedisBackend {
    fn execute<'a>(
        &'a self,
        batch: &'a [Command],
        replies: &'a mut BatchReplies,
        tally: &'a Tally,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(self.execute_batch(batch, replies, tally))
    }

    fn key_prefix(&self) -> &str {
        &self.prefix
    }

    fn name(&self) -> &'static str {
        match self.store {
            Store::Standalone(_) => "redis",
            Store::Cluster(_) => "redis-cluster",
        }
    }
}
