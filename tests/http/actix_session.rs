//! `ActixSessionStore` behind actix-session's own `SessionMiddleware`, each test against a
//! private `redis-server`: what a round trip leaves in Redis, the lost-update scenario, saves
//! that write only what their request changed, renew, purge, `clear()`, limits, Redis down,
//! and the move to our own middleware. actix-session's `RedisSessionStore` runs one scenario
//! too, to show what the diffing buys.
//!
//! Why this file is long: eleven scenarios of one concern (the adapter behind actix-session's
//! middleware), each a full HTTP exchange with its look into Redis; the app and its handlers
//! are apart, in `actix_session/app.rs`.

mod app;

use std::collections::HashMap;
use std::time::Duration;

use ::actix_session::storage::RedisSessionStore;
use actix_http::Request;
use actix_web::body::MessageBody;
use actix_web::cookie::Key;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use circumflex_session::{ActixSessionStore, Config, CookieSecurity, SessionMiddleware};
use futures::future::join_all;
use serde_json::{json, Value};

use self::app::{app, Gate};
use crate::support::app::*;
use crate::support::RedisServer;

/// The fields of the session hash with this id, metadata included.
fn hash(server: &RedisServer, id: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL")
        .arg(session_key(id))
        .query(&mut server.connection())
        .expect("HGETALL")
}

/// The user fields of the session hash with this id, sorted.
fn user_fields(server: &RedisServer, id: &str) -> Vec<(String, String)> {
    let mut fields: Vec<_> = hash(server, id)
        .into_iter()
        .filter(|(k, _)| !k.starts_with('\0'))
        .collect();
    fields.sort();
    fields
}

fn field(key: &str, value: &str) -> (String, String) {
    (key.to_owned(), json!(value).to_string())
}

fn value_of(reply: &Reply) -> Value {
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.text());
    reply.json()["value"].clone()
}

#[actix_web::test]
async fn a_round_trip_through_actix_session_leaves_one_hash_in_our_layout() {
    let server = RedisServer::start();
    let store = ActixSessionStore::new(redis_engine(&server).await);
    let app = app(store, Key::generate(), Gate::of(1)).await;

    let first = send(&app, get("/insert?key=user&value=ann", None).to_request()).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let cookie = first.cookie();
    let id = only_session_id(&server);
    let stored = hash(&server, &id);
    assert_eq!(stored.get("user"), Some(&json!("ann").to_string()));
    assert!(stored.contains_key("\0created"), "{stored:?}");
    assert!(!stored.contains_key(ActixSessionStore::BASELINE));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(session_key(&id))
        .query(&mut server.connection())
        .expect("PTTL");
    assert!(
        (86_300_000..=86_400_000).contains(&ttl),
        "actix-session's state_ttl is a day: {ttl} ms"
    );

    let read = send(&app, get("/get?key=user", Some(&cookie)).to_request()).await;
    assert_eq!(value_of(&read), json!("ann"));
    read.assert_no_cookie("a read");
    let listed = send(&app, get("/entries", Some(&cookie)).to_request()).await;
    assert_eq!(
        listed.json()["keys"],
        json!([ActixSessionStore::BASELINE, "user"]),
        "entries() shows the reserved entry"
    );

    let more = send(
        &app,
        get("/insert?key=theme&value=dark", Some(&cookie)).to_request(),
    )
    .await;
    assert_eq!(more.status, StatusCode::OK);
    let removed = send(&app, get("/remove?key=user", Some(&cookie)).to_request()).await;
    assert_eq!(removed.json()["removed"], json!(true));
    assert_eq!(only_session_id(&server), id, "updates keep the session");
    assert_eq!(user_fields(&server, &id), vec![field("theme", "dark")]);
    let gone = send(&app, get("/get?key=user", Some(&cookie)).to_request()).await;
    assert_eq!(value_of(&gone), Value::Null);
}

