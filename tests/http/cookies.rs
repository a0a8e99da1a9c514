//! The session cookie: its attributes, private (encrypted) cookies, key rotation, no cookie
//! unless something changed, and distrust of whatever the client sends back.

use std::collections::BTreeSet;
use std::time::Duration;

use actix_web::cookie::{time, Cookie, Key, SameSite as CookieSameSite};
use actix_web::http::header::HeaderValue;
use actix_web::http::StatusCode;
use actix_web::test::init_service;
use actix_web::web::{self};
use actix_web::App;
use circumflex_session::{CookieLifecycle, CookieSecurity, SameSite, SessionMiddleware};
use serde_json::{json, Value};

use crate::support::app::*;
use crate::support::RedisServer;

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
        // Every read refreshes, so that every read re-sends the cookie (below).
        .refresh_after_percent(0)
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
