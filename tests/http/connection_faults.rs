//! Connections lost under us, each against a real `redis-server`: connections that Redis
//! closed while idle, a restart, and `CLIENT KILL` under load.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use futures::future::join_all;

use crate::support::app::*;
use crate::support::faults::*;
use crate::support::RedisServer;

#[actix_web::test]
async fn connections_that_redis_closed_while_idle_never_fail_a_request() {
    // Redis closes connections idle for more than a second, as proxies and NATs do too.
    let server = RedisServer::start_with(&["--timeout", "1"]);
    let app = default_app(&server).await;
    let mut visitor = Visitor::default();
    counter_requests_all_succeed(&app, &mut visitor, 3, "before the pause").await;

    // Real time, as long as Redis needs: with `timeout 1` it closes a connection once its idle
    // time, counted in whole seconds, is over one second, which its cron checks about every
    // 100 ms: between 1 and about 2.1 s of idleness. Poll for it instead of sleeping 4 s.
    let idle_since = Instant::now();
    while server.info_field("clients", "connected_clients") > 1 {
        assert!(
            idle_since.elapsed() < Duration::from_secs(10),
            "Redis never closed our idle connections"
        );
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    // Only the INFO's own connection was left: Redis closed every one of ours.
    counter_requests_all_succeed(&app, &mut visitor, 20, "after Redis closed them").await;
}

#[actix_web::test]
async fn requests_after_a_pause_following_a_redis_restart_all_succeed() {
    let mut server = RedisServer::start();
    let app = default_app(&server).await;
    let mut visitor = Visitor::default();
    counter_requests_all_succeed(&app, &mut visitor, 3, "before the restart").await;

    server.restart();
    // Real time: a pooled connection idle for more than 250 ms (`IDLE_CHECK` in
    // `src/backend/redis/connections.rs`, on the std clock) is PINGed before a batch goes on
    // it, which finds the connections the restart killed. The pause lets them pass that
    // mark, as on a quiet site; it was a full second, 400 ms is enough.
    actix_web::rt::time::sleep(Duration::from_millis(400)).await;
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
    // Real time, this is load over real connections: 200 ms of it before the kill, 400 ms
    // after (the recovery takes milliseconds; the rest is the load that must all succeed).
    let killer = async {
        actix_web::rt::time::sleep(Duration::from_millis(200)).await;
        let killed = client_kill_normal(&mut server.connection());
        killed_at.set(Some(Instant::now()));
        assert!(killed >= 1, "our connections were killed");
        actix_web::rt::time::sleep(Duration::from_millis(400)).await;
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
