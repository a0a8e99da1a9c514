//! How long a session lives: a write to an expired session starts a new one, the absolute
//! lifetime ends a busy session, sessions that never logged in get the shorter idle timeout,
//! and the refresh policies decide when a read pushes the idle timer back.

use std::time::Duration;

use actix_web::cookie::Key;
use actix_web::http::StatusCode;
use circumflex_session::{MemoryBackend, SessionMiddleware};
use serde_json::{json, Value};

use crate::support::app::*;
use crate::support::RedisServer;

#[actix_web::test]
async fn a_write_to_an_expired_session_starts_a_new_one_under_a_new_id() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::builder(redis_engine(&server).await, Key::generate())
        .tti(Duration::from_secs(1))
        .build()
        .expect("valid session settings");
    let app = test_app(mw).await;

    let old = send(&app, get("/login?user=ann", None).to_request())
        .await
        .cookie();
    let old_id = only_session_id(&server);

    // Redis's own expiry of the 1 s tti (whole seconds is the finest the middleware takes),
    // which it honours to the millisecond: 1.1 s is all the sleep needs.
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    assert!(session_ids(&server).is_empty(), "Redis did not expire it");

    let write = send(
        &app,
        get("/kv/set?key=color&value=blue", Some(&old)).to_request(),
    )
    .await;
    assert_eq!(write.status, StatusCode::OK, "{}", write.text());
    let new = write.cookie();
    assert_ne!(new.value(), old.value());
    let new_id = only_session_id(&server);
    assert_ne!(new_id, old_id, "the expired id came back");
    assert!(new.value().contains(&new_id));

    assert_eq!(
        user_of(&send(&app, get("/whoami", Some(&new)).to_request()).await),
        Value::Null,
        "old data in the new session"
    );
    let color = send(&app, get("/kv/get?key=color", Some(&new)).to_request()).await;
    assert_eq!(color.json()["value"], json!("blue"));
    assert_eq!(
        user_of(&send(&app, get("/whoami", Some(&old)).to_request()).await),
        Value::Null
    );
}

#[actix_web::test]
async fn a_session_past_its_absolute_lifetime_is_gone_however_busy_it_is() {
    // The lifetime is counted from the session's creation stamp on Tokio's clock, so it runs
    // on the test's own clock: paused, and moved by hand. (On the memory backend, which needs
    // no network I/O that a paused clock would time out.)
    tokio::time::pause();
    let mw = SessionMiddleware::builder(MemoryBackend::new(), Key::generate())
        .tti(Duration::from_secs(600))
        .max_lifetime(Duration::from_secs(10))
        .build()
        .expect("valid session settings");
    let app = test_app(mw).await;

    let cookie = send(&app, get("/login?user=ann", None).to_request())
        .await
        .cookie();
    // Busy: a read every second keeps the idle timer fresh, not the lifetime. (Whole seconds:
    // 8 s after creation the stamp may read 9 s old, still inside the 10.)
    for second in 1..=8 {
        tokio::time::advance(Duration::from_secs(1)).await;
        let reply = send(&app, get("/whoami", Some(&cookie)).to_request()).await;
        assert_eq!(user_of(&reply), json!("ann"), "{second} s after login");
    }
    tokio::time::advance(Duration::from_secs(3)).await;
    let reply = send(&app, get("/whoami", Some(&cookie)).to_request()).await;
    assert_eq!(user_of(&reply), Value::Null);
    reply.assert_no_cookie("read after the lifetime ended");
}

#[actix_web::test]
async fn redis_holds_a_session_no_longer_than_what_remains_of_its_absolute_lifetime() {
    // No sleep: that Redis drops a key when its TTL runs out is Redis's job (and
    // `a_write_to_an_expired_session_starts_a_new_one_under_a_new_id` sees it do so); ours is
    // to give it the right TTL.
    let server = RedisServer::start();
    let mw = SessionMiddleware::builder(redis_engine(&server).await, Key::generate())
        .tti(Duration::from_secs(600))
        .max_lifetime(Duration::from_secs(2))
        .build()
        .expect("valid session settings");
    let app = test_app(mw).await;

    let cookie = send(&app, get("/login?user=ann", None).to_request())
        .await
        .cookie();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(session_key(&only_session_id(&server)))
        .query(&mut server.connection())
        .expect("PTTL");
    assert!(
        (1..=2000).contains(&ttl),
        "the TTL is capped by the remaining lifetime, not the 600 s tti: {ttl} ms"
    );
    assert_eq!(
        user_of(&send(&app, get("/whoami", Some(&cookie)).to_request()).await),
        json!("ann")
    );
}

