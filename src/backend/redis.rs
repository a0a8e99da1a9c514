//! Standalone Redis: one pipeline per batch over a bb8-redis pool.
//!
//! How commands become Redis commands:
//!
//! | op | Redis |
//! |---|---|
//! | `Get` / `mget` | `HMGET` (reads of one session in a batch fuse into one `HMGET`) |
//! | `Entries` | `HGETALL` |
//! | `Set`, `Remove`, `Incr`, `SetIfAbsent` | `EVALSHA` of the write script |
//! | `Invalidate` | `EVALSHA` of a one-line `DEL` script |
//! | `Touch`, and the refresh of a read | `PEXPIRE` (at most one per session per batch) |
//! | `Renew` | `EVALSHA` of the renew script |
//!
//! The write script checks `EXISTS` first, so a write to an expired or invalidated session
//! replies "gone" instead of creating a partial hash under the old id. Scripts are sent by
//! SHA; on `NOSCRIPT` (a restarted Redis) they are loaded and the batch is sent once more.
//! That is safe because every state-changing command (`DEL` included) runs inside a script, and
//! none ran; what did run (reads, `EXISTS`, `PEXPIRE`) gives the same answers when repeated.

use std::collections::HashMap;

use bb8::{ManageConnection, Pool};
use bb8_redis::RedisConnectionManager;
use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, IntoConnectionInfo, RedisError, Script, Value};

use crate::actor::message::{Command, Op, Reply, WriteMode, META_PREFIX};
use crate::backend::{Backend, BatchReplies};
use crate::config::RedisConfig;
use crate::error::Error;
use crate::stats::Stats;
use std::sync::atomic::Ordering::Relaxed;

const WRITE_SCRIPT: &str = r#"
local key = KEYS[1]
local ttl = tonumber(ARGV[3])
local exists
if ARGV[1] == 'e' and ttl > 0 then
  exists = redis.call('PEXPIRE', key, ttl) == 1
else
  exists = redis.call('EXISTS', key) == 1
end
if not exists then
  if ARGV[1] ~= 'c' then return {0} end
  redis.call('HSET', key, '\0created', ARGV[2])
  redis.call('PEXPIRE', key, ttl)
end
local op = ARGV[4]
if op == 'i' then return {1, redis.call('HINCRBY', key, ARGV[5], ARGV[6])} end
if op == 'n' then return {1, redis.call('HSETNX', key, ARGV[5], ARGV[6])} end
local cmd
if op == 's' then cmd = 'HSET' elseif op == 'd' then cmd = 'HDEL'
else return redis.error_reply('ERR circumflex-session: unknown write op') end
local n = #ARGV
if n < 5 then return {1, 0} end
if n <= 504 then return {1, redis.call(cmd, key, unpack(ARGV, 5, n))} end
local total = 0
for i = 5, n, 500 do
  total = total + redis.call(cmd, key, unpack(ARGV, i, math.min(i + 499, n)))
end
return {1, total}
"#;

/// `DEL` as a script, so that a pipeline that meets `NOSCRIPT` has run no state-changing command
/// outside a script and can be replayed whole.
const INVALIDATE_SCRIPT: &str = "return redis.call('DEL', KEYS[1])";

