//! The user index when a bound session's score lags its real expiry: between two index
//! touches a worker refreshes a bound session with a plain `PEXPIRE` (see `lua/index.lua`), so
//! the score may pass while the session lives. It must stay listed, be scored again, and the
//! index must outlive it.

use std::sync::Arc;
use std::time::Duration;

use circumflex_session::testing::{Op, Reply};

use crate::users::bind_op;

use crate::support::engine::*;
use crate::support::RedisServer;

const USER: &str = "lagging";

fn redis_now_ms(server: &RedisServer) -> f64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query(&mut server.connection())
        .expect("TIME");
    secs as f64 * 1000.0 + micros as f64 / 1000.0
}

fn list() -> Op {
    Op::SessionsOf {
        user: Arc::from(USER),
        limit: 10,
    }
}

#[actix_web::test]
async fn a_live_session_whose_score_passed_stays_listed_and_is_scored_again() {
    let server = RedisServer::start();
    let client = redis_client(&server).await;
    let tag = "0a0b";
    let id = "0123456789abcdef0123456789abcdef";
    let session = tagged(tag, id);
    let index = format!("session:{{{tag}}}:u:{USER}");
    let index_key: Arc<str> = Arc::from(index.as_str());
    let ttl = Duration::from_millis(5000);
    client.ok(&session, bind_op(USER, ttl), None).await;
    let scored = raw_zscore(&server, &index, id).expect("listed at bind");
    // A plain refresh (no index touch) within the 10 % window of the touch: the session now
    // lives up to 400 ms past its score, and the index's padded TTL covers that.
    actix_web::rt::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        client.ok(&session, Op::Touch, Some(ttl)).await,
        Reply::Bool(true)
    );
    assert_eq!(
        raw_zscore(&server, &index, id),
        Some(scored),
        "the score lags"
    );
    assert!(raw_pttl(&server, &index) >= raw_pttl(&server, &session));

    // Wait until the score has passed while the session still lives.
    while redis_now_ms(&server) <= scored {
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let alive = raw_pttl(&server, &session);
    assert!(
        alive > 0,
        "the plain refresh kept the session alive past its score ({alive})"
    );
    let listed = client.ok(&index_key, list(), None).await;
    let Reply::Sessions(listed) = listed else {
        panic!("{listed:?}")
    };
    assert_eq!(listed.len(), 1, "a live session is listed: {listed:?}");
    assert_eq!(listed[0].member, id);
    let rescored = raw_zscore(&server, &index, id).expect("still a member");
    assert!(rescored > scored, "scored again with its real expiry");

    // Once the session is really gone, the next touch of the index drops it, and the index
    // itself expires.
    while raw_exists(&server, &session) == 1 {
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = client.ok(&index_key, list(), None).await;
    assert_eq!(listed, Reply::Sessions(Vec::new()));
    assert_eq!(raw_zscore(&server, &index, id), None, "pruned");
    assert_eq!(
        raw_exists(&server, &index),
        0,
        "an empty index is no key at all"
    );
}
