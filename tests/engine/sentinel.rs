//! The master found through Sentinel (`support::redis_sentinel`: a master, a replica, three
//! sentinels): sessions through discovery with the app's user, password and database, the
//! `REDIS_SENTINEL` form, and what `check` says when the sentinels cannot help. Failovers
//! under load are in the HTTP tests (`tests/http/sentinel.rs`).

use std::process::Command;

use circumflex_session::testing::{self, Reply};
use circumflex_session::{RedisBackend, RedisConfig, SessionEngine};

use crate::support::app::checked_backend;
use crate::support::engine::*;
use crate::support::redis_sentinel::*;
use crate::support::unused_port;

#[actix_web::test]
async fn sessions_live_on_the_master_the_sentinels_name_with_the_apps_user_and_database() {
    let group = SentinelGroup::start();
    let master = group
        .named_master_port()
        .expect("the sentinels name a master");
    let backend = checked_backend(group.config().db(3)).await;
    let c = testing::start(&SessionEngine::new(backend));

    let s = key("through-sentinel");
    assert_eq!(
        c.ok(&s, set_new(TTL, &[("a", "1")]), Some(TTL)).await,
        Reply::Done
    );
    assert_eq!(c.ok(&s, get(&["a"]), Some(TTL)).await, values(&[Some("1")]));

    // The hash is on the master, in database 3, written by the app's user.
    let mut db3 = redis::Client::open(format!("redis://127.0.0.1:{master}/3"))
        .and_then(|c| c.get_connection())
        .expect("connect to the master");
    let field: Option<String> = redis::cmd("HGET")
        .arg("session:through-sentinel")
        .arg("a")
        .query(&mut db3)
        .expect("HGET");
    assert_eq!(field.as_deref(), Some("1"));
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut db3)
        .expect("CLIENT LIST");
    assert!(
        clients
            .lines()
            .any(|c| c.contains(&format!(" user={APP_USER} ")) && c.contains(" db=3 ")),
        "no connection of the app's user on database 3: {clients}"
    );
}

/// Run by the next test in a child process with `REDIS_SENTINEL` set, so that this process's
/// environment is never changed under the tests running in parallel.
#[actix_web::test]
#[ignore = "run as a child process by the_redis_sentinel_variable_leads_to_the_master"]
async fn redis_sentinel_child() {
    let Ok(expected) = std::env::var("CIRCUMFLEX_SENTINEL_CHILD") else {
        return; // run directly (--ignored): nothing to do without the parent's setup
    };
    // As a config file would: the master's credentials in the file, the topology from the
    // environment.
    let mut config = RedisConfig::new("redis://ignored-by-redis-sentinel:1")
        .username(APP_USER)
        .password(APP_PASSWORD);
    config.apply_env().expect("REDIS_SENTINEL parses");
    assert_eq!(config.url, None, "REDIS_SENTINEL replaces redis.url");
    let backend = checked_backend(config).await;
    let c = testing::start(&SessionEngine::new(backend));
    let s = key("from-the-environment");
    assert_eq!(
        c.ok(&s, set_new(TTL, &[("v", &expected)]), Some(TTL)).await,
        Reply::Done
    );
    assert_eq!(
        c.ok(&s, get(&["v"]), Some(TTL)).await,
        values(&[Some(&expected)])
    );
}

#[actix_web::test]
async fn the_redis_sentinel_variable_leads_to_the_master() {
    let group = SentinelGroup::start();
    let master = group
        .named_master_port()
        .expect("the sentinels name a master");
    let output = Command::new(std::env::current_exe().expect("the test binary"))
        .args(["sentinel::redis_sentinel_child", "--exact", "--ignored"])
        .env("REDIS_SENTINEL", group.sentinel_env_url())
        .env("CIRCUMFLEX_SENTINEL_CHILD", "written-by-the-child")
        .env_remove("REDIS_URL")
        .env_remove("REDIS_CLUSTER_NODES")
        .output()
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "the child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{master}"))
        .and_then(|c| c.get_connection())
        .expect("connect to the master");
    let written: Option<String> = redis::cmd("HGET")
        .arg("session:from-the-environment")
        .arg("v")
        .query(&mut conn)
        .expect("HGET");
    assert_eq!(written.as_deref(), Some("written-by-the-child"));
}

