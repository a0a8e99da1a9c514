//! The Lua scripts every state-changing command runs in (their contracts are in `lua/`), sent
//! by SHA and loaded again where Redis lost them (`NOSCRIPT`: a restarted server, a promoted
//! replica, `SCRIPT FLUSH`).

use redis::{Script, Value};

const WRITE_SCRIPT: &str = include_str!("../lua/write.lua");
const RENEW_SCRIPT: &str = include_str!("../lua/renew.lua");
const INVALIDATE_SCRIPT: &str = include_str!("../lua/invalidate.lua");

/// The three scripts, with their SHAs computed once.
pub(super) struct Scripts {
    pub(super) write: Script,
    pub(super) renew: Script,
    pub(super) invalidate: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Self {
            write: Script::new(WRITE_SCRIPT),
            renew: Script::new(RENEW_SCRIPT),
            invalidate: Script::new(INVALIDATE_SCRIPT),
        }
    }

    /// How many commands [`load`](Self::load) appends.
    pub(super) const LOAD_COMMANDS: usize = 3;

    /// Appends the `SCRIPT LOAD`s of every script to `pipe`.
    pub(super) fn load(pipe: &mut redis::Pipeline) {
        for source in [WRITE_SCRIPT, RENEW_SCRIPT, INVALIDATE_SCRIPT] {
            pipe.cmd("SCRIPT").arg("LOAD").arg(source);
        }
    }
}

/// Whether a reply says that the server does not know the script.
pub(super) fn is_noscript(value: &Value) -> bool {
    matches!(value, Value::ServerError(e) if e.code() == "NOSCRIPT")
}
