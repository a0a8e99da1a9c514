//! Sessions by user at the engine level, on a private redis-server: what a user's index holds
//! while ten thousand sessions expire, how an expired session leaves it, and a revoke racing
//! a stream of writes.
//!
//! Sessions are bound with `Op::Bind` straight through the actor, and the index is looked at
//! raw: a bound session is `session:{<tag>}:<32 hex>`, its user's index the sorted set
//! `session:{<tag>}:u:<user>`, scored by expiry in Unix ms (see `src/backend/lua/index.lua`).
//!
//! Why this file is long: each of its four scenarios waits on real expiry and looks at the
//! index raw at every step (ten thousand sessions in waves, a session that expires between two
//! touches of each kind, a revoke racing writes, revoke_all behind hundreds of dead members),
//! with the helpers they share.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use circumflex_session::testing::{self, Binding, Command, Op, Reply, WriteMode};
use circumflex_session::SessionEngine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::engine::*;
use crate::support::RedisServer;

/// Most expired members one touch of an index prunes (`prune` in `lua/index.lua`).
const PRUNE: u64 = 256;

/// The key of `user`'s `n`th session.
fn session_of(user: &str, n: u64) -> Arc<str> {
    tagged(&testing::user_tag(user), &format!("{n:032x}"))
}

/// The session id of `user`'s `n`th session, as `sessions_of` lists it and `revoke` takes it.
fn id_of(user: &str, n: u64) -> String {
    format!("{}{n:032x}", testing::user_tag(user))
}

fn index_of(user: &str) -> String {
    format!("session:{{{}}}:u:{user}", testing::user_tag(user))
}

/// Binds `user`'s `n`th session with this TTL.
fn bind(user: &str, n: u64, ttl: Duration) -> Command {
    cmd(&session_of(user, n), bind_op(user, ttl), None)
}

/// A bind to `user` with this TTL, with no cap and nothing carried over.
pub(crate) fn bind_op(user: &str, ttl: Duration) -> Op {
    let binding = Binding {
        user: Arc::from(user),
        label: String::new(),
        created: CREATED,
        tti: ttl,
        ttl,
        max_sessions: 0,
        entries: Vec::new(),
    };
    Op::Bind(Box::new(binding))
}

/// What a bind answers when the cap revoked nothing.
fn bound() -> Reply {
    Reply::Revoked {
        members: Vec::new(),
        left: 0,
    }
}

/// One look at an index, all at one instant of Redis's clock (one script).
#[derive(Debug, Clone, Copy)]
struct Look {
    /// Redis's clock, Unix ms.
    now: u64,
    /// Members (`ZCARD`).
    card: u64,
    /// Members whose session has expired (score at most `now`, as `prune` counts them).
    stale: u64,
    /// Members whose session is live.
    live: u64,
    /// The index's own `PTTL` (-2: no such key).
    pttl: i64,
    /// The latest expiry among the members (0: none).
    latest: u64,
}

