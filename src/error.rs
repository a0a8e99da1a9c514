//! The one public error type.

use std::time::Duration;

use actix_web::{http::StatusCode, HttpResponse, ResponseError};

/// Everything a session operation can fail with.
///
/// At the HTTP edge every variant becomes an opaque response: `503 Service Unavailable` when
/// the store is overloaded, down, slow, refusing our credentials or out of memory, and `500
/// Internal Server Error` otherwise. The cause is logged through `tracing`, never sent to the
/// client: a store outage once when it starts (by the engine, at `error`) and once when it
/// ends (at `info`), each 503 response only at `debug`; each 500 at `error`.
///
/// A 503 for [`Timeout`](Error::Timeout) or [`Unavailable`](Error::Unavailable) does not say
/// that nothing happened: a write that had already been sent to Redis may have been applied.
/// A command that was still queued when its deadline passed was never sent.
///
/// ```
/// use std::time::Duration;
/// use actix_web::{body::MessageBody, http::StatusCode, ResponseError};
/// use circumflex_session::Error;
///
/// let slow = Error::Timeout(Duration::from_secs(2));
/// assert_eq!(slow.status_code(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(slow.kind(), "timeout"); // for logs and metrics
/// let bug = Error::Server("WRONGTYPE Operation against a key holding the wrong kind".into());
/// assert_eq!(bug.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
/// // The client learns nothing of the cause:
/// let body = bug.error_response().into_body().try_into_bytes().unwrap();
/// assert_eq!(body, "Internal Server Error");
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Too many commands are queued; this one was refused at once.
    #[error("session store overloaded: {0} commands already queued")]
    Overloaded(usize),
    /// The operation did not complete within its deadline.
    #[error("session operation timed out after {0:?}")]
    Timeout(Duration),
    /// Redis could not be reached, the connection broke, or Redis refused to serve us
    /// (`NOAUTH`, `WRONGPASS`, `NOPERM`, `LOADING`, `READONLY`, `MASTERDOWN`, `MISCONF`); every command
    /// of the batch fails.
    #[error("session store unavailable: {0}")]
    Unavailable(#[source] StoreError),
    /// Redis is over its `maxmemory` and refused a write that would grow it. Reads, removals
    /// and logouts still work.
    #[error("session store is out of memory and refuses writes: {0}")]
    StoreFull(String),
    /// Redis answered this one command with an error (for example `WRONGTYPE`).
    #[error("session store rejected the command: {0}")]
    Server(String),
    /// A value could not be serialised, or a stored value did not deserialise into the type
    /// asked for.
    #[error("session value for key {key:?} could not be (de)serialised: {source}")]
    Serialization {
        /// The session key involved.
        key: String,
        /// What serde_json said.
        #[source]
        source: std::sync::Arc<serde_json::Error>,
    },
    /// The key is empty, too long, or starts with the reserved NUL byte.
    #[error("invalid session key {0:?}: keys are 1 to 256 bytes and must not start with NUL")]
    InvalidKey(String),
    /// The serialised value is larger than `session.max_value_bytes`.
    #[error("value for session key {key:?} is {size} bytes, more than the {max} allowed")]
    ValueTooLarge {
        /// The session key.
        key: String,
        /// Serialised size.
        size: usize,
        /// Configured maximum.
        max: usize,
    },
    /// The write would take the session past `session.max_keys` or
    /// `session.max_session_bytes`; nothing was written.
    #[error(
        "session is full: the write would take it to {keys} keys and {bytes} bytes, past the \
         limit of {max_keys} keys or {max_bytes} bytes"
    )]
    SessionFull {
        /// User keys the session would have had.
        keys: u64,
        /// Bytes (keys plus values) the session would have had.
        bytes: u64,
        /// `session.max_keys`.
        max_keys: u64,
        /// `session.max_session_bytes`.
        max_bytes: u64,
    },
    /// One call named more keys than a session can hold (`session.max_keys`).
    #[error("{asked} keys asked for in one call, more than the {max} a session can hold")]
    TooManyKeys {
        /// Keys named.
        asked: usize,
        /// `session.max_keys`.
        max: u64,
    },
    /// `incr` met a value that is not an integer, or the result would overflow.
    #[error("session value for key {0:?} is not an integer, or incrementing it overflows")]
    NotAnInteger(String),
    /// The batching actor has stopped; no command can be served.
    #[error("session actor is not running")]
    ActorClosed,
    /// `AsyncSession` was extracted in an app that does not wrap `SessionMiddleware`.
    #[error("AsyncSession used without SessionMiddleware: wrap the App with SessionMiddleware")]
    MiddlewareMissing,
    /// Invalid configuration.
    #[error("invalid session configuration: {0}")]
    Config(String),
    /// An argument is out of range: an empty or too long user id or label, a session id that
    /// is not one, a time to idle outside `session.min_tti_secs..=session.max_tti_secs`.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// [`update`](crate::AsyncSession::update) met a concurrent change of the key on every
    /// attempt and gave up; nothing was written by the last attempt. A `503`: the client may
    /// retry.
    #[error("session key {key:?} kept changing: update gave up after {attempts} attempts")]
    Conflict {
        /// The session key.
        key: String,
        /// Attempts made.
        attempts: u32,
    },
}

