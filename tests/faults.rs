//! The faults a deployment meets every day, each against a real `redis-server`: connections
//! that Redis closed while idle, a restart, `CLIENT KILL` under load, a password we do not
//! have, a password set live, a Redis over `maxmemory`, and commands whose deadline passes
//! while they wait.

mod support;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::cookie::Key;
use actix_web::http::StatusCode;
use circumflex_session::testing::{self, Command, Op, WriteMode};
use circumflex_session::{
    ActorConfig, Error, RedisBackend, RedisConfig, SessionEngine, SessionMiddleware,
};
use futures::future::join_all;
use serde_json::json;
use support::app::*;
use support::RedisServer;

async fn engine(config: RedisConfig) -> SessionEngine {
    SessionEngine::new(RedisBackend::connect(config).await.expect("valid config"))
}

/// The test app with every default, on `server`.
async fn default_app(
    server: &RedisServer,
) -> impl actix_web::dev::Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
    Error = actix_web::Error,
> {
    test_app(SessionMiddleware::new(
        engine(RedisConfig::new(server.url())).await,
        Key::generate(),
    ))
    .await
}

/// `redis://` with a password, for the test's own inspection connections.
fn connection_with_password(server: &RedisServer, password: &str) -> redis::Connection {
    redis::Client::open(format!("redis://:{password}@127.0.0.1:{}", server.port()))
        .and_then(|c| c.get_connection())
        .expect("connect with the password")
}

fn config_set(conn: &mut redis::Connection, name: &str, value: &str) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(conn)
        .expect("CONFIG SET");
}

/// How many `EVALSHA` Redis has run (`INFO commandstats`).
fn evalsha_calls(server: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut server.connection())
        .expect("INFO commandstats");
    info.lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

fn client_kill_normal(conn: &mut redis::Connection) -> u64 {
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query(conn)
        .expect("CLIENT KILL")
}

/// Sends `count` counter requests one after another and checks each is a 200 whose counter
/// is one more than the last: no request failed, and none was applied twice.
async fn counter_requests_all_succeed<S, B>(app: &S, visitor: &mut Visitor, count: i64, what: &str)
where
    S: actix_web::dev::Service<
        actix_http::Request,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
    B: actix_web::body::MessageBody,
{
    let mut last = None;
    for i in 0..count {
        let reply = visitor.get(app, "/counter").await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{what}: request {i}: {}",
            reply.text()
        );
        let counter = reply.json()["counter"].as_i64().expect("a counter");
        if let Some(last) = last {
            assert_eq!(counter, last + 1, "{what}: request {i}");
        }
        last = Some(counter);
    }
}

#[actix_web::test]
async fn connections_that_redis_closed_while_idle_never_fail_a_request() {
    // Redis closes connections idle for more than a second, as proxies and NATs do too.
    let server = RedisServer::start_with(&["--timeout", "1"]);
    let app = default_app(&server).await;
    let mut visitor = Visitor::default();
    counter_requests_all_succeed(&app, &mut visitor, 3, "before the pause").await;

    actix_web::rt::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        server.info_field("clients", "connected_clients"),
        1,
        "Redis closed our idle connections (only this INFO's own is left)"
    );
    counter_requests_all_succeed(&app, &mut visitor, 20, "after 4 s idle").await;
}

#[actix_web::test]
async fn requests_a_second_after_redis_restarts_all_succeed() {
    let mut server = RedisServer::start();
    let app = default_app(&server).await;
    let mut visitor = Visitor::default();
    counter_requests_all_succeed(&app, &mut visitor, 3, "before the restart").await;

    server.restart();
    actix_web::rt::time::sleep(Duration::from_secs(1)).await;
    // The restarted Redis kept nothing (no persistence): the visitor's session is gone, the
    // first request starts a new one, and every request succeeds.
    let mut after = Visitor::default();
    counter_requests_all_succeed(&app, &mut after, 20, "after the restart").await;
    let reply = visitor.get(&app, "/counter").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json()["counter"],
        1,
        "the old session did not survive"
    );
}

