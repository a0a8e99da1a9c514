//! HTTP-level tests: the app of `support::app` behind `SessionMiddleware`, each test against a
//! private `redis-server`.

mod support;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::cookie::{time, Cookie, Key, SameSite as CookieSameSite};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::HeaderValue;
use actix_web::http::StatusCode;
use actix_web::test::init_service;
use actix_web::web::{self};
use actix_web::{App, HttpResponse};
use circumflex_session::{
    ActorConfig, AsyncSession, CookieLifecycle, CookieSecurity, RedisBackend, RedisConfig,
    SameSite, SessionEngine, SessionMiddleware,
};
use futures::future::join_all;
use serde_json::{json, Value};
use support::app::*;
use support::RedisServer;

// ---------------------------------------------------------------------------------------------
// The whole flow
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn login_whoami_counter_renew_and_logout_work_end_to_end() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::builder(redis_engine(&server).await, Key::generate())
        .build()
        .expect("valid session settings");
    let app = test_app(mw).await;

    let anonymous = send(&app, get("/whoami", None).to_request()).await;
    assert_eq!(user_of(&anonymous), Value::Null);
    anonymous.assert_no_cookie("anonymous whoami");

    // Login without a session: renew is a no-op, the write issues the session.
    let first = send(&app, get("/login?user=ann", None).to_request()).await;
    assert_eq!(first.status, StatusCode::OK);
    let c1 = first.cookie();
    assert_eq!(c1.name(), "session");
    let id1 = only_session_id(&server);
    assert!(c1.value().contains(&id1), "signed cookies carry the id");

    let me = send(&app, get("/whoami", Some(&c1)).to_request()).await;
    assert_eq!(user_of(&me), json!("ann"));
    me.assert_no_cookie("whoami with a valid cookie");

    for expected in 1..=2 {
        let reply = send(&app, get("/counter", Some(&c1)).to_request()).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json(), json!({ "counter": expected }));
        reply.assert_no_cookie("counter on an existing session");
    }

    // A second login renews: a new id and cookie, the data moves along.
    let second = send(&app, get("/login?user=bob", Some(&c1)).to_request()).await;
    assert_eq!(second.status, StatusCode::OK);
    let c2 = second.cookie();
    assert_ne!(c2.value(), c1.value(), "renew must send a new cookie value");
    let id2 = only_session_id(&server);
    assert_ne!(id2, id1, "renew must move the session to a new id");
    assert!(c2.value().contains(&id2));

    let stale = send(&app, get("/whoami", Some(&c1)).to_request()).await;
    assert_eq!(
        user_of(&stale),
        Value::Null,
        "the pre-login cookie still works"
    );
    stale.assert_no_cookie("whoami with the pre-login cookie");

    assert_eq!(
        user_of(&send(&app, get("/whoami", Some(&c2)).to_request()).await),
        json!("bob")
    );
    let kept = send(&app, get("/counter", Some(&c2)).to_request()).await;
    assert_eq!(kept.json(), json!({ "counter": 3 }), "renew lost the data");

    let out = send(&app, get("/logout", Some(&c2)).to_request()).await;
    assert_eq!(out.status, StatusCode::OK);
    let removal = out.cookie();
    assert_eq!(removal.name(), "session");
    assert_eq!(removal.value(), "");
    assert_eq!(removal.max_age(), Some(time::Duration::ZERO));
    assert_eq!(removal.path(), Some("/"));
    assert!(
        out.raw_set_cookies[0].contains("Max-Age=0"),
        "{:?}",
        out.raw_set_cookies
    );
    assert!(session_ids(&server).is_empty(), "logout left the hash");

    let after = send(&app, get("/whoami", Some(&c2)).to_request()).await;
    assert_eq!(user_of(&after), Value::Null);
    after.assert_no_cookie("whoami after logout");
}