#[actix_web::test]
async fn parallel_writes_with_one_cookie_lose_no_update() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let app = app(
        ActixSessionStore::new(engine.clone()),
        Key::generate(),
        Gate::of(1),
    )
    .await;

    let cookie = send(&app, get("/insert?key=user&value=ann", None).to_request())
        .await
        .cookie();
    let id = only_session_id(&server);

    for round in 0..20 {
        let requests = (0..4).map(|i| {
            let uri = format!("/insert?key=r{round}k{i}&value=v{round}-{i}");
            send(&app, get(&uri, Some(&cookie)).to_request())
        });
        for reply in join_all(requests).await {
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        }
    }
    assert!(
        engine.stats().max_batch >= 2,
        "the requests never overlapped, so this test proves nothing: {:?}",
        engine.stats()
    );

    let mut lost = Vec::new();
    for round in 0..20 {
        for i in 0..4 {
            let uri = format!("/get?key=r{round}k{i}");
            let reply = send(&app, get(&uri, Some(&cookie)).to_request()).await;
            if value_of(&reply) != json!(format!("v{round}-{i}")) {
                lost.push(format!("r{round}k{i}"));
            }
        }
    }
    assert!(lost.is_empty(), "lost updates: {lost:?}");
    assert_eq!(only_session_id(&server), id);
    assert_eq!(
        user_fields(&server, &id).len(),
        80 + 1,
        "80 writes and `user`"
    );
}

/// Two requests with one cookie, both loaded before either saves (the gate holds each until
/// the other has loaded too): one removes `a`, the other changes `b`.
async fn remove_a_while_b_changes<S, B>(app: &S) -> (Value, Value)
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let seed = send(app, get("/insert?key=a&value=1", None).to_request()).await;
    let cookie = seed.cookie();
    let b = send(
        app,
        get("/insert?key=b&value=old", Some(&cookie)).to_request(),
    )
    .await;
    let cookie = b.cookies.first().cloned().unwrap_or(cookie);
    let (removal, change) = futures::join!(
        send(app, get("/sync/remove?key=a", Some(&cookie)).to_request()),
        send(
            app,
            get("/sync/insert?key=b&value=new", Some(&cookie)).to_request()
        ),
    );
    assert_eq!(removal.status, StatusCode::OK, "{}", removal.text());
    assert_eq!(change.status, StatusCode::OK, "{}", change.text());
    let a = send(app, get("/get?key=a", Some(&cookie)).to_request()).await;
    let b = send(app, get("/get?key=b", Some(&cookie)).to_request()).await;
    (value_of(&a), value_of(&b))
}

#[actix_web::test]
async fn a_save_writes_only_what_its_request_changed_so_concurrent_changes_all_hold() {
    let server = RedisServer::start();
    let store = ActixSessionStore::new(redis_engine(&server).await);
    let app = app(store, Key::generate(), Gate::of(2)).await;

    let (a, b) = remove_a_while_b_changes(&app).await;
    assert_eq!(
        a,
        Value::Null,
        "the removal was not undone by the other save"
    );
    assert_eq!(
        b,
        json!("new"),
        "the change was not overwritten by the other save"
    );
    let id = only_session_id(&server);
    assert_eq!(user_fields(&server, &id), vec![field("b", "new")]);
}

#[actix_web::test]
async fn actix_sessions_own_redis_store_loses_one_of_the_two_concurrent_changes() {
    let server = RedisServer::start();
    let store = RedisSessionStore::new(server.url())
        .await
        .expect("actix-session's RedisSessionStore connects");
    let app = app(store, Key::generate(), Gate::of(2)).await;

    let (a, b) = remove_a_while_b_changes(&app).await;
    // The whole-state save that lands last wins: either `a` is back or `b` is old again.
    assert!(
        a == json!("1") || b == json!("old"),
        "both changes held: a = {a}, b = {b}"
    );
}