#[actix_web::test]
async fn client_kill_under_load_fails_a_bounded_number_of_requests_and_none_after_it() {
    const USERS: usize = 16;
    let server = RedisServer::start();
    let app = default_app(&server).await;
    let killed_at: Rc<Cell<Option<Instant>>> = Rc::default();
    let stop = Rc::new(Cell::new(false));
    // (started, ended, status) of every request.
    let log: Rc<RefCell<Vec<(Instant, Instant, StatusCode)>>> = Rc::default();

    let user = |reads: bool| {
        let (app, stop, log) = (&app, stop.clone(), log.clone());
        async move {
            let mut visitor = Visitor::default();
            let login = visitor.get(app, "/login?user=reader").await;
            assert_eq!(login.status, StatusCode::OK);
            let mut last = 0;
            while !stop.get() {
                // A request that needs no I/O would never yield to the others.
                actix_web::rt::task::yield_now().await;
                let started = Instant::now();
                let uri = if reads { "/whoami" } else { "/counter" };
                let reply = visitor.get(app, uri).await;
                if !reads && reply.status == StatusCode::OK {
                    let counter = reply.json()["counter"].as_i64().expect("a counter");
                    assert!(counter > last, "the counter went from {last} to {counter}");
                    last = counter;
                }
                log.borrow_mut()
                    .push((started, Instant::now(), reply.status));
            }
        }
    };
    let killer = async {
        actix_web::rt::time::sleep(Duration::from_millis(400)).await;
        let killed = client_kill_normal(&mut server.connection());
        killed_at.set(Some(Instant::now()));
        assert!(killed >= 1, "our connections were killed");
        actix_web::rt::time::sleep(Duration::from_millis(600)).await;
        stop.set(true);
    };
    let users = join_all((0..USERS).map(|i| user(i % 4 == 0)));
    futures::join!(users, killer);

    let killed_at = killed_at.get().expect("the kill ran");
    let log = log.borrow();
    let failed: Vec<_> = log.iter().filter(|(.., s)| *s != StatusCode::OK).collect();
    assert!(
        failed
            .iter()
            .all(|(.., s)| *s == StatusCode::SERVICE_UNAVAILABLE),
        "only 503s, never a 500: {failed:?}"
    );
    assert!(
        failed.len() <= USERS,
        "at most the requests in flight at the kill fail: {} of {}",
        failed.len(),
        log.len()
    );
    // The writes of the batches that were on the wire when Redis dropped the connections fail
    // (they may have run); so may those of the one batch sent before the service saw the
    // drop. Once one request after the kill has succeeded, every connection has been checked
    // or replaced, and nothing fails any more.
    let recovered = log
        .iter()
        .filter(|(started, _, s)| *started > killed_at && *s == StatusCode::OK)
        .map(|(_, ended, _)| *ended)
        .min()
        .expect("requests succeeded after the kill");
    let after: Vec<_> = log.iter().filter(|(t, ..)| *t > recovered).collect();
    assert!(
        after.len() > 50,
        "load went on after the kill: {}",
        after.len()
    );
    assert!(
        after.iter().all(|(.., s)| *s == StatusCode::OK),
        "no request failed once the service had seen the kill"
    );
    let late = failed.iter().filter(|(t, ..)| *t > killed_at).count();
    eprintln!(
        "CLIENT KILL under load: {} requests, {} failed with 503 ({late} of them started after \
         the kill returned, within {:?}), recovered {:?} after the kill, then {} requests all 200",
        log.len(),
        failed.len(),
        failed
            .iter()
            .map(|(t, ..)| t.saturating_duration_since(killed_at))
            .max(),
        recovered - killed_at,
        after.len()
    );
}