const LOOK: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local latest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2] or '0'
return {now, redis.call('ZCARD', KEYS[1]), redis.call('ZCOUNT', KEYS[1], '-inf', now),
  redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf'), redis.call('PTTL', KEYS[1]), latest}
";

fn look(server: &RedisServer, index: &str) -> Look {
    let (now, card, stale, live, pttl, latest): (u64, u64, u64, u64, i64, String) =
        redis::cmd("EVAL")
            .arg(LOOK)
            .arg(1)
            .arg(index)
            .query(&mut server.connection())
            .expect("EVAL of the look script");
    let latest = latest.parse::<f64>().expect("a score") as u64;
    Look {
        now,
        card,
        stale,
        live,
        pttl,
        latest,
    }
}

fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// Waits (polling, bounded by `NO_HANG`) until `key` has expired in Redis.
async fn until_gone(server: &RedisServer, key: &str) {
    let start = std::time::Instant::now();
    while raw_exists(server, key) == 1 {
        assert!(start.elapsed() < NO_HANG, "{key} never expired");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[actix_web::test]
async fn ten_thousand_sessions_of_one_user_expire_and_the_index_ends_empty() {
    const N: u64 = 10_000;
    // TTLs from 3 s down to 1 s, bound longest first: the first session to expire is then the
    // last bound or the first, so none expires while binding unless binding takes 3 s.
    let ttl_of = |n: u64| Duration::from_millis(3000 - n * 2000 / N);
    let server = RedisServer::start();
    let engine = SessionEngine::new(redis_backend(&server).await);
    let c = testing::start(&engine);
    let (user, index) = ("many", index_of("many"));
    // The index lives as long as its latest member: a session of 8 s (the user's phone, say)
    // keeps it alive after the others have expired, so that only touches can prune them.
    let keeper = id_of(user, N);
    assert_eq!(
        c.ok(
            &session_of(user, N),
            bind_op(user, Duration::from_secs(8)),
            None
        )
        .await,
        bound()
    );
    // A second user whose index nobody touches after its sessions expire: 299 sessions of
    // 1 s and one of 2.5 s, so that dead members are seen in it while it is still alive.
    let (idle, idle_index) = ("idle", index_of("idle"));
    let mut idle_binds = vec![bind(idle, 0, Duration::from_millis(2500))];
    idle_binds.extend((1..300).map(|n| bind(idle, n, Duration::from_secs(1))));
    for r in c.batch(idle_binds).await {
        assert_eq!(r.expect("bind"), bound());
    }
    let all: Vec<u64> = (0..N).collect();
    for chunk in all.chunks(1000) {
        let binds = chunk.iter().map(|&n| bind(user, n, ttl_of(n))).collect();
        for r in c.batch(binds).await {
            assert_eq!(r.expect("bind"), bound());
        }
    }

    let first = look(&server, &index);
    assert_eq!(first.card, N + 1, "every session is listed: {first:?}");
    assert_eq!(first.live, N + 1, "none expired while binding: {first:?}");
    // The index outlives its latest member (TIME and PTTL each round down to a whole ms).
    assert!(
        first.now + first.pttl as u64 + 2 >= first.latest,
        "the index expires before its latest member: {first:?}"
    );
    let listed = engine.sessions_of(user).await.expect("sessions_of");
    assert_eq!(listed.len(), 1000, "sessions_of lists at most 1000");
    assert_eq!(listed[0].id, keeper, "most recently used first");
    assert!(listed.windows(2).all(|w| w[0].expires >= w[1].expires));
    assert_eq!(
        look(&server, &index).card,
        N + 1,
        "a listing prunes nothing live"
    );

    // Every 200 ms, one touch (a listing): it prunes at least what had expired before it, up
    // to one prune's worth, and leaves no more than the live sessions plus what one prune
    // could not reach.
    let (mut steps, mut backlog, mut idle_seen_dead) = (0, 0, false);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        steps += 1;
        assert!(steps < 100, "the sessions never all expired");
        let before = look(&server, &index);
        let listed = engine.sessions_of(user).await.expect("sessions_of");
        let after = look(&server, &index);
        let pruned = before.card - after.card;
        assert!(
            pruned >= before.stale.min(PRUNE),
            "a touch pruned {pruned} of {} expired: {before:?} {after:?}",
            before.stale
        );
        // Of the members before the touch, at most `after.stale + pruned` had expired by the
        // end of it, and one touch prunes up to PRUNE of them.
        let unreachable = (after.stale + pruned).saturating_sub(PRUNE);
        assert!(
            after.card <= before.live + unreachable,
            "{after:?} holds more than {} live and {unreachable} unpruned",
            before.live
        );
        assert!(listed.len() <= 1000 && listed.len() as u64 <= before.live);
        assert!(listed.len() as u64 >= after.live.min(1000));
        for info in &listed {
            assert!(unix_ms(info.expires) > before.now, "{info:?} had expired");
        }
        backlog = backlog.max(before.stale);

        let idle_now = look(&server, &idle_index);
        if idle_now.card > 0 {
            assert_eq!(idle_now.card, 300, "nothing touched {idle}'s index");
            idle_seen_dead |= idle_now.stale == 299;
        }
        if after.live == 1 {
            break;
        }
    }
    assert!(
        backlog > PRUNE,
        "more expired between two touches than one prune takes, or the bound proves nothing"
    );

    // Only the keeper is live: only it is listed, and touches take the dead members out,
    // exactly one prune's worth each, until it is alone.
    let only_keeper =
        |list: Vec<circumflex_session::SessionInfo>| list.len() == 1 && list[0].id == keeper;
    assert!(only_keeper(
        engine.sessions_of(user).await.expect("sessions_of")
    ));
    let dead = look(&server, &index).card - 1;
    assert!(
        dead > PRUNE,
        "{dead} dead members left: more than one prune takes"
    );
    let mut touches = 0;
    loop {
        let before = look(&server, &index).card;
        if before == 1 {
            break;
        }
        assert!(only_keeper(
            engine.sessions_of(user).await.expect("sessions_of")
        ));
        touches += 1;
        assert_eq!(before - look(&server, &index).card, (before - 1).min(PRUNE));
    }
    assert_eq!(touches, dead.div_ceil(PRUNE));
    assert_eq!(raw_exists(&server, &session_of(user, 0)), 0);

    // Revoking the last session empties the index, which deletes it.
    assert!(engine.revoke(user, &keeper).await.expect("revoke"));
    assert!(engine
        .sessions_of(user)
        .await
        .expect("sessions_of")
        .is_empty());
    assert_eq!(
        raw_exists(&server, &index),
        0,
        "an emptied index is deleted"
    );

    // The untouched index held its dead members while it lived, and is gone once its own TTL
    // has passed.
    assert!(
        idle_seen_dead,
        "{idle}'s index was seen with 299 dead members"
    );
    let pttl = raw_pttl(&server, &idle_index);
    if pttl > 0 {
        tokio::time::sleep(Duration::from_millis(pttl as u64 + 50)).await;
    }
    assert_eq!(
        raw_exists(&server, &idle_index),
        0,
        "the index's TTL ran out"
    );
    assert_eq!(raw_exists(&server, &session_of(idle, 0)), 0);
}

#[actix_web::test]
async fn a_session_that_expires_on_its_own_leaves_no_member_after_the_next_touch() {
    let server = RedisServer::start();
    let engine = SessionEngine::new(redis_backend(&server).await);
    let c = testing::start(&engine);
    let (user, index) = ("solo", index_of("solo"));
    let short = Duration::from_millis(300);
    // A long session keeps the index alive throughout.
    assert_eq!(
        c.ok(&session_of(user, 0), bind_op(user, TTL), None).await,
        bound()
    );

    // Each touch in turn: a new bind, a refreshing write, a refreshing read of another session
    // (refreshes move the index when the handle says they are due: `Command::reindex`).
    let touches: [(&str, Command); 3] = [
        ("a new bind", bind(user, 10, TTL)),
        (
            "a refreshing write due an index touch",
            Command {
                reindex: true,
                ..cmd(&session_of(user, 0), set(&[("a", "1")]), Some(TTL))
            },
        ),
        (
            "a refreshing read due an index touch",
            Command {
                reindex: true,
                ..cmd(&session_of(user, 0), get(&["a"]), Some(TTL))
            },
        ),
    ];
    for (n, (what, touch)) in (1..).zip(touches) {
        let expiring = session_of(user, n);
        let member = format!("{n:032x}");
        assert_eq!(c.ok(&expiring, bind_op(user, short), None).await, bound());
        until_gone(&server, &expiring).await;
        assert!(
            raw_zscore(&server, &index, &member).is_some(),
            "nothing touched the index yet, so the member is still there"
        );
        c.call(touch).await.expect(what);
        assert_eq!(
            raw_zscore(&server, &index, &member),
            None,
            "{what} pruned the expired member"
        );
    }
    let listed: Vec<String> = engine
        .sessions_of(user)
        .await
        .expect("sessions_of")
        .into_iter()
        .map(|s| s.id)
        .collect();
    let mut expected = vec![id_of(user, 0), id_of(user, 10)];
    expected.sort();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(listed_sorted, expected);
}

#[actix_web::test]
async fn a_revoke_racing_writes_never_lets_the_session_come_back() {
    const ROUNDS: u64 = 150;
    let server = RedisServer::start();
    let engine = SessionEngine::new(redis_backend(&server).await);
    let c = testing::start(&engine);
    let (user, index) = ("rita", index_of("rita"));
    let mut rng = StdRng::seed_from_u64(11);
    let (mut split, mut all_gone, mut none_gone) = (0, 0, 0);
    for n in 0..ROUNDS {
        let key = session_of(user, n);
        let (id, member) = (id_of(user, n), format!("{n:032x}"));
        assert_eq!(c.ok(&key, bind_op(user, TTL), None).await, bound());
        let pause = rng.random_range(0..6);

        // Bursts of writes, each burst one batch, one after the other; the revoke starts after
        // a few turns of the executor and lands somewhere among them.
        let writes = async {
            let mut replies = Vec::new();
            for burst in 0..6 {
                let batch = (0..12)
                    .map(|i| {
                        let op = match i % 3 {
                            0 => set(&[(&format!("f{burst}"), "v")]),
                            1 => incr("n", 1),
                            _ => Op::SetTti {
                                mode: WriteMode::Existing,
                                tti: TTL,
                                ttl: TTL,
                            },
                        };
                        Command {
                            reindex: true,
                            ..cmd(&key, op, Some(TTL))
                        }
                    })
                    .collect();
                replies.extend(c.batch(batch).await);
            }
            replies
        };
        let revoke = async {
            for _ in 0..pause {
                tokio::task::yield_now().await;
            }
            match n % 3 {
                0 => engine.revoke(user, &id).await.expect("revoke"),
                1 => {
                    let op = Op::Revoke {
                        user: Arc::from(user),
                        member: member.clone(),
                    };
                    let reply = c.ok(&Arc::from(index.as_str()), op, None).await;
                    reply
                        == Reply::Revoked {
                            members: vec![member.clone()],
                            left: 0,
                        }
                }
                _ => engine.revoke_all(user, None).await.expect("revoke_all") == 1,
            }
        };
        let (replies, revoked) = futures::join!(writes, revoke);
        assert!(revoked, "round {n}: the bound session was revoked");

        // In the order they ran: writes succeed until the revoke, and none after it.
        let replies: Vec<Reply> = replies.into_iter().map(|r| r.expect("a write")).collect();
        let done = replies
            .iter()
            .position(|r| *r == Reply::Gone)
            .unwrap_or(replies.len());
        for r in &replies[..done] {
            assert!(matches!(r, Reply::Done | Reply::Int(_)), "round {n}: {r:?}");
        }
        assert!(
            replies[done..].iter().all(|r| *r == Reply::Gone),
            "round {n}: a write after the revoke was applied: {replies:?}"
        );
        match (done, replies.len() - done) {
            (0, _) => all_gone += 1,
            (_, 0) => none_gone += 1,
            _ => split += 1,
        }

        assert_eq!(raw_exists(&server, &key), 0, "round {n}: the hash is gone");
        assert_eq!(raw_zscore(&server, &index, &member), None, "round {n}");
        assert_eq!(
            raw_exists(&server, &index),
            0,
            "round {n}: no index is left"
        );
        assert!(
            engine
                .sessions_of(user)
                .await
                .expect("sessions_of")
                .is_empty(),
            "round {n}"
        );
        // Later writes and touches with the revoked key find it gone.
        for op in [
            set(&[("late", "1")]),
            incr("n", 1),
            Op::CompareAndSet(WriteMode::Existing, "n".into(), None, b"1".to_vec()),
            Op::SetTti {
                mode: WriteMode::Existing,
                tti: TTL,
                ttl: TTL,
            },
        ] {
            let command = Command {
                reindex: true,
                ..cmd(&key, op, Some(TTL))
            };
            assert_eq!(c.call(command).await.expect("a late write"), Reply::Gone);
        }
        let touch = Command {
            reindex: true,
            ..cmd(&key, Op::Touch, Some(TTL))
        };
        assert_eq!(c.call(touch).await.expect("touch"), Reply::Bool(false));
        assert_eq!(raw_exists(&server, &key), 0, "round {n}: nothing came back");
        assert_eq!(raw_exists(&server, &index), 0, "round {n}: nor its index");
    }
    eprintln!("revoke before every write: {all_gone}, after every write: {none_gone}, among them: {split}");
    assert!(
        split > 0,
        "no revoke landed among the writes, so this test proves nothing"
    );
}

#[actix_web::test]
async fn revoking_all_of_a_users_sessions_reaches_the_live_ones_behind_hundreds_of_expired() {
    let server = RedisServer::start();
    let engine = SessionEngine::new(redis_backend(&server).await);
    let c = testing::start(&engine);
    let (user, index) = ("ida", index_of("ida"));
    // Two live sessions, then 600 that expire unpruned: more than one revoke chunk (256) and
    // more than one prune.
    for n in 0..2 {
        assert_eq!(
            c.ok(&session_of(user, n), bind_op(user, TTL), None).await,
            bound()
        );
    }
    let short = Duration::from_millis(300);
    let binds = (2..602).map(|n| bind(user, n, short)).collect();
    for r in c.batch(binds).await {
        assert_eq!(r.expect("bind"), bound());
    }
    until_gone(&server, &session_of(user, 601)).await;
    let before = look(&server, &index);
    assert_eq!((before.card, before.live), (602, 2), "{before:?}");

    assert_eq!(engine.revoke_all(user, None).await.expect("revoke_all"), 2);
    for n in 0..2 {
        assert_eq!(raw_exists(&server, &session_of(user, n)), 0, "session {n}");
    }
    assert!(engine
        .sessions_of(user)
        .await
        .expect("sessions_of")
        .is_empty());
}