#[actix_web::test]
async fn a_cookie_sent_back_byte_for_byte_as_set_is_accepted() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::builder(redis_engine(&server).await, Key::generate())
        .build()
        .expect("valid session settings");
    let app = test_app(mw).await;

    let login = send(&app, get("/login?user=ann", None).to_request()).await;
    // A browser sends back exactly the `name=value` it was given, unencoded.
    let raw = login.raw_set_cookies[0]
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    assert!(raw.starts_with("session="), "{raw}");
    let reply = send(
        &app,
        get_with_header("/whoami", HeaderValue::from_str(&raw).unwrap()).to_request(),
    )
    .await;
    assert_eq!(user_of(&reply), json!("ann"));
    reply.assert_no_cookie("whoami with the raw cookie");
}

// ---------------------------------------------------------------------------------------------
// Cookie attributes
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn default_cookie_is_http_only_secure_lax_root_path_and_has_no_max_age() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::new(redis_engine(&server).await, Key::generate());
    let app = test_app(mw).await;

    let reply = send(&app, get("/login?user=ann", None).to_request()).await;
    let cookie = reply.cookie();
    let raw = &reply.raw_set_cookies[0];
    assert_eq!(cookie.name(), "session");
    assert_eq!(cookie.http_only(), Some(true), "{raw}");
    assert_eq!(cookie.secure(), Some(true), "{raw}");
    assert_eq!(cookie.same_site(), Some(CookieSameSite::Lax), "{raw}");
    assert_eq!(cookie.path(), Some("/"), "{raw}");
    assert_eq!(cookie.domain(), None, "{raw}");
    assert_eq!(cookie.max_age(), None, "browser-session cookie: {raw}");
    assert!(cookie.expires().is_none(), "browser-session cookie: {raw}");
}

#[actix_web::test]
async fn configured_cookie_attributes_are_sent_and_the_removal_cookie_keeps_path_and_domain() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::builder(redis_engine(&server).await, Key::generate())
        .cookie_name("sid")
        .cookie_secure(false)
        .cookie_same_site(SameSite::Strict)
        .cookie_path("/app")
        .cookie_domain("example.com")
        .cookie_lifecycle(CookieLifecycle::Persistent)
        .tti(Duration::from_secs(600))
        .build()
        .expect("valid session settings");
    let app = init_service(
        App::new()
            .wrap(mw)
            .service(web::scope("/app").configure(routes)),
    )
    .await;

    let reply = send(&app, get("/app/login?user=ann", None).to_request()).await;
    let cookie = reply.cookie();
    let raw = &reply.raw_set_cookies[0];
    assert_eq!(cookie.name(), "sid", "{raw}");
    assert_ne!(cookie.secure(), Some(true), "secure(false): {raw}");
    assert!(!raw.contains("Secure"), "{raw}");
    assert_eq!(cookie.http_only(), Some(true), "{raw}");
    assert_eq!(cookie.same_site(), Some(CookieSameSite::Strict), "{raw}");
    assert_eq!(cookie.path(), Some("/app"), "{raw}");
    assert_eq!(cookie.domain(), Some("example.com"), "{raw}");
    assert_eq!(
        cookie.max_age(),
        Some(time::Duration::seconds(600)),
        "persistent cookie: Max-Age = tti: {raw}"
    );

    // The session is found under the configured name only.
    let mine = send(&app, get("/app/whoami", Some(&cookie)).to_request()).await;
    assert_eq!(user_of(&mine), json!("ann"));
    let renamed = Cookie::new("session", cookie.value().to_owned());
    let wrong_name = send(&app, get("/app/whoami", Some(&renamed)).to_request()).await;
    assert_eq!(user_of(&wrong_name), Value::Null);

    // A persistent cookie's Max-Age follows the refreshed idle timer, so a read re-sends it.
    let refreshed = mine.cookie();
    assert_eq!(
        refreshed.value(),
        cookie.value(),
        "same session, same value"
    );
    assert_eq!(refreshed.max_age(), Some(time::Duration::seconds(600)));

    let out = send(&app, get("/app/logout", Some(&cookie)).to_request()).await;
    let removal = out.cookie();
    let raw = &out.raw_set_cookies[0];
    assert_eq!(removal.name(), "sid", "{raw}");
    assert_eq!(removal.value(), "", "{raw}");
    assert_eq!(removal.max_age(), Some(time::Duration::ZERO), "{raw}");
    assert_eq!(removal.path(), Some("/app"), "{raw}");
    assert_eq!(removal.domain(), Some("example.com"), "{raw}");
}

