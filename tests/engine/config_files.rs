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
