//! A primary killed under load: its sessions get 503 until its replica takes over, the other
//! primaries' sessions see no error at all (with `cluster-require-full-coverage no`), and what
//! the dead primary held is readable on the replica. With Redis's default of full coverage,
//! every primary refuses every command (`CLUSTERDOWN`) between the moment the dead primary is
//! marked failed and the promotion: then every session may see a 503, and nothing worse. The
//! tests measure the error windows and print them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use circumflex_session::testing::{self, Reply};

use crate::load::*;
use crate::support::engine::*;
use crate::support::{owner_in, view_of, RedisCluster};

#[actix_web::test]
async fn a_primary_killed_under_load_fails_only_its_sessions_until_its_replica_takes_over() {
    fail_over_under_load(false).await;
}

#[actix_web::test]
async fn with_full_coverage_required_a_failover_costs_every_session_503s_and_nothing_else() {
    fail_over_under_load(true).await;
}

/// Kills a primary under load and checks what each session saw (see the module doc).
async fn fail_over_under_load(full_coverage: bool) {
    let coverage = if full_coverage { "yes" } else { "no" };
    let mut cluster = RedisCluster::start(1, &["--cluster-require-full-coverage", coverage]);
    let engine = cluster_engine(&cluster).await;
    let c = testing::start(&engine);
    let sessions = sessions_on_every_primary(&cluster, 30, "failover");
    let keys: Vec<Arc<str>> = sessions.iter().map(|(k, _)| k.clone()).collect();
    create_sessions(&c, &keys).await;

    let victim = sessions[0].1;
    let replica = cluster.replica_of(victim);
    let victim_slot = cluster.keyslot(&keys[0]);
    let survivor = *cluster.primaries().iter().find(|&&p| p != victim).unwrap();
    // The replica holds every session before the kill (replication is asynchronous).
    let mut on_replica = cluster.connection(replica);
    let _: () = redis::cmd("READONLY").query(&mut on_replica).unwrap();
    cluster.wait_until("the replica to hold the sessions", || {
        sessions.iter().filter(|(_, p)| *p == victim).all(|(k, _)| {
            redis::cmd("EXISTS")
                .arg(&**k)
                .query::<i64>(&mut on_replica)
                .unwrap()
                == 1
        })
    });

    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let load = hammer(&c, &keys, &stop, start);
    let script = async {
        // Real time: the load runs against the whole cluster first.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let killed = start.elapsed();
        cluster.kill(victim);
        let watcher = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(view) = view_of(survivor) {
                    if owner_in(&view, victim_slot) == Some(replica) {
                        return Some(Instant::now());
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        });
        while !watcher.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let promoted = watcher
            .join()
            .unwrap()
            .expect("the replica took over within 30 s");
        // Real time: the load goes on against the promoted replica.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        stop.store(true, Ordering::Relaxed);
        (killed, promoted - start)
    };
    let (logs, (killed, promoted)) = futures::join!(load, script);

    let mut victim_errors = Vec::new();
    let mut other_errors = Vec::new();
    for ((key, port), log) in sessions.iter().zip(&logs) {
        for (at, error) in &log.errors {
            assert!(is_503(error), "{key}: {error:?}");
            if *port == victim {
                victim_errors.push(*at);
            } else {
                other_errors.push((key.clone(), *at, error.clone()));
            }
        }
    }
    if !full_coverage {
        assert!(
            other_errors.is_empty(),
            "other primaries' sessions failed: {other_errors:?}"
        );
    }
    let others = other_errors.iter().map(|(_, at, _)| *at);
    let other_window = match (others.clone().min(), others.max()) {
        (Some(first), Some(last)) => {
            format!(
                "from {:.2?} to {:.2?} after the kill",
                first - killed,
                last - killed
            )
        }
        _ => "none".to_owned(),
    };
    let first = *victim_errors
        .iter()
        .min()
        .expect("the kill cost some requests a 503");
    let last = *victim_errors.iter().max().unwrap();
    let timeouts = logs
        .iter()
        .flat_map(|l| &l.errors)
        .filter(|(_, e)| matches!(e, circumflex_session::Error::Timeout(_)))
        .count();

    // Counters: exact on the healthy primaries; on the dead one, never above what was sent
    // (no write ran twice), and what async replication lost is counted.
    cluster.wait_stable();
    let (mut lost, mut ran_but_failed, mut acked_total) = (0, 0, 0);
    for ((key, port), log) in sessions.iter().zip(&logs) {
        let stored = counter(&cluster, key);
        acked_total += log.acked;
        if *port == victim {
            assert!(
                stored <= log.acked + log.failed_incrs,
                "{key} ran more than sent"
            );
            lost += log.acked.saturating_sub(stored);
            ran_but_failed += stored.saturating_sub(log.acked);
        } else {
            // CLUSTERDOWN says the command did not run: exact.
            assert_eq!(stored, log.acked, "{key}");
        }
    }
    let stats = engine.stats();
    eprintln!(
        "failover (cluster-require-full-coverage {coverage}): SIGKILL at {killed:.2?}; replica \
         promoted {:.2?} after the kill; 503s on the dead primary's 30 sessions from {:.2?} to \
         {:.2?} after the kill (window {:.2?}, ending {:.2?} after the promotion): {} errors \
         ({timeouts} timeouts); on the 60 other sessions {} errors ({other_window}); \
         {acked_total} acknowledged increments, {lost} of them lost with the dead primary \
         (asynchronous replication), {ran_but_failed} answered 503 but applied; {} round trips \
         for {} batches, {} redirects",
        promoted - killed,
        first - killed,
        last - killed,
        last - first,
        last.saturating_sub(promoted),
        victim_errors.len(),
        other_errors.len(),
        stats.round_trips,
        stats.pipelines,
        stats.redirects,
    );

    // The dead primary's sessions are readable on the promoted replica.
    for (key, port) in &sessions {
        if *port == victim {
            let read = c.ok(key, get(&["n"]), Some(TTL)).await;
            assert!(
                matches!(read, Reply::Values(ref v) if v[0].is_some()),
                "{key}: {read:?}"
            );
        }
    }
    // The old primary comes back as a replica of the new one; nothing notices.
    cluster.restart(victim);
    cluster.wait_stable();
    assert_eq!(cluster.owner(victim_slot), replica);
    for key in &keys {
        assert!(matches!(c.ok(key, incr("n", 1), None).await, Reply::Int(_)));
    }
}
