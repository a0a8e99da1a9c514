//! Sessions over a request header (`id_header`, `cookie.header`), for API and mobile clients:
//! off by default, the cookie's value and rules in another place, answered in the same header,
//! never mixed up with the cookie.
//!
//! Why this file is long: ten scenarios of one feature, each on a Redis of its own (off by
//! default, opt-in, tampering, key rotation, renew and login, invalidate, cookie and header side
//! by side, an untouched session, Redis down), sharing the API client and assertions at the top.

use std::collections::BTreeSet;

use actix_http::Request;
use actix_web::body::MessageBody;
use actix_web::cookie::{Cookie, Key};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::HeaderValue;
use actix_web::http::StatusCode;
use actix_web::test::TestRequest;
use circumflex_session::{CookieLifecycle, SessionEngine, SessionMiddleware};
use serde_json::{json, Value};

use crate::support::app::*;
use crate::support::users::{ids, user_routes};
use crate::support::RedisServer;

/// The header the tests enable, in the case responses and lookups use.
const HEADER: &str = "x-session-id";

/// A middleware with the id header on (named in mixed case: header names are case-blind).
fn with_header(engine: &SessionEngine, key: &Key) -> SessionMiddleware {
    SessionMiddleware::builder(engine.clone(), key.clone())
        .id_header("X-Session-Id")
        .build()
        .expect("x-session-id is a valid id header")
}

/// A GET carrying `value` in the id header (empty: opting in without a session).
fn get_with_id(uri: &str, value: &str) -> TestRequest {
    TestRequest::get().uri(uri).insert_header((HEADER, value))
}

/// The value a response sends in the id header; asserts that it sends one, that it is not
/// cacheable, and that no cookie goes with it.
fn sent_value(reply: &Reply, context: &str) -> String {
    assert_eq!(reply.status, StatusCode::OK, "{context}: {}", reply.text());
    reply.assert_no_cookie(context);
    let value = reply
        .header(HEADER)
        .unwrap_or_else(|| panic!("{context}: no {HEADER} in the response"));
    assert_eq!(
        reply.header("cache-control").as_deref(),
        Some("no-store"),
        "{context}: a response carrying a session must not be cached"
    );
    value
}

/// Asserts that a response neither sets a cookie nor sends the id header.
fn assert_sends_nothing(reply: &Reply, context: &str) {
    assert_eq!(reply.status, StatusCode::OK, "{context}: {}", reply.text());
    reply.assert_no_cookie(context);
    assert_eq!(reply.header(HEADER), None, "{context}: sent the id header");
}

/// An API client: keeps the value the server last sent in the id header (forgets it on an
/// empty one) and sends it back, or an empty header when it has none. Never gets a cookie.
#[derive(Default)]
struct Client {
    value: Option<String>,
}

impl Client {
    async fn get<S, B>(&mut self, app: &S, uri: &str) -> Reply
    where
        S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
        B: MessageBody,
    {
        let value = self.value.clone().unwrap_or_default();
        let reply = send(app, get_with_id(uri, &value).to_request()).await;
        reply.assert_no_cookie(uri);
        if let Some(sent) = reply.header(HEADER) {
            self.value = (!sent.is_empty()).then_some(sent);
        }
        reply
    }

    fn value(&self) -> String {
        self.value
            .clone()
            .expect("the client holds a session value")
    }
}

#[actix_web::test]
async fn the_header_is_ignored_unless_enabled_and_the_cookie_works_either_way() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let key = Key::generate();
    let off = test_app(SessionMiddleware::new(engine.clone(), key.clone())).await;
    let on = test_app(with_header(&engine, &key)).await;

    let value = sent_value(
        &send(&on, get_with_id("/counter", "").to_request()).await,
        "opt in",
    );

    // Off: the header, even with a value the same key signed, is no session; the cookie rules.
    let reply = send(&off, get_with_id("/counter", &value).to_request()).await;
    assert_eq!(reply.json(), json!({ "counter": 1 }), "the header was read");
    assert_eq!(reply.header(HEADER), None);
    let cookie = reply.cookie();
    let again = send(&off, get("/counter", Some(&cookie)).to_request()).await;
    assert_eq!(again.json(), json!({ "counter": 2 }));

    // On: a request without the header is a cookie request, as before.
    let by_cookie = send(&on, get("/counter", Some(&cookie)).to_request()).await;
    assert_eq!(by_cookie.json(), json!({ "counter": 3 }));
    assert_eq!(by_cookie.header(HEADER), None);
    let fresh = send(&on, get("/counter", None).to_request()).await;
    assert_eq!(fresh.json(), json!({ "counter": 1 }));
    assert_eq!(
        fresh.header(HEADER),
        None,
        "a cookie visitor got the header"
    );
    assert_eq!(fresh.cookie().name(), "session");
    assert_eq!(session_ids(&server).len(), 3);
}