#[actix_web::test]
async fn with_the_on_write_policy_a_read_does_not_refresh_the_ttl() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    // Every eligible request refreshes: no skipping within 10 % of the time to idle.
    let on_use = SessionMiddleware::builder(engine.clone(), Key::generate())
        .refresh_after_percent(0)
        .build()
        .expect("valid session settings");
    let key = Key::generate();
    let on_write = SessionMiddleware::builder(engine.clone(), key.clone())
        .ttl_refresh(circumflex_session::TtlRefresh::OnWrite)
        .refresh_after_percent(0)
        .build()
        .expect("valid session settings");
    let app_use = test_app(on_use).await;
    let app_write = test_app(on_write).await;

    let cookie = send(&app_use, get("/login?user=ann", None).to_request())
        .await
        .cookie();
    let (reply, cost) = redis_cost(
        &app_use,
        &engine,
        get("/whoami", Some(&cookie)).to_request(),
    )
    .await;
    assert_eq!(user_of(&reply), json!("ann"));
    assert_eq!(cost, 2, "on_use: HMGET and PEXPIRE");

    let cookie = send(&app_write, get("/login?user=bob", None).to_request())
        .await
        .cookie();
    let (reply, cost) = redis_cost(
        &app_write,
        &engine,
        get("/whoami", Some(&cookie)).to_request(),
    )
    .await;
    assert_eq!(user_of(&reply), json!("bob"));
    assert_eq!(cost, 1, "on_write: HMGET only");
}

#[actix_web::test]
async fn with_refresh_after_percent_a_recently_refreshed_session_skips_the_refresh() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let mw = SessionMiddleware::builder(engine.clone(), Key::generate())
        .refresh_after_percent(10)
        .build()
        .expect("valid session settings");
    let app = test_app(mw).await;
    let cookie = send(&app, get("/login?user=ann", None).to_request())
        .await
        .cookie();

    // The login's creating write set the TTL and was recorded, so reads within 10% of the time
    // to idle skip the refresh.
    for _ in 0..2 {
        let (reply, cost) =
            redis_cost(&app, &engine, get("/whoami", Some(&cookie)).to_request()).await;
        assert_eq!(user_of(&reply), json!("ann"));
        assert_eq!(cost, 1, "HMGET only, no PEXPIRE");
    }
    // Control: without the threshold the same read refreshes.
    let exact = SessionMiddleware::builder(engine.clone(), Key::generate())
        .refresh_after_percent(0)
        .build()
        .expect("valid session settings");
    let exact = test_app(exact).await;
    let cookie = send(&exact, get("/login?user=bob", None).to_request())
        .await
        .cookie();
    let (reply, cost) =
        redis_cost(&exact, &engine, get("/whoami", Some(&cookie)).to_request()).await;
    assert_eq!(user_of(&reply), json!("bob"));
    assert_eq!(cost, 2, "HMGET and PEXPIRE");
}

fn pttl(server: &RedisServer, id: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(session_key(id))
        .query(&mut server.connection())
        .unwrap()
}

#[actix_web::test]
async fn a_session_that_never_logged_in_gets_the_shorter_idle_timeout() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::builder(redis_engine(&server).await, Key::generate())
        .tti(Duration::from_secs(3600))
        .anonymous_tti(Duration::from_secs(60))
        .build()
        .expect("valid session settings");
    let app = test_app(mw).await;
    let anonymous = 50_000..=60_000;
    let logged_in = 3_590_000..=3_600_000;

    // An anonymous visitor's session lives a minute, refreshed or not.
    let mut visitor = Visitor::default();
    assert_eq!(visitor.get(&app, "/counter").await.status, StatusCode::OK);
    let id = only_session_id(&server);
    assert!(
        anonymous.contains(&pttl(&server, &id)),
        "{}",
        pttl(&server, &id)
    );
    assert_eq!(visitor.get(&app, "/counter").await.status, StatusCode::OK);
    assert!(anonymous.contains(&pttl(&server, &id)));

    // Logging in renews the session: the new id gets the full hour, and keeps it.
    assert_eq!(
        visitor.get(&app, "/login?user=ann").await.status,
        StatusCode::OK
    );
    let id = only_session_id(&server);
    assert!(
        logged_in.contains(&pttl(&server, &id)),
        "{}",
        pttl(&server, &id)
    );
    assert_eq!(visitor.get(&app, "/counter").await.json()["counter"], 3);
    assert!(logged_in.contains(&pttl(&server, &id)));

    // A visitor whose first request is the login gets the hour too.
    let mut direct = Visitor::default();
    assert_eq!(
        direct.get(&app, "/login?user=bob").await.status,
        StatusCode::OK
    );
    let ids = session_ids(&server);
    let bob = ids
        .iter()
        .find(|other| **other != id)
        .expect("bob's session");
    assert!(
        logged_in.contains(&pttl(&server, bob)),
        "{}",
        pttl(&server, bob)
    );
}