#[actix_web::test]
async fn private_cookies_work_and_do_not_show_the_session_id() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::builder(redis_engine(&server).await, Key::generate())
        .cookie_security(CookieSecurity::Private)
        .build()
        .expect("valid session settings");
    let app = test_app(mw).await;

    let login = send(&app, get("/login?user=ann", None).to_request()).await;
    let cookie = login.cookie();
    let id = only_session_id(&server);
    assert!(
        !cookie.value().contains(&id),
        "the encrypted cookie shows the id: {}",
        cookie.value()
    );
    assert!(!login.raw_set_cookies[0].contains(&id));

    let me = send(&app, get("/whoami", Some(&cookie)).to_request()).await;
    assert_eq!(user_of(&me), json!("ann"));
    me.assert_no_cookie("read with a private cookie");

    let at = cookie.value().len() / 2;
    let tampered = Cookie::new("session", flip_char(cookie.value(), at));
    let forged = send(&app, get("/whoami", Some(&tampered)).to_request()).await;
    assert_eq!(user_of(&forged), Value::Null);
}

// ---------------------------------------------------------------------------------------------
// Key rotation
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn a_cookie_signed_with_an_old_key_is_accepted_after_rotation() {
    let server = RedisServer::start();
    let old = Key::generate();
    let new = Key::generate();

    let before = test_app(SessionMiddleware::new(
        redis_engine(&server).await,
        old.clone(),
    ))
    .await;
    let rotated = test_app(
        SessionMiddleware::builder(redis_engine(&server).await, new.clone())
            .old_key(old.clone())
            .build()
            .expect("valid session settings"),
    )
    .await;
    let new_only = test_app(SessionMiddleware::new(
        redis_engine(&server).await,
        new.clone(),
    ))
    .await;

    let old_cookie = send(&before, get("/login?user=ann", None).to_request())
        .await
        .cookie();

    let me = send(&rotated, get("/whoami", Some(&old_cookie)).to_request()).await;
    assert_eq!(user_of(&me), json!("ann"), "old key no longer verifies");
    // The first use re-signs the cookie with the new key, same session, so it survives the
    // old key's retirement.
    let resigned = me.cookie();
    assert_ne!(resigned.value(), old_cookie.value());
    assert_eq!(
        user_of(&send(&new_only, get("/whoami", Some(&resigned)).to_request()).await),
        json!("ann"),
        "the re-signed cookie verifies with the new key alone"
    );
    let count = send(&rotated, get("/counter", Some(&old_cookie)).to_request()).await;
    assert_eq!(count.json(), json!({ "counter": 1 }));

    // Control: without `.old_key` the same cookie is no session.
    let unknown = send(&new_only, get("/whoami", Some(&old_cookie)).to_request()).await;
    assert_eq!(user_of(&unknown), Value::Null);

    // New cookies are signed with the new key.
    let new_cookie = send(
        &rotated,
        get("/login?user=bob", Some(&old_cookie)).to_request(),
    )
    .await
    .cookie();
    assert_eq!(
        user_of(&send(&new_only, get("/whoami", Some(&new_cookie)).to_request()).await),
        json!("bob")
    );
    assert_eq!(
        user_of(&send(&before, get("/whoami", Some(&new_cookie)).to_request()).await),
        Value::Null,
        "a new cookie verified with the old key alone"
    );
}

// ---------------------------------------------------------------------------------------------
// No cookie unless something changed
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn a_read_only_visitor_without_a_cookie_gets_no_cookie_and_costs_no_redis() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let mw = SessionMiddleware::new(engine.clone(), Key::generate());
    let app = test_app(mw).await;

    for uri in ["/whoami", "/kv/get?key=color", "/logout", "/untouched"] {
        let reply = send(&app, get(uri, None).to_request()).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.text());
        reply.assert_no_cookie(uri);
    }
    assert_eq!(engine.stats().commands, 0, "no session, no store traffic");
    assert!(session_ids(&server).is_empty());
}

