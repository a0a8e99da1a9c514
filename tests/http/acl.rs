//! ACL users and databases, against a real `redis-server` whose default user is off (as on
//! managed services): the user and password from the URL or from the config, the database
//! the sessions go to, and the startup check's words for a wrong password, an unknown user and
//! a user without a permission sessions need. (A server-wide `requirepass`, and what a wrong
//! password does to requests and logs, are in `auth_and_memory_faults`.)

use actix_web::cookie::Key;
use actix_web::http::StatusCode;
use circumflex_session::{Error, RedisBackend, RedisConfig, SessionEngine, SessionMiddleware};

use crate::support::app::*;
use crate::support::flow::login_flow;
use crate::support::logs::LogCapture;
use crate::support::users::*;
use crate::support::RedisServer;

const ADMIN_PASSWORD: &str = "admin-pw-0c4a";
const APP_PASSWORD: &str = "apppass-71c2";

/// The least ACL the session store needs, sessions by user included; README.md ("Deploying")
/// should say so. `+time`: the per-user scripts call `TIME`, which is in no category but
/// `@fast` (and `@all`).
const DOCUMENTED_ACL: &str =
    "~session:* +@read +@write +@scripting +ping +time +cluster|slots +asking";

/// The ACL README.md documented before sessions by user: enough for sessions, not for binding
/// them to users.
const ACL_WITHOUT_TIME: &str = "~session:* +@read +@write +@scripting +ping +cluster|slots +asking";

/// A server whose default user is off, with the users `admin` (for the test's own look),
/// `app` (for the session store), `noscript` (all but `@scripting`), `minimal` (exactly
/// [`DOCUMENTED_ACL`]) and `notime` (exactly [`ACL_WITHOUT_TIME`]).
fn acl_server() -> RedisServer {
    let server = RedisServer::start();
    let mut conn = server.connection();
    for rule in [
        &[
            "admin",
            "on",
            format!(">{ADMIN_PASSWORD}").as_str(),
            "~*",
            "&*",
            "+@all",
        ][..],
        &[
            "app",
            "on",
            format!(">{APP_PASSWORD}").as_str(),
            "~*",
            "&*",
            "+@all",
        ],
        &[
            "noscript",
            "on",
            ">noscript-pw",
            "~*",
            "&*",
            "+@all",
            "-@scripting",
        ],
        &["minimal", "on", ">minimal-pw"],
        &["notime", "on", ">notime-pw"],
        &["default", "off"],
    ] {
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(rule)
            .query(&mut conn)
            .expect("ACL SETUSER");
    }
    for (user, acl) in [("minimal", DOCUMENTED_ACL), ("notime", ACL_WITHOUT_TIME)] {
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(user)
            .arg(acl.split(' ').collect::<Vec<_>>())
            .query(&mut conn)
            .unwrap_or_else(|e| panic!("ACL SETUSER {user}: {e}"));
    }
    server
}

/// One database of the server, seen as `admin`.
struct AsAdmin<'a> {
    server: &'a RedisServer,
    db: i64,
}

impl Inspect for AsAdmin<'_> {
    fn inspect(&self) -> redis::Connection {
        let url = format!(
            "redis://admin:{ADMIN_PASSWORD}@127.0.0.1:{}",
            self.server.port()
        );
        let mut conn = redis::Client::open(url)
            .and_then(|c| c.get_connection())
            .expect("connect as admin");
        let _: () = redis::cmd("SELECT")
            .arg(self.db)
            .query(&mut conn)
            .expect("SELECT");
        conn
    }
}

fn key_count(server: &RedisServer, db: i64) -> u64 {
    redis::cmd("DBSIZE")
        .query(&mut AsAdmin { server, db }.inspect())
        .expect("DBSIZE")
}

async fn checked_engine(config: RedisConfig) -> SessionEngine {
    SessionEngine::new(checked_backend(config).await)
}