#[actix_web::test]
async fn a_first_call_gets_its_session_in_the_header_and_the_next_call_reads_it() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let app = test_app(with_header(&engine, &Key::generate())).await;

    let login = send(&app, get_with_id("/login?user=ann", "").to_request()).await;
    let value = sent_value(&login, "first call");
    let id = only_session_id(&server);
    assert!(value.contains(&id), "signed, like the cookie: {value}");

    let mut client = Client {
        value: Some(value.clone()),
    };
    let me = client.get(&app, "/whoami").await;
    assert_eq!(user_of(&me), json!("ann"));
    assert_sends_nothing(&me, "a read");
    let count = client.get(&app, "/counter").await;
    assert_eq!(count.json(), json!({ "counter": 1 }));
    assert_sends_nothing(&count, "a write to the session the header names");
    assert_eq!(only_session_id(&server), id);

    // Exactly the cookie's value: the same app takes it as a cookie too.
    let as_cookie = Cookie::new("session", value);
    let me = send(&app, get("/whoami", Some(&as_cookie)).to_request()).await;
    assert_eq!(user_of(&me), json!("ann"));
}

#[actix_web::test]
async fn a_tampered_or_garbage_header_is_no_session_and_a_write_gets_a_new_id() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let app = test_app(with_header(&engine, &Key::generate())).await;

    let login = send(&app, get_with_id("/login?user=ann", "").to_request()).await;
    let value = sent_value(&login, "login");
    let real_id = only_session_id(&server);
    let at = value.find(&real_id).expect("signed values carry the id");
    let forged_id_value = flip_char(&value, at + real_id.len() - 1);
    let forged_id = forged_id_value[at..at + real_id.len()].to_owned();

    let garbage = [
        forged_id_value,
        flip_char(&value, 3),
        real_id.clone(),
        "x".to_owned(),
        "A".repeat(8 * 1024),
        format!("{value}{value}"),
    ];
    for (n, tampered) in garbage.iter().enumerate() {
        let label = format!("{:.60}", tampered);
        let read = send(&app, get_with_id("/whoami", tampered).to_request()).await;
        assert_eq!(user_of(&read), Value::Null, "{label}");
        assert_sends_nothing(&read, &label);

        let before: BTreeSet<String> = session_ids(&server).into_iter().collect();
        let write = send(&app, get_with_id("/counter", tampered).to_request()).await;
        assert_eq!(write.json(), json!({ "counter": 1 }), "{label}");
        let issued = sent_value(&write, &label);
        let after: BTreeSet<String> = session_ids(&server).into_iter().collect();
        let new: Vec<&String> = after.difference(&before).collect();
        assert_eq!(new.len(), 1, "{label}: exactly one new session");
        assert_eq!(after.len(), n + 2, "{label}");
        assert_ne!(new[0], &real_id, "{label}");
        assert!(!after.contains(&forged_id), "the forged id reached Redis");
        assert!(issued.contains(new[0].as_str()), "{label}");
    }

    // Bytes that are not visible ASCII.
    let raw = HeaderValue::from_bytes(b"\xc3\xa9\xff\xfe").expect("opaque bytes");
    let write = TestRequest::get()
        .uri("/counter")
        .insert_header((HEADER, raw));
    let write = send(&app, write.to_request()).await;
    assert_eq!(write.json(), json!({ "counter": 1 }));
    sent_value(&write, "non-ASCII header");

    // The genuine session is untouched.
    let me = send(&app, get_with_id("/whoami", &value).to_request()).await;
    assert_eq!(user_of(&me), json!("ann"));
}