#[actix_web::test]
async fn a_visitor_with_a_valid_cookie_who_only_reads_gets_no_cookie() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::new(redis_engine(&server).await, Key::generate());
    let app = test_app(mw).await;

    let cookie = send(&app, get("/login?user=ann", None).to_request())
        .await
        .cookie();
    for uri in [
        "/whoami",
        "/kv/get?key=user",
        "/kv/get?key=missing",
        "/plain",
    ] {
        let reply = send(&app, get(uri, Some(&cookie)).to_request()).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.text());
        reply.assert_no_cookie(uri);
    }
    let value = send(&app, get("/kv/get?key=user", Some(&cookie)).to_request()).await;
    assert_eq!(value.json()["value"], json!("ann"));
}

#[actix_web::test]
async fn every_extraction_in_one_request_shares_one_session_and_its_cookie() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::new(redis_engine(&server).await, Key::generate());
    let app = test_app(mw).await;

    let reply = send(&app, get("/twice", None).to_request()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.json(), json!({ "seen": "teal", "same_id": true }));
    assert_eq!(
        reply.raw_set_cookies.len(),
        1,
        "{:?}",
        reply.raw_set_cookies
    );
    assert_eq!(session_ids(&server).len(), 1);

    let cookie = reply.cookie();
    let value = send(&app, get("/kv/get?key=color", Some(&cookie)).to_request()).await;
    assert_eq!(value.json()["value"], json!("teal"));
}

// ---------------------------------------------------------------------------------------------
// Distrust of client input
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn a_tampered_cookie_is_a_new_visitor_and_its_id_is_never_adopted() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::new(redis_engine(&server).await, Key::generate());
    let app = test_app(mw).await;

    let cookie = send(&app, get("/login?user=ann", None).to_request())
        .await
        .cookie();
    let real_id = only_session_id(&server);
    let value = cookie.value();
    let at = value.find(&real_id).expect("signed cookies carry the id");

    // One character changed: in the id (a forged id with the genuine MAC), and in the MAC.
    let forged_id_value = flip_char(value, at + real_id.len() - 1);
    let forged_id = forged_id_value[at..at + real_id.len()].to_owned();
    assert_ne!(forged_id, real_id);
    let forged_mac_value = flip_char(value, 3);

    for tampered_value in [forged_id_value, forged_mac_value] {
        assert_ne!(tampered_value, value);
        let tampered = Cookie::new("session", tampered_value.clone());

        let read = send(&app, get("/whoami", Some(&tampered)).to_request()).await;
        assert_eq!(user_of(&read), Value::Null, "{tampered_value}");
        read.assert_no_cookie("whoami with a tampered cookie");

        let before: BTreeSet<String> = session_ids(&server).into_iter().collect();
        let write = send(&app, get("/counter", Some(&tampered)).to_request()).await;
        assert_eq!(write.status, StatusCode::OK);
        assert_eq!(
            write.json(),
            json!({ "counter": 1 }),
            "wrote into a session"
        );
        let issued = write.cookie();
        assert_ne!(issued.value(), tampered_value);

        let after: BTreeSet<String> = session_ids(&server).into_iter().collect();
        let new: Vec<&String> = after.difference(&before).collect();
        assert_eq!(new.len(), 1, "exactly one new session: {after:?}");
        let new_id = new[0];
        assert_ne!(new_id, &real_id);
        assert_ne!(new_id, &forged_id, "the tampered id was adopted");
        assert!(!after.contains(&forged_id), "the forged id reached Redis");
        assert!(issued.value().contains(new_id.as_str()));
    }

    // The genuine session is untouched.
    let me = send(&app, get("/whoami", Some(&cookie)).to_request()).await;
    assert_eq!(user_of(&me), json!("ann"));
}

