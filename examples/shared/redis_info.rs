//! Redis's `INFO` text as numbers, for the examples that measure what Redis did (`loadtest`,
//! `cas_cost`). Not an example itself: a directory without `main.rs` is not one to Cargo.

use std::collections::BTreeMap;

/// Calls per command (`cmdstat_*`) and every numeric field of an `INFO` reply.
pub struct RedisInfo {
    /// Calls by command name (`hmget`, `evalsha`, ...).
    pub calls: BTreeMap<String, u64>,
    /// Every field whose value is a number (`used_cpu_user`, `total_commands_processed`, ...).
    pub fields: BTreeMap<String, f64>,
}

/// Reads an `INFO` reply (any sections).
pub fn parse(text: &str) -> RedisInfo {
    let dict = redis::InfoDict::new(text);
    let mut info = RedisInfo {
        calls: BTreeMap::new(),
        fields: BTreeMap::new(),
    };
    for name in dict.keys() {
        let value: String = dict.get(name).unwrap_or_default();
        if let Some(cmd) = name.strip_prefix("cmdstat_") {
            let calls = value.split(',').find_map(|kv| kv.strip_prefix("calls="));
            if let Some(n) = calls.and_then(|s| s.parse().ok()) {
                info.calls.insert(cmd.to_owned(), n);
            }
        } else if let Ok(x) = value.trim().parse() {
            info.fields.insert(name.clone(), x);
        }
    }
    info
}