#[actix_web::test]
async fn check_says_which_master_name_no_sentinel_knows_and_when_no_sentinel_answers() {
    let group = SentinelGroup::start();
    // A short pool timeout: the session operation below waits that long for a connection.
    let misnamed = RedisBackend::connect(
        RedisConfig::sentinel("no-such-master", group.sentinel_urls())
            .connect_timeout(std::time::Duration::from_millis(300)),
    )
    .await
    .expect("a valid sentinel config");
    let error = misnamed.check().await.expect_err("an unknown master name");
    let shown = error.to_string();
    assert!(
        shown.contains("no sentinel monitors a master named \"no-such-master\"")
            && shown.contains("3 of 3 answered"),
        "{shown}"
    );
    assert!(!shown.contains(SENTINEL_PASSWORD), "{shown}");
    // A session operation on it is a 503 that names the master too.
    let c = testing::start(&SessionEngine::new(misnamed));
    let result = c.run(&key("x"), get(&["a"]), None).await;
    assert!(is_store_down(&result), "{result:?}");
    let shown = format!("{:?}", result.unwrap_err().to_string());
    assert!(shown.contains("no-such-master"), "{shown}");

    let silent = RedisBackend::connect(RedisConfig::sentinel(
        MASTER_NAME,
        [
            format!("redis://:{SENTINEL_PASSWORD}@127.0.0.1:{}", unused_port()),
            format!("redis://:{SENTINEL_PASSWORD}@127.0.0.1:{}", unused_port()),
        ],
    ))
    .await
    .expect("a valid sentinel config");
    let shown = silent.check().await.expect_err("no sentinel").to_string();
    assert!(shown.contains("no sentinel answered"), "{shown}");
    assert!(!shown.contains(SENTINEL_PASSWORD), "{shown}");

    let wrong_password = RedisBackend::connect(RedisConfig::sentinel(
        MASTER_NAME,
        group
            .sentinel_urls()
            .iter()
            .map(|u| u.replace(SENTINEL_PASSWORD, "not-the-password")),
    ))
    .await
    .expect("a valid sentinel config");
    let shown = wrong_password
        .check()
        .await
        .expect_err("a wrong sentinel password")
        .to_string();
    assert!(
        shown.contains("no sentinel answered") && !shown.contains("not-the-password"),
        "{shown}"
    );
}

#[actix_web::test]
async fn after_a_readonly_refusal_no_pooled_connection_reads_from_the_demoted_master() {
    let group = SentinelGroup::start();
    let master = group.named_master_port().expect("a master");
    let replica = group.other_node(master);
    // Two actors (two workers) on one backend: two batches in flight, two pooled connections.
    let engine = SessionEngine::new(
        RedisBackend::connect(group.config())
            .await
            .expect("a valid sentinel config"),
    );
    let (writer, reader) = (testing::start(&engine), testing::start(&engine));
    let s = key("demoted");
    assert_eq!(
        writer.ok(&s, set_new(TTL, &[("a", "1")]), Some(TTL)).await,
        Reply::Done
    );
    let deadline = std::time::Instant::now() + NO_HANG;
    while group.app_connections(master) < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pool never opened a second connection"
        );
        let (a, b) = futures::join!(
            writer.run(&s, get(&["a"]), None),
            reader.run(&s, get(&["a"]), None)
        );
        assert_eq!(
            (a.unwrap(), b.unwrap()),
            (values(&[Some("1")]), values(&[Some("1")]))
        );
    }

    // The roles swap without the sentinels, which still name the old master.
    group.replicaof(replica, None);
    group.replicaof(master, Some(replica));
    let write = writer.run(&s, set(&[("a", "2")]), None).await;
    assert!(is_store_down(&write), "a write to a replica: {write:?}");
    // A pure read (no TTL refresh, so no write in its batch), through the other actor: its
    // pooled connection is suspect since the READONLY, answers ROLE as a replica, and is
    // dropped; a new one finds no master.
    let read = reader.run(&s, get(&["a"]), None).await;
    assert!(is_store_down(&read), "a read from a replica: {read:?}");

    group.replicaof(master, None);
    group.replicaof(replica, Some(master));
    let deadline = std::time::Instant::now() + NO_HANG;
    loop {
        match reader.run(&s, get(&["a"]), None).await {
            Ok(reply) => {
                assert_eq!(
                    reply,
                    values(&[Some("1")]),
                    "the refused write was not applied"
                );
                break;
            }
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "the service did not resume: {e}"
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
