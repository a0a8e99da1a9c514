//! What a handler hands the session: keys checked, values encoded as JSON, both bounded.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::actor::message::{Fields, META_PREFIX};
use crate::config::SessionConfig;
use crate::error::Error;

/// Longest user key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// The hash fields for `keys`, each checked; no more than a session can hold, so that one
/// call's Redis work stays bounded.
pub(super) fn fields(session: &SessionConfig, keys: &[&str]) -> Result<Fields, Error> {
    let max = session.limits().max_keys;
    if keys.len() as u64 > max {
        return Err(Error::TooManyKeys {
            asked: keys.len(),
            max,
        });
    }
    let mut fields = Fields::default();
    for key in keys {
        check_key(key)?;
        fields.push(key);
    }
    Ok(fields)
}

/// The JSON of a value for `key`, within `session.max_value_bytes`.
pub(super) fn encode<T: Serialize + ?Sized>(
    session: &SessionConfig,
    key: &str,
    value: &T,
) -> Result<Vec<u8>, Error> {
    check_key(key)?;
    let raw = serde_json::to_vec(value).map_err(|e| Error::serialization(key, e))?;
    let max = session.max_value_bytes;
    if raw.len() > max {
        return Err(Error::ValueTooLarge {
            key: key.to_owned(),
            size: raw.len(),
            max,
        });
    }
    Ok(raw)
}

pub(crate) fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || key.as_bytes()[0] == META_PREFIX {
        return Err(Error::InvalidKey(key.chars().take(64).collect()));
    }
    Ok(())
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, raw: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(raw).map_err(|e| Error::serialization(key, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        assert!(check_key("user").is_ok());
        assert!(matches!(check_key(""), Err(Error::InvalidKey(_))));
        assert!(matches!(check_key("\0created"), Err(Error::InvalidKey(_))));
        assert!(matches!(
            check_key(&"k".repeat(257)),
            Err(Error::InvalidKey(_))
        ));
        assert!(check_key(&"k".repeat(256)).is_ok());
    }
}
