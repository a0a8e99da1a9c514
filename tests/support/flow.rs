//! The login flow every Redis store must serve through the middleware, run by the HTTP tests
//! on a standalone server and by the cluster tests on a cluster.

use actix_web::cookie::{time, Key};
use actix_web::http::StatusCode;
use circumflex_session::{SessionEngine, SessionMiddleware};
use serde_json::{json, Value};

use super::app::*;

/// The whole flow through the middleware: an anonymous visit, login, whoami, counter, a
/// second login (renew), the old cookie, logout; `store` is where `engine` keeps sessions.
pub async fn login_flow(engine: SessionEngine, store: &impl SessionKeys) {
    let mw = SessionMiddleware::builder(engine, Key::generate())
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
    let id1 = only_session_id(store);
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
    let id2 = only_session_id(store);
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
    assert!(session_ids(store).is_empty(), "logout left the hash");

    let after = send(&app, get("/whoami", Some(&c2)).to_request()).await;
    assert_eq!(user_of(&after), Value::Null);
    after.assert_no_cookie("whoami after logout");
}