#[actix_web::test]
async fn a_header_signed_with_an_old_key_is_accepted_after_rotation_and_re_signed() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let (old, new) = (Key::generate(), Key::generate());
    let before = test_app(with_header(&engine, &old)).await;
    let rotated = SessionMiddleware::builder(engine.clone(), new.clone())
        .id_header(HEADER)
        .old_key(old.clone())
        .build()
        .expect("valid session settings");
    let rotated = test_app(rotated).await;
    let new_only = test_app(with_header(&engine, &new)).await;

    let login = send(&before, get_with_id("/login?user=ann", "").to_request()).await;
    let old_value = sent_value(&login, "login before the rotation");

    let unknown = send(&new_only, get_with_id("/whoami", &old_value).to_request()).await;
    assert_eq!(user_of(&unknown), Value::Null, "control: the new key alone");

    let me = send(&rotated, get_with_id("/whoami", &old_value).to_request()).await;
    assert_eq!(user_of(&me), json!("ann"), "the old key no longer verifies");
    let resigned = sent_value(&me, "first use after the rotation");
    assert_ne!(resigned, old_value);
    let me = send(&new_only, get_with_id("/whoami", &resigned).to_request()).await;
    assert_eq!(
        user_of(&me),
        json!("ann"),
        "the re-signed value verifies with the new key alone"
    );
}

#[actix_web::test]
async fn renew_bind_user_and_remember_me_send_the_new_value_in_the_header() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let app = app_with(with_header(&engine, &Key::generate()), user_routes).await;
    let mut client = Client::default();

    client.get(&app, "/kv/set?key=theme&value=dark").await;
    let anonymous = client.value();
    sent_value(&client.get(&app, "/login?user=ann").await, "renew");
    let logged_in = client.value();
    assert_ne!(logged_in, anonymous, "renew moves the session to a new id");

    let bound = client.get(&app, "/bind?user=ann").await;
    sent_value(&bound, "bind_user");
    let bound_value = client.value();
    assert_ne!(
        bound_value, logged_in,
        "bind_user moves the session to a new id"
    );
    let id = bound.json()["id"].as_str().expect("an id").to_owned();
    assert!(bound_value.contains(&id), "{bound_value} names {id}");

    let remembered = client.get(&app, "/remember-me?secs=3600").await;
    sent_value(&remembered, "set_tti");
    assert_ne!(
        client.value(),
        bound_value,
        "the time to idle is in the value"
    );
    assert!(client.value().contains(&id), "same session, same id");

    for old in [anonymous, logged_in] {
        let gone = send(&app, get_with_id("/kv/get?key=theme", &old).to_request()).await;
        assert_eq!(
            gone.json()["value"],
            Value::Null,
            "an old value still works"
        );
    }
    let theme = client.get(&app, "/kv/get?key=theme").await;
    assert_eq!(theme.json()["value"], json!("dark"), "the data came along");
    assert_sends_nothing(&theme, "a read of a remembered session");
    assert_eq!(ids(&client.get(&app, "/sessions").await), vec![id]);
}

#[actix_web::test]
async fn a_persistent_cookie_lifecycle_sends_no_header_on_reads() {
    let server = RedisServer::start();
    let mw = SessionMiddleware::builder(redis_engine(&server).await, Key::generate())
        .id_header(HEADER)
        .cookie_lifecycle(CookieLifecycle::Persistent)
        // Every read refreshes (the control below re-sends the cookie for it).
        .refresh_after_percent(0)
        .build()
        .expect("valid session settings");
    let app = test_app(mw).await;

    let mut client = Client::default();
    sent_value(&client.get(&app, "/login?user=ann").await, "login");
    let me = client.get(&app, "/whoami").await;
    assert_eq!(user_of(&me), json!("ann"));
    assert_sends_nothing(&me, "a read refreshing a persistent session");

    // Control: the same read with the cookie re-sends it, for its Max-Age.
    let cookie = Cookie::new("session", client.value());
    let by_cookie = send(&app, get("/whoami", Some(&cookie)).to_request()).await;
    assert!(by_cookie.cookie().max_age().is_some());
}

#[actix_web::test]
async fn invalidate_answers_an_empty_header_and_ends_the_session() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let app = test_app(with_header(&engine, &Key::generate())).await;
    let mut client = Client::default();

    client.get(&app, "/login?user=ann").await;
    let value = client.value();
    let out = client.get(&app, "/logout").await;
    assert_eq!(
        sent_value(&out, "logout"),
        "",
        "an empty value: forget yours"
    );
    assert_eq!(client.value, None);
    assert!(session_ids(&server).is_empty(), "the session is deleted");
    let gone = send(&app, get_with_id("/whoami", &value).to_request()).await;
    assert_eq!(user_of(&gone), Value::Null);
}