#[actix_web::test]
async fn a_save_to_a_session_logged_out_since_it_loaded_starts_a_new_one_with_only_its_changes() {
    let server = RedisServer::start();
    let store = ActixSessionStore::new(redis_engine(&server).await);
    let gate = Gate::of(2);
    let app = app(store, Key::generate(), gate.clone()).await;
    let cookie = send(&app, get("/insert?key=user&value=ann", None).to_request())
        .await
        .cookie();
    let old = only_session_id(&server);

    let (write, logout) = futures::join!(
        send(
            &app,
            get("/sync/insert?key=cart&value=1&waits=2", Some(&cookie)).to_request()
        ),
        async {
            gate.wait().await; // the write has loaded the session
            let logout = send(&app, get("/purge", Some(&cookie)).to_request()).await;
            gate.wait().await;
            logout
        }
    );
    assert_eq!(logout.status, StatusCode::OK);
    assert_eq!(write.status, StatusCode::OK, "{}", write.text());
    let new_cookie = write.cookie();
    assert_ne!(new_cookie.value(), cookie.value());
    let new = only_session_id(&server);
    assert_ne!(new, old, "the logged-out id never comes back");
    assert_eq!(user_fields(&server, &new), vec![field("cart", "1")]);

    let after = send(&app, get("/get?key=user", Some(&new_cookie)).to_request()).await;
    assert_eq!(
        value_of(&after),
        Value::Null,
        "the logged-out data stayed gone"
    );
}

#[actix_web::test]
async fn renew_moves_the_data_to_a_new_id_and_the_old_cookie_finds_nothing() {
    let server = RedisServer::start();
    let store = ActixSessionStore::new(redis_engine(&server).await);
    let app = app(store, Key::generate(), Gate::of(1)).await;
    let old_cookie = send(&app, get("/insert?key=theme&value=dark", None).to_request())
        .await
        .cookie();
    let old = only_session_id(&server);

    let login = send(
        &app,
        get("/login?key=_&value=ann", Some(&old_cookie)).to_request(),
    )
    .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    let new_cookie = login.cookie();
    let new = only_session_id(&server);
    assert_ne!(new, old);
    assert_eq!(
        user_fields(&server, &new),
        vec![field("theme", "dark"), field("user", "ann")]
    );
    assert!(!hash(&server, &new).contains_key(ActixSessionStore::BASELINE));

    let stale = send(&app, get("/get?key=theme", Some(&old_cookie)).to_request()).await;
    assert_eq!(value_of(&stale), Value::Null);
    let fresh = send(&app, get("/get?key=theme", Some(&new_cookie)).to_request()).await;
    assert_eq!(value_of(&fresh), json!("dark"));
}

#[actix_web::test]
async fn purge_deletes_the_hash_and_the_old_cookie_then_has_an_empty_session() {
    let server = RedisServer::start();
    let store = ActixSessionStore::new(redis_engine(&server).await);
    let app = app(store, Key::generate(), Gate::of(1)).await;
    let cookie = send(&app, get("/insert?key=user&value=ann", None).to_request())
        .await
        .cookie();
    let old = only_session_id(&server);

    let logout = send(&app, get("/purge", Some(&cookie)).to_request()).await;
    assert_eq!(logout.status, StatusCode::OK);
    assert_eq!(logout.cookie().value(), "", "a removal cookie");
    assert!(session_ids(&server).is_empty(), "the hash is deleted");

    let after = send(&app, get("/get?key=user", Some(&cookie)).to_request()).await;
    assert_eq!(value_of(&after), Value::Null);
    let write = send(
        &app,
        get("/insert?key=cart&value=1", Some(&cookie)).to_request(),
    )
    .await;
    assert_eq!(write.status, StatusCode::OK);
    let new = only_session_id(&server);
    assert_ne!(new, old, "a write with the old cookie starts a new session");
    assert_eq!(user_fields(&server, &new), vec![field("cart", "1")]);
}