#[actix_web::test]
async fn an_acl_user_in_the_url_serves_the_whole_flow_from_database_3() {
    let server = acl_server();
    let url = format!("redis://app:{APP_PASSWORD}@127.0.0.1:{}/3", server.port());
    let engine = checked_engine(RedisConfig::new(url)).await;
    login_flow(
        engine.clone(),
        &AsAdmin {
            server: &server,
            db: 3,
        },
    )
    .await;

    let app = app_on(engine).await;
    let reply = send(&app, get("/login?user=ann", None).to_request()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(key_count(&server, 3), 1, "the session is in database 3");
    assert_eq!(key_count(&server, 0), 0, "nothing in database 0");
}

#[actix_web::test]
async fn a_user_with_only_the_documented_permissions_passes_the_check_and_the_whole_flow() {
    let server = acl_server();
    let url = format!("redis://minimal:minimal-pw@127.0.0.1:{}", server.port());
    let engine = checked_engine(RedisConfig::new(url)).await;
    let admin = AsAdmin {
        server: &server,
        db: 0,
    };
    login_flow(engine.clone(), &admin).await;

    // Sessions by user: bind, list, log out everywhere; the index is under the prefix too.
    two_browsers_flow(engine, |laptop, phone| {
        let index = format!("session:{{{}}}:u:ann", &laptop[..4]);
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg("session:*")
            .query(&mut admin.inspect())
            .expect("KEYS");
        keys.sort();
        let mut expected = vec![session_key(laptop), session_key(phone), index];
        expected.sort();
        assert_eq!(keys, expected);
    })
    .await;
    assert_eq!(
        key_count(&server, 0),
        0,
        "logging out everywhere left nothing"
    );
}

/// A backend for the ACL user `user` (password `<user>-pw`) whose startup check failed, and
/// the error it failed with.
async fn failed_check(server: &RedisServer, user: &str) -> (RedisBackend, Error) {
    let config = RedisConfig::new(format!("redis://127.0.0.1:{}", server.port()))
        .username(user)
        .password(format!("{user}-pw"));
    let backend = RedisBackend::connect(config)
        .await
        .expect("valid redis config");
    let err = backend.check().await.expect_err("the check must fail");
    (backend, err)
}

#[actix_web::test]
async fn a_user_without_time_fails_the_check_by_name_and_cannot_log_in_as_a_user() {
    let server = acl_server();
    let (backend, err) = failed_check(&server, "notime").await;
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    // Redis 7.0 does not name the command a script was refused, so the message does.
    assert!(
        err.to_string()
            .contains("the Redis user lacks a permission the session store needs")
            && err.to_string().contains("+time"),
        "{err}"
    );

    // Plain sessions work without it; binding one to a user does not.
    let app = user_app(SessionMiddleware::new(
        SessionEngine::new(backend),
        Key::generate(),
    ))
    .await;
    let mut visitor = Visitor::default();
    let counter = visitor.get(&app, "/counter").await;
    assert_eq!(counter.status, StatusCode::OK, "{}", counter.text());
    let bind = visitor.get(&app, "/bind?user=ann").await;
    assert_eq!(
        bind.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        bind.text()
    );
}

#[actix_web::test]
async fn the_configured_user_password_and_database_override_those_of_the_url() {
    let server = acl_server();
    let url = format!("redis://nobody:not-this@127.0.0.1:{}/5", server.port());
    let config = RedisConfig::new(url)
        .username("app")
        .password(APP_PASSWORD)
        .db(3);
    let app = app_on(checked_engine(config).await).await;
    let mut visitor = Visitor::default();
    for expected in 1..=2 {
        let reply = visitor.get(&app, "/counter").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json()["counter"], expected);
    }
    assert_eq!(key_count(&server, 3), 1, "the session is in database 3");
    assert_eq!(key_count(&server, 5), 0, "nothing in the URL's database");
}

/// Display of an error and of each of its sources, and its Debug.
fn everything_shown(err: &Error) -> String {
    let mut shown = format!("{err} {err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(e) = source {
        shown.push_str(&format!(" {e} {e:?}"));
        source = e.source();
    }
    shown
}

#[actix_web::test]
async fn a_wrong_password_or_an_unknown_user_fails_the_check_by_name_and_hides_the_password() {
    const WRONG: &str = "wrong-pw-3b9f0e";
    let server = acl_server();
    let port = server.port();
    let (logs, _guard) = LogCapture::start();
    let base = RedisConfig::new(format!("redis://127.0.0.1:{port}"))
        .connect_timeout(std::time::Duration::from_millis(500));
    for (label, config) in [
        (
            "wrong password in the URL",
            RedisConfig::new(format!("redis://app:{WRONG}@127.0.0.1:{port}"))
                .connect_timeout(std::time::Duration::from_millis(500)),
        ),
        (
            "wrong password in the config",
            base.clone().username("app").password(WRONG),
        ),
        (
            "unknown user",
            base.clone().username("nobody").password(WRONG),
        ),
    ] {
        let backend = RedisBackend::connect(config.clone())
            .await
            .expect("valid redis config");
        let err = backend.check().await.expect_err("the check must fail");
        let shown = everything_shown(&err);
        assert!(matches!(err, Error::Unavailable(_)), "{label}: {err:?}");
        assert!(
            err.to_string()
                .contains("Redis rejected the configured user name or password (WRONGPASS"),
            "{label}: {err}"
        );
        for shown in [shown, format!("{config:?}"), format!("{backend:?}")] {
            assert!(
                !shown.contains(WRONG),
                "{label}: the password shows in {shown}"
            );
        }

        let app = app_on(SessionEngine::new(backend)).await;
        let reply = send(&app, get("/counter", None).to_request()).await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{label}");
    }
    let text = logs.text();
    assert!(text.contains("WRONGPASS"), "the refusal is logged: {text}");
    assert!(!text.contains(WRONG), "the password leaked into the log");
}

#[actix_web::test]
async fn a_user_without_scripting_fails_the_check_with_noperm_by_name() {
    let server = acl_server();
    let (backend, err) = failed_check(&server, "noscript").await;
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("the Redis user lacks a permission the session store needs (NOPERM)"),
        "{err}"
    );

    // A request that writes fails the same way, as a 503 whose cause is logged.
    let (logs, _guard) = LogCapture::start();
    let app = app_on(SessionEngine::new(backend)).await;
    let reply = send(&app, get("/counter", None).to_request()).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let errors = logs.lines_at("ERROR");
    assert!(
        errors.iter().any(|l| l.contains("NOPERM")),
        "the cause is logged: {errors:#?}"
    );
}