#[actix_web::test]
async fn a_redis_that_wants_a_password_we_do_not_send_gives_503s_logged_once() {
    let server = RedisServer::start();
    config_set(&mut server.connection(), "requirepass", "letmein-7f3a");
    let (logs, _guard) = LogCapture::start();
    let app = default_app(&server).await;
    for uri in [
        "/counter",
        "/login?user=ann",
        "/counter",
        "/kv/set?key=a&value=b",
    ] {
        let reply = send(&app, get(uri, None).to_request()).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        assert_eq!(reply.text(), "Service Unavailable");
        reply.assert_no_cookie(uri);
    }
    let errors = logs.lines_at("ERROR");
    assert_eq!(errors.len(), 1, "the outage is logged once: {errors:#?}");
    assert!(
        errors[0].contains("NOAUTH"),
        "the cause is named: {}",
        errors[0]
    );

    // The password is removed: the next request succeeds, and the recovery is logged.
    config_set(
        &mut connection_with_password(&server, "letmein-7f3a"),
        "requirepass",
        "",
    );
    let reply = send(&app, get("/counter", None).to_request()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(
        logs.lines_at("INFO")
            .iter()
            .any(|l| l.contains("reachable again")),
        "{}",
        logs.text()
    );
}

#[actix_web::test]
async fn a_wrong_password_is_a_503_and_never_reaches_the_logs() {
    const WRONG: &str = "wrong-horse-battery-9c1d";
    let server = RedisServer::start();
    config_set(&mut server.connection(), "requirepass", "right-one");
    let (logs, _guard) = LogCapture::start();
    let config = RedisConfig::new(format!("redis://app:{WRONG}@127.0.0.1:{}", server.port()));
    let engine = engine(config.clone().password(WRONG)).await;
    let app = test_app(SessionMiddleware::new(engine.clone(), Key::generate())).await;
    for _ in 0..3 {
        let reply = send(&app, get("/counter", None).to_request()).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let errors = logs.lines_at("ERROR");
    assert_eq!(errors.len(), 1, "logged once: {errors:#?}");
    let text = logs.text();
    assert!(
        text.contains("WRONGPASS") || text.to_lowercase().contains("auth"),
        "the cause is named: {text}"
    );
    assert!(!text.contains(WRONG), "the password leaked into the log");
    for shown in [format!("{config:?}"), format!("{engine:?}")] {
        assert!(!shown.contains(WRONG), "{shown}");
    }
}

#[actix_web::test]
async fn a_password_set_live_gives_503s_until_it_is_removed() {
    let server = RedisServer::start();
    let app = default_app(&server).await;
    let mut visitor = Visitor::default();
    counter_requests_all_succeed(&app, &mut visitor, 2, "before the password").await;

    // A password set live, and connections dropped: ours must authenticate again, and cannot.
    let mut admin = server.connection();
    config_set(&mut admin, "requirepass", "s3t-live");
    client_kill_normal(&mut connection_with_password(&server, "s3t-live"));
    for i in 0..5 {
        let reply = visitor.get(&app, "/counter").await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "request {i}: {}",
            reply.text()
        );
    }
    config_set(
        &mut connection_with_password(&server, "s3t-live"),
        "requirepass",
        "",
    );
    let reply = visitor.get(&app, "/counter").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json()["counter"],
        3,
        "the session survived the outage"
    );
}

