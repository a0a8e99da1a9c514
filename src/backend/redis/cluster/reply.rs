//! What one reply of a cluster node asks of us: nothing (the command ran, or failed on its
//! own), a resend elsewhere (`MOVED`, `ASK`), a resend later (`TRYAGAIN`), a resend after
//! loading the scripts (`NOSCRIPT`), or a 503 (`CLUSTERDOWN`).

use redis::{ServerError, Value};

/// What a reply asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// A final reply: the command ran (or Redis refused that one command, e.g. `WRONGTYPE`).
    Done,
    /// The slot is served by `host:port` now (the command did not run): update the map and
    /// send it there. An empty host means the host of the node that answered.
    Moved { slot: u16, host: String, port: u16 },
    /// The slot is migrating and the key is not here (the command did not run): send
    /// `ASKING` and the command to `host:port`, once, without updating the map.
    Ask { host: String, port: u16 },
    /// A multi-key command met a slot in the middle of a migration with only some of its keys
    /// here (the command did not run): try again shortly.
    TryAgain,
    /// The node does not know the script (the command did not run): load it there and send
    /// the command again.
    NoScript,
    /// The cluster, or this slot, is down (the command did not run): a 503 for this command.
    ClusterDown(String),
}

/// Classifies one reply.
pub(super) fn classify(value: &Value) -> Verdict {
    let Value::ServerError(error) = value else {
        return Verdict::Done;
    };
    match error.code() {
        "MOVED" => match redirect(error) {
            Some((Some(slot), host, port)) => Verdict::Moved { slot, host, port },
            _ => garbled(error),
        },
        "ASK" => match redirect(error) {
            Some((_, host, port)) => Verdict::Ask { host, port },
            None => garbled(error),
        },
        "TRYAGAIN" => Verdict::TryAgain,
        "NOSCRIPT" => Verdict::NoScript,
        "CLUSTERDOWN" => Verdict::ClusterDown(text(error)),
        _ => Verdict::Done,
    }
}

/// A redirect we cannot follow: the command did not run, and cannot be placed.
fn garbled(error: &ServerError) -> Verdict {
    Verdict::ClusterDown(format!("unreadable cluster redirect: {}", text(error)))
}

fn text(error: &ServerError) -> String {
    match error.details() {
        Some(details) => format!("{} {details}", error.code()),
        None => error.code().to_owned(),
    }
}

/// `<slot> <host>:<port>` (the host may be empty, and an IPv6 address has colons of its own).
fn redirect(error: &ServerError) -> Option<(Option<u16>, String, u16)> {
    let mut words = error.details()?.split_whitespace();
    let slot = words.next()?.parse::<u16>().ok().filter(|&s| s < 16384);
    let (host, port) = words.next()?.rsplit_once(':')?;
    Some((slot, host.to_owned(), port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server error as the parser makes it from the wire.
    fn error(line: &str) -> Value {
        let bytes = format!("-{line}\r\n").into_bytes();
        redis::parse_redis_value(&bytes).expect("a RESP error")
    }

    #[test]
    fn redirects_name_the_slot_and_the_node() {
        assert_eq!(
            classify(&error("MOVED 3999 127.0.0.1:6381")),
            Verdict::Moved {
                slot: 3999,
                host: "127.0.0.1".into(),
                port: 6381
            }
        );
        assert_eq!(
            classify(&error("MOVED 12 :7002")),
            Verdict::Moved {
                slot: 12,
                host: String::new(),
                port: 7002
            },
            "an empty host is the answering node's"
        );
        assert_eq!(
            classify(&error("ASK 3999 ::1:7000")),
            Verdict::Ask {
                host: "::1".into(),
                port: 7000
            }
        );
    }

    #[test]
    fn retries_reloads_and_outages_are_told_apart_from_final_replies() {
        assert_eq!(
            classify(&error(
                "TRYAGAIN Multiple keys request during rehashing of slot"
            )),
            Verdict::TryAgain
        );
        assert_eq!(
            classify(&error("NOSCRIPT No matching script.")),
            Verdict::NoScript
        );
        assert_eq!(
            classify(&error("CLUSTERDOWN Hash slot not served")),
            Verdict::ClusterDown("CLUSTERDOWN Hash slot not served".into())
        );
        assert_eq!(
            classify(&error("WRONGTYPE Operation against a key")),
            Verdict::Done
        );
        assert_eq!(classify(&Value::Int(1)), Verdict::Done);
    }

    #[test]
    fn a_redirect_that_cannot_be_read_is_a_503_not_a_guess() {
        for line in [
            "MOVED",
            "MOVED 3999",
            "MOVED x 1.2.3.4:5",
            "ASK 1 host:port",
        ] {
            assert!(
                matches!(classify(&error(line)), Verdict::ClusterDown(_)),
                "{line}"
            );
        }
    }
}
