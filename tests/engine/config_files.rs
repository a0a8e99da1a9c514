//! Every shipped config file parses, validates and stays in step with the code's defaults.

use std::collections::BTreeMap;
use std::path::PathBuf;

use actix_web::cookie::Key;
use circumflex_session::{Config, MemoryBackend, SessionMiddleware};

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
}

/// Every `*.toml` in `config/`, with its text.
fn config_files() -> Vec<(PathBuf, String)> {
    let mut files: Vec<(PathBuf, String)> = std::fs::read_dir(config_dir())
        .expect("config/ exists")
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            (path, text)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_config_file_parses_and_validates() {
    let files = config_files();
    assert!(
        files.iter().any(|(path, _)| path.ends_with("default.toml")),
        "config/default.toml is missing; found {files:?}"
    );
    for (path, text) in files {
        let config = Config::from_toml(&text)
            .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
        config
            .validate()
            .unwrap_or_else(|e| panic!("{} does not validate: {e}", path.display()));
        // And the middleware accepts its cookie and session sections.
        SessionMiddleware::from_config(MemoryBackend::new(), Key::generate(), &config)
            .unwrap_or_else(|e| panic!("{} is refused by the middleware: {e}", path.display()));
    }
}

#[test]
fn default_toml_states_exactly_the_code_defaults() {
    let text = std::fs::read_to_string(config_dir().join("default.toml")).unwrap();
    let config = Config::from_toml(&text).unwrap();
    assert_eq!(config, Config::default());
}

/// `section -> keys` mentioned in a TOML file, set or commented out (`# key = ...`).
fn mentioned_keys(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_owned();
            continue;
        }
        let line = line.trim_start_matches('#').trim();
        if let Some((key, _)) = line.split_once('=') {
            let key = key.trim();
            if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                sections
                    .entry(current.clone())
                    .or_default()
                    .push(key.to_owned());
            }
        }
    }
    sections
}

