//! `redis-cli --cluster reshard` under load: slots move with their keys while sessions are
//! incremented and read. Every increment answered must be counted exactly once: no lost and
//! no duplicate writes, whatever the redirects.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use circumflex_session::testing;

use crate::load::*;
use crate::support::{owner_in, RedisCluster};

/// Slots moved: the lowest of the source primary's, as redis-cli takes them.
const MOVED_SLOTS: u16 = 1200;

#[actix_web::test]
async fn a_reshard_under_load_loses_and_duplicates_no_increment() {
    let cluster = Arc::new(RedisCluster::start(0, &[]));
    let engine = cluster_engine(&cluster).await;
    let c = testing::start(&engine);
    let primaries = cluster.primaries();
    let (from, to) = (primaries[0], primaries[1]);
    let before_view = cluster.view(from);
    let lowest = before_view
        .iter()
        .find(|(_, _, port)| *port == from)
        .map(|(start, _, _)| *start)
        .unwrap();
    // Most sessions in the slots that move, the rest anywhere.
    let mut keys: Vec<Arc<str>> = (0..150)
        .map(|i| session_in_slots(lowest..lowest + MOVED_SLOTS, i * 25, "reshard"))
        .collect();
    keys.extend(
        sessions_on_every_primary(&cluster, 20, "reshard")
            .into_iter()
            .map(|(k, _)| k),
    );
    create_sessions(&c, &keys).await;
    let owners_before: Vec<u16> = keys
        .iter()
        .map(|k| owner_in(&before_view, cluster.keyslot(k)).unwrap())
        .collect();

    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let load = hammer(&c, &keys, &stop, start);
    let script = async {
        // Real time: the load runs before, during and after the reshard.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let resharding = cluster.clone();
        let began = start.elapsed();
        let reshard = std::thread::spawn(move || {
            resharding.reshard(from, to, MOVED_SLOTS as usize);
        });
        while !reshard.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        reshard
            .join()
            .expect("redis-cli --cluster reshard succeeded");
        let ended = start.elapsed();
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::Relaxed);
        (began, ended)
    };
    let (logs, (began, ended)) = futures::join!(load, script);

    cluster.wait_stable();
    let after_view = cluster.view(to);
    let mut moved = 0;
    let mut errors = 0;
    let mut acked = 0;
    for ((key, log), owner_before) in keys.iter().zip(&logs).zip(&owners_before) {
        for (_, error) in &log.errors {
            assert!(is_503(error), "{key}: {error:?}");
        }
        errors += log.errors.len();
        acked += log.acked;
        let stored = counter(&cluster, key);
        // An increment answered 503 may have run; one answered with its value ran once.
        assert!(
            (log.acked..=log.acked + log.failed_incrs).contains(&stored),
            "{key}: {stored} stored, {} acknowledged, {} failed",
            log.acked,
            log.failed_incrs
        );
        moved += usize::from(owner_in(&after_view, cluster.keyslot(key)) != Some(*owner_before));
    }
    let stats = engine.stats();
    let per_primary: BTreeMap<u16, usize> = cluster.slot_counts();
    eprintln!(
        "reshard: {MOVED_SLOTS} slots moved in {:.2?} under load; {moved} of {} sessions moved; \
         {acked} increments acknowledged, all counted once; {errors} errors; {} redirects; {} \
         round trips for {} batches; slots now {per_primary:?}",
        ended - began,
        keys.len(),
        stats.redirects,
        stats.round_trips,
        stats.pipelines,
    );
    assert!(moved >= 100, "the reshard moved only {moved} sessions");
    assert!(stats.redirects > 0, "the load met no redirect: {stats:?}");
}
