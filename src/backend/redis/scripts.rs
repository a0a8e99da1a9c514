//! The Lua scripts every state-changing command runs in (their contracts are in `lua/`), sent
//! by SHA and loaded again where Redis lost them (`NOSCRIPT`: a restarted server, a promoted
//! replica, `SCRIPT FLUSH`).
//!
//! `lua/index.lua` (how a bound session is listed in its user's index) is put in front of each
//! script that keeps the index, so the index rules are written once.

use redis::{Script, Value};

/// A script's source: the index helpers, then the script.
macro_rules! indexed {
    ($file:literal) => {
        concat!(
            include_str!("../lua/index.lua"),
            include_str!(concat!("../lua/", $file))
        )
    };
}

/// The listing script of sessions by user, which the startup check runs whole.
pub(super) const SESSIONS_SOURCE: &str = indexed!("sessions.lua");

const SOURCES: [&str; 8] = [
    indexed!("write.lua"),
    indexed!("renew.lua"),
    indexed!("invalidate.lua"),
    indexed!("touch.lua"),
    indexed!("bind.lua"),
    SESSIONS_SOURCE,
    indexed!("revoke.lua"),
    include_str!("../lua/settle.lua"),
];

/// The scripts, with their SHAs computed once.
pub(super) struct Scripts {
    pub(super) write: Script,
    pub(super) renew: Script,
    pub(super) invalidate: Script,
    pub(super) touch: Script,
    pub(super) bind: Script,
    pub(super) sessions: Script,
    pub(super) revoke: Script,
    pub(super) settle: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let [write, renew, invalidate, touch, bind, sessions, revoke, settle] =
            SOURCES.map(Script::new);
        Self {
            write,
            renew,
            invalidate,
            touch,
            bind,
            sessions,
            revoke,
            settle,
        }
    }

    /// How many commands [`load`](Self::load) appends.
    pub(super) const LOAD_COMMANDS: usize = SOURCES.len();

    /// Appends the `SCRIPT LOAD`s of every script to `pipe`.
    pub(super) fn load(pipe: &mut redis::Pipeline) {
        for source in SOURCES {
            pipe.cmd("SCRIPT").arg("LOAD").arg(source);
        }
    }
}

/// Whether a reply says that the server does not know the script.
pub(super) fn is_noscript(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if e.code() == "NOSCRIPT")
}