/// Why the store could not be reached or refused to serve us, in words an operator can act on.
///
/// Its [`source`](std::error::Error::source) is the Redis client's own error when there is one;
/// that type is not part of this crate's API, so a new major version of the client is not a
/// breaking change here.
#[derive(Debug, Clone)]
pub struct StoreError {
    /// What went wrong, in words; empty when the source says it all.
    message: String,
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// An error with no underlying cause.
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// An error caused by `source`.
    pub(crate) fn caused_by(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(std::sync::Arc::new(source)),
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(source) if self.message.is_empty() => write!(f, "{source}"),
            Some(source) => write!(f, "{}: {source}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::caused_by("", e)
    }
}

impl Error {
    /// [`Error::Unavailable`] for a failure of the Redis client.
    pub(crate) fn unavailable(e: impl Into<StoreError>) -> Self {
        Error::Unavailable(e.into())
    }

    pub(crate) fn serialization(key: &str, source: serde_json::Error) -> Self {
        Error::Serialization {
            key: key.to_owned(),
            source: std::sync::Arc::new(source),
        }
    }

    /// A short, stable name for the kind of error, used in stats and logs (see the example on
    /// [`Error`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Overloaded(_) => "overloaded",
            Error::Timeout(_) => "timeout",
            Error::Unavailable(_) => "unavailable",
            Error::StoreFull(_) => "store_full",
            Error::SessionFull { .. } => "session_full",
            Error::TooManyKeys { .. } => "too_many_keys",
            Error::Server(_) => "server",
            Error::Serialization { .. } => "serialization",
            Error::InvalidKey(_) => "invalid_key",
            Error::ValueTooLarge { .. } => "value_too_large",
            Error::NotAnInteger(_) => "not_an_integer",
            Error::ActorClosed => "actor_closed",
            Error::MiddlewareMissing => "middleware_missing",
            Error::Config(_) => "config",
            Error::InvalidArgument(_) => "invalid_argument",
            Error::Conflict { .. } => "conflict",
        }
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::Overloaded(_)
            | Error::Timeout(_)
            | Error::Unavailable(_)
            | Error::StoreFull(_)
            | Error::Conflict { .. }
            | Error::ActorClosed => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // The engine logs each outage once, when it starts and when it ends; a line per
            // failed request would flood the log for as long as it lasts.
            tracing::debug!(error = %self, kind = self.kind(), "session store unavailable");
        } else {
            tracing::error!(error = %self, kind = self.kind(), "session error");
        }
        HttpResponse::build(status)
            .content_type("text/plain; charset=utf-8")
            .body(status.canonical_reason().unwrap_or("error"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_trouble_maps_to_503_and_the_rest_to_500() {
        assert_eq!(
            Error::Overloaded(3).status_code(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            Error::Timeout(Duration::from_secs(1)).status_code(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            Error::InvalidKey(String::new()).status_code(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn response_body_does_not_leak_the_cause() {
        let response = Error::Server("WRONGTYPE secret detail".into()).error_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = actix_web::body::to_bytes(response.into_body());
        let body = futures::executor::block_on(body).unwrap();
        assert_eq!(&body[..], b"Internal Server Error");
    }
}