#[actix_web::test]
async fn garbage_cookies_never_panic_and_count_as_no_session() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::new(redis_engine(&server).await, Key::generate());
    let app = test_app(mw).await;

    let forged_shape = format!(
        "{}0123456789abcdef0123456789abcdef.1700000000",
        "A".repeat(43) + "="
    );
    let mut headers: Vec<HeaderValue> = [
        "session=".to_owned(),
        "session".to_owned(),
        "session=\"\"".to_owned(),
        format!("session={}", "A".repeat(8 * 1024)),
        format!("session={}", "%2B".repeat(8 * 1024 / 3)),
        format!("session={}", "ab=/+.".repeat(8 * 1024 / 6)),
        "session=%C3%28%FF%FE".to_owned(),
        "session=%E2%82%AC%F0%9F%8D%AA%00".to_owned(),
        "session=%".to_owned(),
        "session=%%%zz%g".to_owned(),
        "session==".to_owned(),
        "session=======".to_owned(),
        "session=a=b=c==d===".to_owned(),
        format!("session={}", "=".repeat(4096)),
        "session=x; session=y; session=".to_owned(),
        "; ; =; session=;;".to_owned(),
        format!("session={forged_shape}"),
    ]
    .iter()
    .map(|h| HeaderValue::from_str(h).unwrap())
    .collect();
    // Bytes that are not even visible ASCII.
    headers.push(HeaderValue::from_bytes(b"session=\xc3\xa9\xff\xfe").unwrap());

    for (n, header) in headers.into_iter().enumerate() {
        let label = format!("{:.60?}", header);
        let read = send(
            &app,
            get_with_header("/whoami", header.clone()).to_request(),
        )
        .await;
        assert_eq!(user_of(&read), Value::Null, "{label}");
        read.assert_no_cookie(&label);

        let write = send(&app, get_with_header("/counter", header).to_request()).await;
        assert_eq!(write.status, StatusCode::OK, "{label}: {}", write.text());
        assert_eq!(write.json(), json!({ "counter": 1 }), "{label}");
        let issued = write.cookie();
        assert_eq!(session_ids(&server).len(), n + 1, "{label}");

        // The issued cookie is a real session.
        let again = send(&app, get("/counter", Some(&issued)).to_request()).await;
        assert_eq!(again.json(), json!({ "counter": 2 }), "{label}");
    }
}

// ---------------------------------------------------------------------------------------------
// Expiry
// ---------------------------------------------------------------------------------------------

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

    actix_web::rt::time::sleep(Duration::from_millis(2100)).await;
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

// ---------------------------------------------------------------------------------------------
// Cost
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn a_request_that_does_not_use_the_session_costs_no_redis_command_even_with_a_cookie() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let mw = SessionMiddleware::new(engine.clone(), Key::generate());
    let app = test_app(mw).await;

    // Warm up: the pool has a connection and the scripts are loaded.
    let cookie = send(&app, get("/login?user=ann", None).to_request())
        .await
        .cookie();

    let stats = engine.stats();
    let c0 = server.commands_processed();
    for uri in ["/plain", "/untouched"] {
        let reply = send(&app, get(uri, Some(&cookie)).to_request()).await;
        assert_eq!(reply.status, StatusCode::OK);
        reply.assert_no_cookie(uri);
    }
    let c1 = server.commands_processed();
    let c2 = server.commands_processed();
    assert_eq!(engine.stats(), stats, "the engine saw session commands");
    // Each `commands_processed` is itself counted (an INFO, plus whatever the client sends on
    // connect); c1..c2 measures exactly that overhead, with nothing in between.
    let overhead = c2 - c1;
    assert_eq!(c1 - c0, overhead, "Redis saw commands from the requests");

    // Control: the same measurement does see a request that reads the session.
    let reply = send(&app, get("/whoami", Some(&cookie)).to_request()).await;
    assert_eq!(user_of(&reply), json!("ann"));
    let c3 = server.commands_processed();
    assert!(c3 - c2 > overhead, "a session read went unnoticed");
    assert!(engine.stats().commands > stats.commands);
}