#[test]
fn default_toml_mentions_every_config_field() {
    let text = std::fs::read_to_string(config_dir().join("default.toml")).unwrap();
    let mentioned = mentioned_keys(&text);
    // JSON keeps `None` fields (as null), so every field of every section shows up.
    let all = serde_json::to_value(Config::default()).unwrap();
    let mut missing = Vec::new();
    for (section, fields) in all.as_object().unwrap() {
        for field in fields.as_object().unwrap().keys() {
            let found = mentioned
                .get(section)
                .is_some_and(|keys| keys.iter().any(|k| k == field));
            if !found {
                missing.push(format!("{section}.{field}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "config/default.toml does not document {missing:?}"
    );
}

/// The only test that touches `REDIS_URL`: environment variables are process-global.
#[test]
fn load_lets_the_redis_url_environment_variable_override_the_file() {
    let default = config_dir().join("default.toml");
    let file_with_url = std::env::temp_dir().join(format!(
        "circumflex-session-config-{}.toml",
        std::process::id()
    ));
    std::fs::write(&file_with_url, "[redis]\nurl = \"redis://file:1\"\n").unwrap();

    std::env::remove_var("REDIS_URL");
    assert_eq!(Config::load(&default).unwrap(), Config::default());
    assert_eq!(
        Config::load(&file_with_url).unwrap().redis.url.as_deref(),
        Some("redis://file:1")
    );

    std::env::set_var("REDIS_URL", "redis://env:2/3");
    let loaded = Config::load(&default).unwrap();
    assert_eq!(loaded.redis.url.as_deref(), Some("redis://env:2/3"));
    let mut expected = Config::default();
    expected.redis.url = Some("redis://env:2/3".to_owned());
    assert_eq!(loaded, expected, "REDIS_URL changed more than redis.url");
    assert_eq!(
        Config::load(&file_with_url).unwrap().redis.url.as_deref(),
        Some("redis://env:2/3"),
        "the environment wins over the file"
    );

    std::env::set_var("REDIS_URL", "");
    assert_eq!(
        Config::load(&file_with_url).unwrap().redis.url.as_deref(),
        Some("redis://file:1"),
        "an empty REDIS_URL counts as unset"
    );

    std::env::remove_var("REDIS_URL");
    let _ = std::fs::remove_file(&file_with_url);
}

#[test]
fn load_of_a_missing_file_is_a_config_error_naming_the_file() {
    let path = config_dir().join("no-such-file.toml");
    let err = Config::load(&path).unwrap_err();
    assert!(
        matches!(err, circumflex_session::Error::Config(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("no-such-file.toml"), "{err}");
}

/// Each setting a builder takes, set to a value the file loader rejects, is rejected by the
/// builder too, naming the same setting: a builder never quietly fixes what a file may not say.
#[test]
fn builders_reject_exactly_what_the_file_loader_rejects() {
    use std::time::Duration;

    use circumflex_session::{ActorConfig, RedisConfig, SessionEngine};

    type Builder = circumflex_session::SessionMiddlewareBuilder;
    /// A file that sets one value, the setting it names, and the builder call that sets it.
    type Case = (&'static str, &'static str, fn(Builder) -> Builder);
    let middleware: [Case; 11] = [
        ("[session]\ntti_secs = 0", "session.tti_secs", |b| {
            b.tti(Duration::ZERO)
        }),
        (
            "[session]\nanonymous_tti_secs = 0",
            "session.anonymous_tti_secs",
            |b| b.anonymous_tti(Duration::from_millis(999)),
        ),
        (
            "[session]\nrefresh_after_percent = 100",
            "session.refresh_after_percent",
            |b| b.refresh_after_percent(100),
        ),
        (
            "[session]\nmax_lifetime_secs = 0",
            "session.max_lifetime_secs",
            |b| b.max_lifetime(Duration::ZERO),
        ),
        (
            "[session]\nmax_value_bytes = 0",
            "session.max_value_bytes",
            |b| b.max_value_bytes(0),
        ),
        ("[session]\nmax_keys = 0", "session.max_keys", |b| {
            b.max_keys(0)
        }),
        (
            "[session]\nmax_session_bytes = 10",
            "session.max_session_bytes",
            |b| b.max_session_bytes(10),
        ),
        ("[cookie]\nname = \"a b\"", "cookie.name", |b| {
            b.cookie_name("a b")
        }),
        ("[cookie]\npath = \"app\"", "cookie.path", |b| {
            b.cookie_path("app")
        }),
        ("[cookie]\nheader = \"x session\"", "cookie.header", |b| {
            b.id_header("x session")
        }),
        ("[cookie]\nheader = \"Cookie\"", "cookie.header", |b| {
            b.id_header("Cookie")
        }),
    ];
    for (toml, setting, set) in middleware {
        let from_file = Config::from_toml(toml).expect_err(toml).to_string();
        assert!(from_file.contains(setting), "{toml}: {from_file}");
        let builder = SessionMiddleware::builder(MemoryBackend::new(), Key::generate());
        let from_builder = set(builder).build().expect_err(setting).to_string();
        assert!(from_builder.contains(setting), "{setting}: {from_builder}");
    }

    let actor = ActorConfig {
        max_batch: 0,
        ..ActorConfig::default()
    };
    let from_file = Config::from_toml("[actor]\nmax_batch = 0").expect_err("max_batch 0");
    let from_code = SessionEngine::with_config(MemoryBackend::new(), actor).expect_err("0");
    assert!(
        from_file.to_string().contains("actor.max_batch"),
        "{from_file}"
    );
    assert!(
        from_code.to_string().contains("actor.max_batch"),
        "{from_code}"
    );

    let redis = RedisConfig::new("redis://127.0.0.1:1").response_timeout(Duration::ZERO);
    let from_file = Config::from_toml("[redis]\nresponse_timeout_ms = 0").expect_err("0 ms");
    let client = redis::Client::open("redis://127.0.0.1:1").expect("a valid URL");
    let from_code = circumflex_session::RedisBackend::from_client(client, redis).expect_err("0");
    assert!(
        from_file.to_string().contains("redis.response_timeout_ms"),
        "{from_file}"
    );
    assert!(
        from_code.to_string().contains("redis.response_timeout_ms"),
        "{from_code}"
    );
}