#[actix_web::test]
async fn the_header_and_the_cookie_never_mix_up_two_sessions() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let app = test_app(with_header(&engine, &Key::generate())).await;

    let cookie = send(&app, get("/login?user=ann", None).to_request())
        .await
        .cookie();
    let mut client = Client::default();
    client.get(&app, "/login?user=bob").await;
    let bob = client.value();
    assert_eq!(session_ids(&server).len(), 2);

    // Both: the header wins, for reads and writes, and the response answers in it alone.
    let both = |uri: &str, value: &str| get_with_id(uri, value).cookie(cookie.clone()).to_request();
    let me = send(&app, both("/whoami", &bob)).await;
    assert_eq!(user_of(&me), json!("bob"));
    assert_sends_nothing(&me, "a read with both");
    send(&app, both("/kv/set?key=seen&value=yes", &bob)).await;
    let of_bob = client.get(&app, "/kv/get?key=seen").await;
    assert_eq!(of_bob.json()["value"], json!("yes"));

    // An empty header is a header request without a session: the cookie is not read, and a
    // write starts a third session, answered in the header.
    let anonymous = send(&app, both("/whoami", "")).await;
    assert_eq!(user_of(&anonymous), Value::Null, "the cookie was read");
    let third = send(&app, both("/counter", "")).await;
    assert_eq!(third.json(), json!({ "counter": 1 }));
    let third = sent_value(&third, "a write with a cookie and an empty header");
    assert_ne!(third, bob);
    assert_eq!(session_ids(&server).len(), 3);

    // Logging out over the header leaves the cookie's session alone.
    send(&app, both("/logout", &bob)).await;
    let ann = send(&app, get("/kv/get?key=seen", Some(&cookie)).to_request()).await;
    assert_eq!(ann.json()["value"], Value::Null, "bob's write reached ann");
    let ann = send(&app, get("/whoami", Some(&cookie)).to_request()).await;
    assert_eq!(user_of(&ann), json!("ann"));
    assert_eq!(session_ids(&server).len(), 2);
}

#[actix_web::test]
async fn a_handler_that_never_uses_the_session_sends_nothing_and_costs_no_redis() {
    let server = RedisServer::start();
    let engine = redis_engine(&server).await;
    let key = Key::generate();
    let app = test_app(with_header(&engine, &key)).await;
    let login = send(&app, get_with_id("/login?user=ann", "").to_request()).await;
    let value = sent_value(&login, "login");

    // A second engine on the same Redis: its counters see only what these requests cost.
    let quiet = redis_engine(&server).await;
    let app = test_app(with_header(&quiet, &key)).await;
    for uri in ["/plain", "/untouched"] {
        for sent in [value.as_str(), "", "garbage"] {
            let reply = send(&app, get_with_id(uri, sent).to_request()).await;
            assert_sends_nothing(&reply, &format!("{uri} with {sent:.12?}"));
        }
    }
    let stats = quiet.stats();
    assert_eq!((stats.commands, stats.redis_commands), (0, 0));
}

#[actix_web::test]
async fn with_redis_down_a_header_request_is_an_opaque_503_and_sends_no_header() {
    let mut server = RedisServer::start();
    let engine = impatient_engine(&server).await;
    let app = test_app(with_header(&engine, &Key::generate())).await;
    let mut client = Client::default();
    let first = client.get(&app, "/counter").await;
    assert_eq!(first.json(), json!({ "counter": 1 }));

    server.kill();
    for uri in ["/counter", "/whoami"] {
        let reply = client.get(&app, uri).await;
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{uri}: {}",
            reply.text()
        );
        assert_eq!(reply.text(), "Service Unavailable", "{uri}: opaque body");
        assert_eq!(
            reply.header(HEADER),
            None,
            "{uri}: an error sends no session"
        );
    }

    server.restart();
    // The first batch on a connection from before the restart may still fail (as in every
    // outage test): the engine recovers within a few attempts.
    let mut attempts = 0;
    let after = loop {
        let reply = client.get(&app, "/counter").await;
        if reply.status == StatusCode::OK {
            break reply;
        }
        assert_eq!(reply.header(HEADER), None, "an error sends no session");
        attempts += 1;
        assert!(attempts < 50, "the engine never recovered");
        actix_web::rt::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // Redis kept nothing across the restart: the client's session is gone, a new one starts.
    assert_eq!(after.json(), json!({ "counter": 1 }));
    assert!(after.header(HEADER).is_some(), "the new session's value");
}