// ---------------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn parallel_writes_with_one_cookie_lose_no_update() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let mw = SessionMiddleware::new(engine.clone(), Key::generate());
    let app = test_app(mw).await;

    let cookie = send(&app, get("/login?user=ann", None).to_request())
        .await
        .cookie();
    let id = only_session_id(&server);

    for round in 0..20 {
        let requests = (0..4).map(|i| {
            let uri = format!("/kv/set?key=r{round}k{i}&value=v{round}-{i}");
            send(&app, get(&uri, Some(&cookie)).to_request())
        });
        for reply in join_all(requests).await {
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
            reply.assert_no_cookie("write to an existing session");
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
            let uri = format!("/kv/get?key=r{round}k{i}");
            let reply = send(&app, get(&uri, Some(&cookie)).to_request()).await;
            if reply.json()["value"] != json!(format!("v{round}-{i}")) {
                lost.push(format!("r{round}k{i}"));
            }
        }
    }
    assert!(lost.is_empty(), "lost updates: {lost:?}");
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(format!("session:{id}"))
        .query(&mut server.connection())
        .unwrap();
    let user_fields = fields.iter().filter(|f| !f.starts_with('\0')).count();
    assert_eq!(user_fields, 80 + 1, "80 writes and `user`: {fields:?}");
    assert_eq!(
        user_of(&send(&app, get("/whoami", Some(&cookie)).to_request()).await),
        json!("ann")
    );
}

#[actix_web::test]
async fn parallel_increments_with_one_cookie_are_all_counted() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::new(redis_engine(&server).await, Key::generate());
    let app = test_app(mw).await;

    let cookie = send(&app, get("/counter", None).to_request())
        .await
        .cookie();
    for round in 0..20 {
        let requests = (0..4).map(|_| send(&app, get("/counter", Some(&cookie)).to_request()));
        let mut seen: Vec<i64> = join_all(requests)
            .await
            .iter()
            .map(|r| r.json()["counter"].as_i64().expect("a number"))
            .collect();
        seen.sort();
        let first = 2 + 4 * round;
        assert_eq!(
            seen,
            (first..first + 4).collect::<Vec<_>>(),
            "round {round}"
        );
    }
    let last = send(&app, get("/counter", Some(&cookie)).to_request()).await;
    assert_eq!(last.json(), json!({ "counter": 1 + 80 + 1 }));
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

async fn engine_at(url: String) -> SessionEngine {
    let backend = RedisBackend::connect(RedisConfig::new(url))
        .await
        .expect("the pool connects lazily");
    SessionEngine::with_config(
        backend,
        ActorConfig {
            deadline_ms: 500,
            ..Default::default()
        },
    )
    .unwrap()
}

fn assert_opaque_503(reply: &Reply, port: u16) {
    assert_eq!(
        reply.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        reply.text()
    );
    let body = reply.text();
    assert_eq!(body, "Service Unavailable");
    for secret in [
        port.to_string().as_str(),
        "redis",
        "127.0.0.1",
        "refused",
        "timed out",
    ] {
        assert!(
            !body.to_lowercase().contains(secret),
            "{body:?} leaks {secret}"
        );
    }
}

#[actix_web::test]
async fn a_session_route_answers_an_opaque_503_when_nothing_listens_at_the_redis_port() {
    let port = support::unused_port();
    let engine = engine_at(format!("redis://127.0.0.1:{port}")).await;
    let app = test_app(SessionMiddleware::new(engine, Key::generate())).await;

    let reply = send(&app, get("/counter", None).to_request()).await;
    assert_opaque_503(&reply, port);
    let reply = send(&app, get("/login?user=ann", None).to_request()).await;
    assert_opaque_503(&reply, port);

    // On demand: what does not need the store still works.
    let anonymous = send(&app, get("/whoami", None).to_request()).await;
    assert_eq!(user_of(&anonymous), Value::Null);
    assert_eq!(
        send(&app, get("/plain", None).to_request()).await.status,
        StatusCode::OK
    );
}

/// The middleware sends a cookie only when the request issued a session; a first write that
/// Redis never received issued none, so its error response must not hand out an id that names
/// nothing.
#[actix_web::test]
async fn a_first_write_that_fails_sends_no_cookie_for_the_session_it_could_not_store() {
    let port = support::unused_port();
    let engine = engine_at(format!("redis://127.0.0.1:{port}")).await;
    let app = test_app(SessionMiddleware::new(engine, Key::generate())).await;

    for uri in ["/counter", "/login?user=ann", "/kv/set?key=a&value=b"] {
        let reply = send(&app, get(uri, None).to_request()).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{uri}");
        reply.assert_no_cookie(&format!("{uri} failed with 503"));
    }
}

