//! The engine's metrics against a real Redis, read from a Prometheus recorder local to each
//! test (so that other tests' engines never mix in) and compared with the engine's own stats.
//! Only with the `metrics` feature.

use circumflex_session::testing::{self, Handle};
use circumflex_session::{ActorConfig, Error, SessionEngine, StatsSnapshot};

use crate::support::engine::*;
use crate::support::prometheus::Scrape;
use crate::support::RedisServer;

/// An engine on `server` whose metrics go to a Prometheus recorder of its own (registered
/// while the engine is built, so other tests' engines never mix in), with its actor's handle
/// and a way to scrape it.
async fn observed_engine(
    server: &RedisServer,
    config: ActorConfig,
) -> (SessionEngine, Handle, impl Fn() -> Scrape) {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let scrape = recorder.handle();
    let backend = redis_backend(server).await;
    let engine = ::metrics::with_local_recorder(&recorder, || {
        SessionEngine::with_config(backend, config).expect("a valid actor config")
    });
    let handle = testing::start(&engine);
    (engine, handle, move || Scrape::parse(&scrape.render()))
}

/// Checks that every counter the metrics share with the stats says the same.
fn assert_metrics_match(scrape: &Scrape, stats: &StatsSnapshot) {
    let redis = [("backend", "redis")];
    let pairs = [
        (
            "circumflex_session_batch_size_count",
            &redis[..],
            stats.pipelines,
        ),
        (
            "circumflex_session_batch_size_sum",
            &redis[..],
            stats.commands,
        ),
        (
            "circumflex_session_commands_total",
            &redis[..],
            stats.commands,
        ),
        (
            "circumflex_session_round_trips_total",
            &redis[..],
            stats.round_trips,
        ),
        (
            "circumflex_session_redis_commands_total",
            &redis[..],
            stats.redis_commands,
        ),
    ];
    for (name, labels, expected) in pairs {
        assert_eq!(
            scrape.get(name, labels),
            expected as f64,
            "{name}: {stats:?}"
        );
    }
    for (kind, expected) in [
        ("overloaded", stats.errors_overloaded),
        ("timeout", stats.errors_timeout),
        ("unavailable", stats.errors_unavailable),
        ("server", stats.errors_server),
        ("store_full", stats.errors_store_full),
    ] {
        let errors = scrape.get("circumflex_session_errors_total", &[("kind", kind)]);
        assert_eq!(errors, expected as f64, "errors of kind {kind}: {stats:?}");
    }
}

#[actix_web::test]
async fn ten_gets_sent_together_are_one_batch_of_ten_in_the_metrics_as_in_the_stats() {
    let server = RedisServer::start();
    let (engine, handle, scrape) = observed_engine(&server, ActorConfig::default()).await;
    let s = key("observed");
    handle
        .ok(&s, set_new(TTL, &[("name", "ann")]), Some(TTL))
        .await;
    let before = scrape();

    let gets = (0..10).map(|_| cmd(&s, get(&["name"]), None)).collect();
    for result in handle.batch(gets).await {
        assert_eq!(result.ok(), Some(values(&[Some("ann")])));
    }

    let after = scrape();
    let delta =
        |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    assert_eq!(
        delta("circumflex_session_batch_size_count", &[]),
        1.0,
        "one flush"
    );
    assert_eq!(
        delta("circumflex_session_batch_size_sum", &[]),
        10.0,
        "of ten commands"
    );
    assert_eq!(
        delta("circumflex_session_commands_total", &[("op", "get")]),
        10.0
    );
    assert_eq!(
        delta("circumflex_session_commands_total", &[("op", "set")]),
        0.0
    );
    assert_eq!(delta("circumflex_session_round_trips_total", &[]), 1.0);
    assert_eq!(
        delta("circumflex_session_redis_commands_total", &[]),
        1.0,
        "ten reads of one session fused into one HMGET"
    );
    assert_eq!(
        after.get("circumflex_session_commands_total", &[("op", "set")]),
        1.0
    );
    assert!(after.get("circumflex_session_flush_duration_seconds_count", &[]) >= 2.0);
    assert_eq!(
        after.get("circumflex_session_queue_depth", &[]),
        0.0,
        "nothing waits"
    );
    assert_metrics_match(&after, &engine.stats());
}

#[actix_web::test]
async fn refused_and_failed_commands_count_as_errors_of_their_kind_as_in_the_stats() {
    let server = RedisServer::start();
    let config = ActorConfig {
        queue_depth: 2,
        ..ActorConfig::default()
    };
    let (engine, handle, scrape) = observed_engine(&server, config).await;
    let s = key("errors");
    handle
        .ok(&s, set_new(TTL, &[("name", "ann")]), Some(TTL))
        .await;

    // Room for two: the other eight are refused at once.
    let gets = (0..10).map(|_| cmd(&s, get(&["name"]), None)).collect();
    let results = handle.batch(gets).await;
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Overloaded(_))))
        .count();
    assert_eq!(refused, 8, "{results:?}");
    // Incrementing a string: Redis answers this one command with an error.
    let result = handle.run(&s, incr("name", 1), None).await;
    assert!(matches!(result, Err(Error::NotAnInteger(_))), "{result:?}");

    let after = scrape();
    let errors = |kind| after.get("circumflex_session_errors_total", &[("kind", kind)]);
    assert_eq!(errors("overloaded"), 8.0);
    assert_eq!(errors("server"), 1.0);
    assert_eq!(errors("unavailable"), 0.0);
    assert_metrics_match(&after, &engine.stats());
}
