//! The one public error type.

use std::time::Duration;

use actix_web::{http::StatusCode, HttpResponse, ResponseError};

/// Everything a session operation can fail with.
///
/// At the HTTP edge every variant becomes an opaque response: `503 Service Unavailable` when
/// the store is overloaded, down or slow, `500 Internal Server Error` otherwise. The cause is
/// logged through `tracing`, never sent to the client.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Too many commands are queued; this one was refused at once.
    #[error("session store overloaded: {0} commands already queued")]
    Overloaded(usize),
    /// The operation did not complete within its deadline.
    #[error("session operation timed out after {0:?}")]
    Timeout(Duration),
    /// Redis could not be reached, or the connection broke; every command of the batch fails.
    #[error("session store unavailable: {0}")]
    Unavailable(#[source] redis::RedisError),
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
}

impl Error {
    pub(crate) fn serialization(key: &str, source: serde_json::Error) -> Self {
        Error::Serialization {
            key: key.to_owned(),
            source: std::sync::Arc::new(source),
        }
    }

    /// A short, stable name for the kind of error, used in stats and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Overloaded(_) => "overloaded",
            Error::Timeout(_) => "timeout",
            Error::Unavailable(_) => "unavailable",
            Error::Server(_) => "server",
            Error::Serialization { .. } => "serialization",
            Error::InvalidKey(_) => "invalid_key",
            Error::ValueTooLarge { .. } => "value_too_large",
            Error::NotAnInteger(_) => "not_an_integer",
            Error::ActorClosed => "actor_closed",
            Error::MiddlewareMissing => "middleware_missing",
            Error::Config(_) => "config",
        }
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::Overloaded(_)
            | Error::Timeout(_)
            | Error::Unavailable(_)
            | Error::ActorClosed => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        tracing::error!(error = %self, kind = self.kind(), "session error");
        let status = self.status_code();
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