#[actix_web::test]
async fn a_session_route_answers_an_opaque_503_when_redis_never_answers() {
    // Accepts connections (the kernel does) but never speaks: only the deadline ends the wait.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let engine = engine_at(format!("redis://127.0.0.1:{port}")).await;
    let app = test_app(SessionMiddleware::new(engine.clone(), Key::generate())).await;

    let reply = send(&app, get("/counter", None).to_request()).await;
    assert_opaque_503(&reply, port);
    drop(silent);
}

#[actix_web::test]
async fn a_handler_using_the_session_without_the_middleware_gets_a_500() {
    let app = init_service(App::new().configure(routes)).await;

    for uri in ["/whoami", "/counter", "/untouched"] {
        let reply = send(&app, get(uri, None).to_request()).await;
        assert_eq!(
            reply.status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{uri} ran with a detached session: {}",
            reply.text()
        );
        assert_eq!(reply.text(), "Internal Server Error", "{uri}");
        reply.assert_no_cookie(uri);
    }
    assert_eq!(
        send(&app, get("/plain", None).to_request()).await.status,
        StatusCode::OK
    );
}

#[actix_web::test]
async fn an_oversized_value_is_refused_by_set_and_nothing_is_stored() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::builder(redis_engine(&server).await, Key::generate())
        .max_value_bytes(64)
        .build()
        .expect("valid session settings");
    let app = test_app(mw).await;

    // No session yet: the refusal creates none.
    let refused = send(&app, get("/big?bytes=100", None).to_request()).await;
    assert_eq!(
        refused.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        refused.text()
    );
    // JSON adds the two quotes.
    assert_eq!(
        refused.json(),
        json!({ "key": "note", "size": 102, "max": 64 })
    );
    refused.assert_no_cookie("refused first write");
    assert!(
        session_ids(&server).is_empty(),
        "a refused write created a session"
    );

    // With a session: the field stays absent.
    let cookie = send(&app, get("/login?user=ann", None).to_request())
        .await
        .cookie();
    let id = only_session_id(&server);
    let refused = send(&app, get("/big?bytes=63", Some(&cookie)).to_request()).await;
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(refused.json()["size"], json!(65));
    let stored: bool = redis::cmd("HEXISTS")
        .arg(format!("session:{id}"))
        .arg("note")
        .query(&mut server.connection())
        .unwrap();
    assert!(!stored, "the oversized value reached Redis");

    // Control: exactly the limit is accepted.
    let fits = send(&app, get("/big?bytes=62", Some(&cookie)).to_request()).await;
    assert_eq!(fits.status, StatusCode::OK, "{}", fits.text());
    let stored: Option<String> = redis::cmd("HGET")
        .arg(format!("session:{id}"))
        .arg("note")
        .query(&mut server.connection())
        .unwrap();
    assert_eq!(stored, Some(format!("\"{}\"", "x".repeat(62))));
}

// ---------------------------------------------------------------------------------------------
// Lifetime and refresh policies
// ---------------------------------------------------------------------------------------------

#[actix_web::test]
async fn a_session_past_its_absolute_lifetime_is_gone_however_busy_it_is() {
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
        .arg(format!("session:{}", only_session_id(&server)))
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
    std::thread::sleep(Duration::from_millis(3100));
    let reply = send(&app, get("/whoami", Some(&cookie)).to_request()).await;
    assert_eq!(user_of(&reply), Value::Null);
    reply.assert_no_cookie("read after the lifetime ended");
}

/// Counts the Redis commands a request costs, through the engine's stats.
async fn redis_cost<S, R, B>(app: &S, engine: &SessionEngine, request: R) -> (Reply, u64)
where
    S: Service<R, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let before = engine.stats().redis_commands;
    let reply = send(app, request).await;
    (reply, engine.stats().redis_commands - before)
}