#[actix_web::test]
async fn after_clear_the_saved_state_replaces_the_session() {
    let server = RedisServer::start();
    let store = ActixSessionStore::new(redis_engine(&server).await);
    let app = app(store, Key::generate(), Gate::of(1)).await;
    let cookie = send(&app, get("/insert?key=a&value=1", None).to_request())
        .await
        .cookie();
    send(
        &app,
        get("/insert?key=b&value=2", Some(&cookie)).to_request(),
    )
    .await;
    let id = only_session_id(&server);

    let cleared = send(
        &app,
        get("/clear-then-insert?key=c&value=3", Some(&cookie)).to_request(),
    );
    assert_eq!(cleared.await.status, StatusCode::OK);
    assert_eq!(only_session_id(&server), id);
    assert_eq!(user_fields(&server, &id), vec![field("c", "3")]);
}

#[actix_web::test]
async fn a_save_past_the_limits_fails_and_writes_nothing() {
    let server = RedisServer::start();
    let mut config = Config::default();
    config.session.max_keys = 2;
    let store = ActixSessionStore::from_config(redis_engine(&server).await, &config).unwrap();
    let app = app(store, Key::generate(), Gate::of(1)).await;
    let cookie = send(&app, get("/insert?key=k1&value=1", None).to_request())
        .await
        .cookie();
    send(
        &app,
        get("/insert?key=k2&value=2", Some(&cookie)).to_request(),
    )
    .await;
    let id = only_session_id(&server);

    let third = send(
        &app,
        get("/insert?key=k3&value=3", Some(&cookie)).to_request(),
    )
    .await;
    assert_eq!(third.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        user_fields(&server, &id),
        vec![field("k1", "1"), field("k2", "2")]
    );
}

#[actix_web::test]
async fn with_redis_down_requests_fail_with_actix_sessions_500_and_work_again_after() {
    let mut server = RedisServer::start();
    // Short deadlines: a dead Redis answers nothing, and each call waits out its deadline.
    let engine = impatient_engine(&server).await;
    let app = app(ActixSessionStore::new(engine), Key::generate(), Gate::of(1)).await;
    let cookie = send(&app, get("/insert?key=user&value=ann", None).to_request())
        .await
        .cookie();

    server.kill();
    let load = send(&app, get("/get?key=user", Some(&cookie)).to_request()).await;
    assert_eq!(
        load.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "a failed load"
    );
    assert_eq!(load.text(), "", "opaque");
    let save = send(&app, get("/insert?key=user&value=bob", None).to_request()).await;
    assert_eq!(
        save.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "a failed save"
    );

    // A new, empty Redis on the same port: the old session is gone, a new one works.
    server.restart();
    let mut attempts = 0;
    let cookie = loop {
        let reply = send(&app, get("/insert?key=user&value=bob", None).to_request()).await;
        if reply.status == StatusCode::OK {
            break reply.cookie();
        }
        attempts += 1;
        assert!(attempts < 50, "the engine never recovered");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    };
    let read = send(&app, get("/get?key=user", Some(&cookie)).to_request()).await;
    assert_eq!(value_of(&read), json!("bob"));
}

#[actix_web::test]
async fn our_middleware_reads_the_sessions_the_adapter_made_but_the_adapter_not_actix_sessions_own()
{
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let key = Key::generate();
    let adapter = app(
        ActixSessionStore::new(engine.clone()),
        key.clone(),
        Gate::of(1),
    )
    .await;
    let ours = SessionMiddleware::builder(engine, key.clone())
        .cookie_name("id")
        .cookie_security(CookieSecurity::Private)
        .build()
        .unwrap();
    let ours = test_app(ours).await;

    let cookie = send(
        &adapter,
        get("/insert?key=color&value=teal", None).to_request(),
    )
    .await
    .cookie();
    let read = send(&ours, get("/kv/get?key=color", Some(&cookie)).to_request()).await;
    assert_eq!(read.json()["value"], json!("teal"), "{}", read.text());

    let theirs = RedisSessionStore::new(server.url()).await.unwrap();
    let theirs = app(theirs, key, Gate::of(1)).await;
    let old = send(
        &theirs,
        get("/insert?key=color&value=red", None).to_request(),
    )
    .await
    .cookie();
    let read = send(&adapter, get("/get?key=color", Some(&old)).to_request()).await;
    assert_eq!(value_of(&read), Value::Null, "users log in again once");
}