const RENEW_SCRIPT: &str = r#"
local data = redis.call('HGETALL', KEYS[1])
if #data == 0 then return 0 end
for i = 1, #data, 500 do
  redis.call('HSET', KEYS[2], unpack(data, i, math.min(i + 499, #data)))
end
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('DEL', KEYS[1])
return 1
"#;

/// A pooled multiplexed connection that remembers whether it broke, so bb8 drops it instead of
/// handing it out again (bb8-redis never reports a connection broken, and bb8's PING on
/// checkout, which would notice, doubles Redis traffic and is turned off).
pub(crate) struct TrackedConnection {
    conn: MultiplexedConnection,
    broken: bool,
}

/// bb8-redis's manager plus broken-connection tracking and our own timeouts: connections are
/// opened with a response timeout equal to `redis.response_timeout_ms` (redis-rs defaults to
/// 500 ms, which would cut every operation deadline above it short).
pub(crate) struct Manager {
    client: redis::Client,
    config: AsyncConnectionConfig,
    ping: RedisConnectionManager,
}

impl ManageConnection for Manager {
    type Connection = TrackedConnection;
    type Error = RedisError;

    async fn connect(&self) -> Result<Self::Connection, Self::Error> {
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        Ok(TrackedConnection {
            conn,
            broken: false,
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
        let manager = Manager {
            client: redis::Client::open(info.clone()).map_err(Error::Unavailable)?,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(config.connect_timeout_duration()))
                .set_response_timeout(Some(config.response_timeout_duration())),
            ping: RedisConnectionManager::new(info).map_err(Error::Unavailable)?,
        };
        let pool = Pool::builder()
            .max_size(config.pool_size)
            .min_idle(None)
            .test_on_check_out(false)
            .connection_timeout(config.connect_timeout_duration())
            .build_unchecked(manager);
        Ok(Self {
            pool,
            prefix: config.key_prefix,
            write: Script::new(WRITE_SCRIPT),
            renew: Script::new(RENEW_SCRIPT),
            invalidate: Script::new(INVALIDATE_SCRIPT),
        })
    }

    async fn run(&self, plan: &Plan<'_>) -> Result<Vec<Value>, Error> {
        let mut conn = self.pool.get().await.map_err(|e| match e {
            bb8::RunError::User(e) => Error::Unavailable(e),
            bb8::RunError::TimedOut => Error::Unavailable(RedisError::from((
                redis::ErrorKind::Io,
                "timed out waiting for a pooled Redis connection",
            ))),
        })?;
        let pipe = plan.pipeline(&self.write, &self.renew, &self.invalidate);
        let mut replies = query(&mut conn, &pipe).await?;
        if replies.iter().any(is_noscript) {
            let mut load = redis::pipe();
            load.cmd("SCRIPT").arg("LOAD").arg(WRITE_SCRIPT);
            load.cmd("SCRIPT").arg("LOAD").arg(RENEW_SCRIPT);
            load.cmd("SCRIPT").arg("LOAD").arg(INVALIDATE_SCRIPT);
            query(&mut conn, &load).await?;
            replies = query(&mut conn, &pipe).await?;
        }
        if replies.len() != plan.steps.len() {
            conn.broken = true;
            return Err(Error::Unavailable(RedisError::from((
                redis::ErrorKind::Client,
                "pipeline answered with the wrong number of replies",
            ))));
        }
        Ok(replies)
    }
}

async fn query(conn: &mut TrackedConnection, pipe: &redis::Pipeline) -> Result<Vec<Value>, Error> {
    match pipe.query_async::<Value>(&mut conn.conn).await {
        Ok(Value::Array(items)) => Ok(items),
        Ok(other) => {
            conn.broken = true;
            Err(Error::Unavailable(RedisError::from((
                redis::ErrorKind::Client,
                "unexpected pipeline reply",
                format!("{other:?}"),
            ))))
        }
        Err(e) => {
            conn.broken = true;
            Err(Error::Unavailable(e))
        }
    }
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
        Box::pin(async move {
            let plan = Plan::build(batch);
            stats
                .redis_commands
                .fetch_add(plan.steps.len() as u64, Relaxed);
            stats.fused_reads.fetch_add(plan.fused_reads, Relaxed);
            stats
                .fused_refreshes
                .fetch_add(plan.fused_refreshes, Relaxed);
            let replies = self.run(&plan).await?;
            Ok(plan.answer(batch, replies))
        })
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
                Op::Get(fields) => match state.open_read {
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
    cmd.arg(mode).arg(created).arg(ttl_ms);
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
    let Value::Array(items) = value else {
        return Err(Error::Server(format!("unexpected write reply {value:?}")));
    };
    match (items.first(), items.get(1)) {
        (Some(Value::Int(0)), _) => Ok(Reply::Gone),
        (Some(Value::Int(1)), Some(Value::Int(n))) => Ok(match command.op {
            Op::Set(..) => Reply::Done,
            Op::SetIfAbsent(..) => Reply::Bool(*n == 1),
            _ => Reply::Int(*n),
        }),
        _ => Err(Error::Server(format!("unexpected write reply {value:?}"))),
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
    use crate::actor::message::META_CREATED;
    use std::sync::Arc;
    use std::time::Duration;

    fn cmd(key: &str, op: Op, refresh: bool) -> Command {
        Command {
            key: Arc::from(key),
            op,
            refresh: refresh.then_some(Duration::from_secs(60)),
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