#[actix_web::test]
async fn over_maxmemory_writes_get_503_while_reads_and_logouts_keep_working() {
    let server = RedisServer::start();
    // Session limits far above what Redis may hold, so that only `maxmemory` stops the writes.
    let mw = SessionMiddleware::builder(
        engine(RedisConfig::new(server.url())).await,
        Key::generate(),
    )
    .max_keys(100_000)
    .max_session_bytes(64 << 20)
    .build()
    .expect("valid session settings");
    let app = test_app(mw).await;
    let mut visitor = Visitor::default();
    assert_eq!(
        visitor.get(&app, "/login?user=ann").await.status,
        StatusCode::OK
    );

    let used = server.info_field("memory", "used_memory");
    let limit = used + 1024 * 1024;
    let mut admin = server.connection();
    config_set(&mut admin, "maxmemory-policy", "noeviction");
    config_set(&mut admin, "maxmemory", &limit.to_string());

    // 30 KB values into the existing session: well past the limit if nothing stopped them.
    let value = "x".repeat(30_000);
    let mut statuses = Vec::new();
    let mut peak = 0;
    for i in 0..100 {
        let reply = visitor
            .get(&app, &format!("/kv/set?key=k{i}&value={value}"))
            .await;
        statuses.push(reply.status);
        peak = peak.max(server.info_field("memory", "used_memory"));
    }
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::SERVICE_UNAVAILABLE),
        "{statuses:?}"
    );
    assert!(refused >= 50, "writes were refused: {statuses:?}");
    // Redis lets a write through whenever it is back under the limit (its buffers shrink
    // and grow), but never one once it is over: it stays within one write of the limit,
    // where 100 unrefused writes would have taken it 2 MB past.
    assert!(
        peak <= limit + 64 * 1024,
        "Redis stayed at its limit: peak {peak}, maxmemory {limit}"
    );

    // Redis's usage moves around its limit as buffers grow and shrink: put the limit clearly
    // below it, so that every write from here on is one Redis must refuse.
    let used = server.info_field("memory", "used_memory");
    config_set(&mut admin, "maxmemory", &(used - 64 * 1024).to_string());
    // Reads still work; a new session cannot be created.
    let reply = visitor.get(&app, "/kv/get?key=k0").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["value"], json!(value));
    assert_eq!(visitor.get(&app, "/whoami").await.json()["user"], "ann");
    assert_eq!(
        send(&app, get("/counter", None).to_request()).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Logging out frees memory and is never refused.
    assert_eq!(visitor.get(&app, "/logout").await.status, StatusCode::OK);
    assert_eq!(
        visitor.get(&app, "/whoami").await.json()["user"],
        json!(null)
    );
}

#[actix_web::test]
async fn commands_still_queued_when_their_deadline_passes_are_never_sent() {
    let server = RedisServer::start();
    let backend = RedisBackend::connect(RedisConfig::new(server.url()))
        .await
        .expect("valid config");
    let config = ActorConfig {
        deadline_ms: 200,
        ..ActorConfig::default()
    };
    let engine = SessionEngine::with_config(backend, config).unwrap();
    let actor = testing::start(&engine);
    let write = |id: usize| Command {
        key: format!("session:queued{id}").into(),
        op: Op::Set(
            WriteMode::Create {
                created: 1,
                ttl: Duration::from_secs(60),
            },
            vec![("a".to_owned(), b"1".to_vec())],
        ),
        refresh: None,
        limits: Default::default(),
    };
    // One write first, so that the pool is connected and the scripts are loaded.
    actor.call(write(0)).await.expect("first write");
    let evalsha_before = evalsha_calls(&server);

    let mut calls = Box::pin(join_all((1..=5).map(|i| actor.call(write(i)))));
    // Polled once: the five commands are in the actor's queue.
    assert!(futures::poll!(&mut calls).is_pending());
    // This thread is also the actor's: blocking it (a handler that blocks its worker does
    // the same) lets the deadlines pass while the commands wait in the queue.
    std::thread::sleep(Duration::from_millis(300));
    for result in calls.await {
        assert!(matches!(result, Err(Error::Timeout(_))), "{result:?}");
    }
    actix_web::rt::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        evalsha_calls(&server),
        evalsha_before,
        "no queued command reached Redis"
    );
    let mut conn = server.connection();
    for i in 1..=5 {
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("session:queued{i}"))
            .query(&mut conn)
            .unwrap();
        assert!(!exists, "session:queued{i} was written");
    }
}