#[actix_web::test]
async fn with_the_on_write_policy_a_read_does_not_refresh_the_ttl() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let on_use = SessionMiddleware::new(engine.clone(), Key::generate());
    let key = Key::generate();
    let on_write = SessionMiddleware::builder(engine.clone(), key.clone())
        .ttl_refresh(circumflex_session::TtlRefresh::OnWrite)
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
    let exact = SessionMiddleware::new(engine.clone(), Key::generate());
    let exact = test_app(exact).await;
    let cookie = send(&exact, get("/login?user=bob", None).to_request())
        .await
        .cookie();
    let (reply, cost) =
        redis_cost(&exact, &engine, get("/whoami", Some(&cookie)).to_request()).await;
    assert_eq!(user_of(&reply), json!("bob"));
    assert_eq!(cost, 2, "HMGET and PEXPIRE");
}

// ---------------------------------------------------------------------------------------------
// The rest of the handle API, through the middleware
// ---------------------------------------------------------------------------------------------

async fn tour(session: AsyncSession) -> Answer {
    assert_eq!(session.id(), None, "no session before the first write");
    session
        .set_many([("a", json!(1)), ("b", json!("two")), ("c", json!([3]))])
        .await?;
    let id = session.id();
    let mut entries: Vec<(String, Value)> = session.entries::<Value>().await?.into_iter().collect();
    entries.sort_by(|x, y| x.0.cmp(&y.0));
    let first_nx = session.set_if_absent("a", &json!(100)).await?;
    let second_nx = session.set_if_absent("d", &json!(4)).await?;
    let removed = session.remove_many(&["a", "b", "zzz"]).await?;
    let removed_again = session.remove("a").await?;
    let left = session.mget::<Value>(&["a", "b", "c", "d"]).await?;
    let touched = session.touch().await?;
    // The handle is `Send`: it works from a spawned task on another thread.
    // (The worker must stay free to run its actor, so wait for the thread without blocking.)
    let handle = session.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let value =
            actix_web::rt::System::new().block_on(async move { handle.get::<Value>("c").await });
        let _ = tx.send(value);
    });
    let from_thread = rx.await.expect("the thread answers")?;
    Ok(HttpResponse::Ok().json(json!({
        "id_is_set": id.is_some(),
        "entries": entries,
        "nx": [first_nx, second_nx],
        "removed": [removed, u64::from(removed_again)],
        "left": left,
        "touched": touched,
        "from_thread": from_thread,
    })))
}

#[actix_web::test]
async fn every_handle_method_works_through_the_middleware() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::new(redis_engine(&server).await, Key::generate());
    let app = init_service(
        App::new()
            .wrap(mw)
            .route("/tour", web::get().to(tour))
            .configure(routes),
    )
    .await;
    let reply = send(&app, get("/tour", None).to_request()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({
            "id_is_set": true,
            "entries": [["a", 1], ["b", "two"], ["c", [3]]],
            "nx": [false, true],
            "removed": [2, 0],
            "left": [null, null, [3], 4],
            "touched": true,
            "from_thread": [3],
        })
    );
    reply.cookie();
}

#[actix_web::test]
async fn the_memory_backend_serves_the_same_flow_without_redis() {
    let mw = SessionMiddleware::new(circumflex_session::MemoryBackend::new(), Key::generate());
    let app = test_app(mw).await;
    let cookie = send(&app, get("/login?user=ann", None).to_request())
        .await
        .cookie();
    assert_eq!(
        user_of(&send(&app, get("/whoami", Some(&cookie)).to_request()).await),
        json!("ann")
    );
    let count = send(&app, get("/counter", Some(&cookie)).to_request()).await;
    assert_eq!(count.json(), json!({ "counter": 1 }));
    let out = send(&app, get("/logout", Some(&cookie)).to_request()).await;
    assert_eq!(out.cookie().max_age(), Some(time::Duration::ZERO));
    assert_eq!(
        user_of(&send(&app, get("/whoami", Some(&cookie)).to_request()).await),
        Value::Null
    );
}
