//! The baseline a loaded state carries, and what a save changes against it.
//!
//! actix-session's `SessionStore` sees no request: `load` hands a map to the middleware, the
//! handler changes it through `Session`, and `update` gets the whole map back. To write only
//! what the handler changed, `update` must know what `load` returned *for this request*, and
//! two requests with one cookie interleave on one worker, so a store-side map keyed by session
//! would mix them up. The baseline therefore travels inside the state: one reserved entry,
//! [`BASELINE`], whose value is a JSON object from each loaded key to a digest of its value.
//!
//! The digests are SipHash under a key drawn once per store (`RandomState`), so a client that
//! chooses a value cannot make it collide with the one it replaces (which would make the
//! change look like no change, and not be written). An accidental collision is a 2^-64 event.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

/// The reserved entry of a loaded state. It starts with NUL, as our metadata fields do, so no
/// key a handler may store can collide with it.
pub(crate) const BASELINE: &str = "\0baseline";

/// A state as actix-session keeps it: keys to JSON text.
pub(super) type State = HashMap<String, String>;

/// What a save writes: keys whose value is new or changed (`HSET`), and loaded keys the
/// handler removed (`HDEL`). Never both for one key.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Changes {
    pub(super) set: Vec<(String, String)>,
    pub(super) remove: Vec<String>,
}

/// A saved state, against what it was loaded as.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Diff {
    /// The state carried its baseline: these are the handler's changes.
    Changes(Changes),
    /// No baseline (the handler called `clear()`, or overwrote the reserved entry): the state
    /// replaces the session whole.
    Replace(State),
}

/// The digests of one store.
pub(super) struct Digests(RandomState);

impl Digests {
    pub(super) fn new() -> Self {
        Self(RandomState::new())
    }

    fn of(&self, value: &str) -> u64 {
        self.0.hash_one(value)
    }

    /// The reserved entry's value for a state as loaded.
    pub(super) fn baseline(&self, state: &State) -> String {
        let digests: HashMap<&str, u64> = state
            .iter()
            .map(|(key, value)| (key.as_str(), self.of(value)))
            .collect();
        // A map of strings to integers always serialises.
        serde_json::to_string(&digests).unwrap_or_default()
    }

    /// Takes the baseline out of a saved state and diffs the rest against it.
    pub(super) fn diff(&self, mut state: State) -> Diff {
        let baseline = state
            .remove(BASELINE)
            .and_then(|raw| serde_json::from_str::<HashMap<String, u64>>(&raw).ok());
        let Some(baseline) = baseline else {
            return Diff::Replace(state);
        };
        Diff::Changes(changes(state, &baseline, |digest, value| {
            *digest == self.of(value)
        }))
    }
}

/// Takes the baseline out of a state that is saved as a new session (after `renew`).
pub(super) fn strip(state: &mut State) {
    state.remove(BASELINE);
}

/// The changes that turn the session's `current` fields into `state`: what a save without a
/// baseline writes.
pub(super) fn against_store(state: State, current: Vec<(String, Vec<u8>)>) -> Changes {
    let current: HashMap<String, Vec<u8>> = current.into_iter().collect();
    changes(state, &current, |old, value| {
        old.as_slice() == value.as_bytes()
    })
}

/// The changes from `before` (each key's value, or what stands for it) to `state`: keys of
/// `before` that `state` lacks are removed; keys of `state` that `before` lacks, or whose
/// value `same` says changed, are set.
fn changes<V>(
    state: State,
    before: &HashMap<String, V>,
    same: impl Fn(&V, &str) -> bool,
) -> Changes {
    let remove = before
        .keys()
        .filter(|key| !state.contains_key(*key))
        .cloned()
        .collect();
    let set = state
        .into_iter()
        .filter(|(key, value)| !before.get(key).is_some_and(|old| same(old, value)))
        .collect();
    Changes { set, remove }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(pairs: &[(&str, &str)]) -> State {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn loaded(digests: &Digests, pairs: &[(&str, &str)]) -> State {
        let mut state = state(pairs);
        let baseline = digests.baseline(&state);
        state.insert(BASELINE.to_owned(), baseline);
        state
    }

    fn sorted(mut changes: Changes) -> Changes {
        changes.set.sort();
        changes.remove.sort();
        changes
    }

    #[test]
    fn an_unchanged_state_changes_nothing() {
        let digests = Digests::new();
        let state = loaded(&digests, &[("user", "\"ann\""), ("n", "1")]);
        assert_eq!(digests.diff(state), Diff::Changes(Changes::default()));
    }

    #[test]
    fn only_new_and_changed_keys_are_set_and_only_removed_keys_removed() {
        let digests = Digests::new();
        let mut state = loaded(&digests, &[("user", "\"ann\""), ("n", "1"), ("gone", "2")]);
        state.insert("n".into(), "2".into());
        state.insert("new".into(), "true".into());
        state.remove("gone");
        let Diff::Changes(changes) = digests.diff(state) else {
            panic!("the baseline was there");
        };
        assert_eq!(
            sorted(changes),
            Changes {
                set: vec![("n".into(), "2".into()), ("new".into(), "true".into())],
                remove: vec!["gone".into()],
            }
        );
    }

    #[test]
    fn a_state_without_its_baseline_replaces_the_session() {
        let digests = Digests::new();
        let mut state = loaded(&digests, &[("user", "\"ann\"")]);
        state.clear();
        state.insert("theme".into(), "\"dark\"".into());
        assert_eq!(
            digests.diff(state),
            Diff::Replace(self::state(&[("theme", "\"dark\"")]))
        );
    }

    #[test]
    fn a_baseline_the_handler_overwrote_counts_as_none() {
        let digests = Digests::new();
        let mut state = loaded(&digests, &[("user", "\"ann\"")]);
        state.insert(BASELINE.into(), "\"mine\"".into());
        assert!(matches!(digests.diff(state), Diff::Replace(s) if s.len() == 1));
    }

    #[test]
    fn the_baseline_is_json_so_a_handler_that_decodes_every_entry_does_not_fail() {
        let digests = Digests::new();
        let state = loaded(&digests, &[("a", "1"), ("b \"quoted\"", "2")]);
        let value: serde_json::Value = serde_json::from_str(&state[BASELINE]).unwrap();
        assert_eq!(value.as_object().map(|o| o.len()), Some(2));
    }

    #[test]
    fn digests_differ_between_stores() {
        let (a, b) = (Digests::new(), Digests::new());
        assert_ne!(a.of("\"ann\""), b.of("\"ann\""), "one key per store");
        assert_eq!(a.of("\"ann\""), a.of("\"ann\""));
    }

    #[test]
    fn a_replace_writes_what_differs_from_the_store_and_removes_the_rest() {
        let current = vec![
            ("same".to_owned(), b"1".to_vec()),
            ("changed".to_owned(), b"1".to_vec()),
            ("stale".to_owned(), b"1".to_vec()),
        ];
        let state = state(&[("same", "1"), ("changed", "2"), ("new", "3")]);
        assert_eq!(
            sorted(against_store(state, current)),
            Changes {
                set: vec![("changed".into(), "2".into()), ("new".into(), "3".into())],
                remove: vec!["stale".into()],
            }
        );
    }
}
