//! `SessionMiddleware`: reads the session cookie on the way in, writes it on the way out.
//!
//! # Cookie rules
//! - **In.** The middleware only finds the raw cookie value and hands it to a fresh
//!   [`AsyncSession`]. The signature is checked on first use, so a request whose handler never
//!   touches the session costs neither a MAC nor a Redis command.
//! - **Out.** A `Set-Cookie` is sent only when the request issued a session (first write, or
//!   `renew`), when `invalidate` ended one (a removal cookie with the same path and domain), or
//!   when a persistent cookie's `Max-Age` follows a TTL refresh. A visitor who only reads gets
//!   no cookie.
//! - **Distrust.** A tampered, garbage or unknown cookie, or one whose session expired, is no
//!   session; a write then creates a new session under a new id. A client-presented id is never
//!   adopted.

use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::cookie::{time, Key};
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{HeaderMap, HeaderValue, COOKIE, SET_COOKIE};
use actix_web::HttpMessage;
use futures::future::LocalBoxFuture;

use crate::config::{
    Config, CookieConfig, CookieLifecycle, CookieSecurity, SameSite, SessionConfig, TtlRefresh,
};
use crate::cookie::{CookieCodec, VerifiedCookies};
use crate::engine::SessionEngine;
use crate::error::Error;
use crate::session::{AsyncSession, Binding, CookieUpdate, Policy, RefreshLimiter};

/// Redis-backed, on-demand sessions for an actix-web `App`.
///
/// ```no_run
/// use actix_web::{cookie::Key, App};
/// use circumflex_session::{MemoryBackend, SessionMiddleware};
///
/// let key = Key::generate(); // load a stable 64-byte key in production
/// let app = App::new().wrap(SessionMiddleware::new(MemoryBackend::new(), key));
/// ```
#[derive(Clone)]
pub struct SessionMiddleware {
    engine: SessionEngine,
    codec: Arc<CookieCodec>,
    session: SessionConfig,
}

impl std::fmt::Debug for SessionMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionMiddleware")
            .field("engine", &self.engine)
            .field("cookie", self.codec.config())
            .field("session", &self.session)
            .finish()
    }
}

impl SessionMiddleware {
    /// Secure defaults: a signed, `Secure`, `HttpOnly`, `SameSite=Lax` browser-session cookie
    /// named `session`, 30 minutes time to idle refreshed on use. Exactly
    /// `SessionMiddleware::builder(engine, key).build()`.
    pub fn new(engine: impl Into<SessionEngine>, key: Key) -> Self {
        Self::builder(engine, key).build()
    }

    /// A builder to change any of the defaults.
    pub fn builder(engine: impl Into<SessionEngine>, key: Key) -> SessionMiddlewareBuilder {
        SessionMiddlewareBuilder {
            engine: engine.into(),
            key,
            old_keys: Vec::new(),
            cookie: CookieConfig::default(),
            session: SessionConfig::default(),
        }
    }

    /// Builds the middleware from the `[cookie]` and `[session]` sections of a [`Config`],
    /// validating them.
    pub fn from_config(
        engine: impl Into<SessionEngine>,
        key: Key,
        config: &Config,
    ) -> Result<Self, Error> {
        config.cookie.validate()?;
        config.session.validate()?;
        let mut builder = Self::builder(engine, key);
        builder.cookie = config.cookie.clone();
        builder.session = config.session.clone();
        Ok(builder.build())
    }

    /// The engine behind this middleware (for its stats).
    pub fn engine(&self) -> &SessionEngine {
        &self.engine
    }
}

/// Builder for [`SessionMiddleware`]; every setter documents its default.
#[must_use]
pub struct SessionMiddlewareBuilder {
    engine: SessionEngine,
    key: Key,
    old_keys: Vec<Key>,
    cookie: CookieConfig,
    session: SessionConfig,
}

impl std::fmt::Debug for SessionMiddlewareBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionMiddlewareBuilder")
            .field("cookie", &self.cookie)
            .field("session", &self.session)
            .finish()
    }
}

impl SessionMiddlewareBuilder {
    /// Cookie name. Default `session`. Must be a valid cookie name (token characters).
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie.name = name.into();
        self
    }

    /// `Secure` attribute. Default `true`: the cookie only travels over HTTPS (browsers also
    /// accept it on `http://localhost`).
    pub fn cookie_secure(mut self, secure: bool) -> Self {
        self.cookie.secure = secure;
        self
    }

    /// `HttpOnly` attribute. Default `true`: scripts cannot read the cookie.
    pub fn cookie_http_only(mut self, http_only: bool) -> Self {
        self.cookie.http_only = http_only;
        self
    }

    /// `SameSite` attribute. Default [`SameSite::Lax`].
    pub fn cookie_same_site(mut self, same_site: SameSite) -> Self {
        self.cookie.same_site = same_site;
        self
    }

    /// `Path` attribute. Default `/`.
    pub fn cookie_path(mut self, path: impl Into<String>) -> Self {
        self.cookie.path = path.into();
        self
    }

    /// `Domain` attribute. Default none: a host-only cookie.
    pub fn cookie_domain(mut self, domain: impl Into<String>) -> Self {
        self.cookie.domain = Some(domain.into());
        self
    }

    /// Signed (default) or private (encrypted) cookie.
    pub fn cookie_security(mut self, security: CookieSecurity) -> Self {
        self.cookie.security = security;
        self
    }

    /// Browser-session cookie (default) or persistent cookie with `Max-Age` = time to idle.
    pub fn cookie_lifecycle(mut self, lifecycle: CookieLifecycle) -> Self {
        self.cookie.lifecycle = lifecycle;
        self
    }

    /// A previous key that still verifies cookies (key rotation). New cookies are signed with
    /// the key given to `builder`. Default: none.
    pub fn old_key(mut self, key: Key) -> Self {
        self.old_keys.push(key);
        self
    }

    /// Time to idle of a logged-in (renewed) session: unused this long, it expires. Default 30
    /// minutes.
    pub fn tti(mut self, tti: Duration) -> Self {
        self.session.tti_secs = tti.as_secs().max(1);
        self
    }

    /// Time to idle of a session that never logged in (was never
    /// [renewed](crate::AsyncSession::renew)). Default 10 minutes, capped at [`tti`](Self::tti).
    /// Anonymous sessions are the ones a client can create in bulk, so they get the shorter
    /// life; set it equal to `tti` to treat every session alike.
    pub fn anonymous_tti(mut self, tti: Duration) -> Self {
        self.session.anonymous_tti_secs = tti.as_secs().max(1);
        self
    }

    /// When the idle timer is pushed back. Default [`TtlRefresh::OnUse`].
    pub fn ttl_refresh(mut self, refresh: TtlRefresh) -> Self {
        self.session.refresh = refresh;
        self
    }

    /// Refresh the TTL only when at least this percentage (0 to 99) of the time to idle has
    /// passed since this worker last refreshed the session. Default 0: every request that uses
    /// the session refreshes it. With `p`, an idle session may expire up to `p`% of the time to
    /// idle early, and a busy session costs about one refresh per window instead of one per
    /// request.
    pub fn refresh_after_percent(mut self, percent: u8) -> Self {
        self.session.refresh_after_percent = percent.min(99);
        self
    }

    /// Absolute lifetime cap from creation, whatever the activity. Default none.
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.session.max_lifetime_secs = Some(lifetime.as_secs().max(1));
        self
    }

    /// Largest serialised value `set` accepts. Default 64 KiB. At most
    /// [`max_session_bytes`](Self::max_session_bytes).
    pub fn max_value_bytes(mut self, max: usize) -> Self {
        self.session.max_value_bytes = max.max(1);
        self
    }

    /// Most keys one session may hold; a write past it fails with
    /// [`Error::SessionFull`] and changes nothing. Default 256.
    pub fn max_keys(mut self, max: usize) -> Self {
        self.session.max_keys = max.max(1);
        self
    }

    /// Most bytes (keys plus serialised values) one session may hold; a write past it fails
    /// with [`Error::SessionFull`] and changes nothing. Default 256
    /// KiB. It bounds the cost of every Redis call about one session (`entries`, a write).
    pub fn max_session_bytes(mut self, max: usize) -> Self {
        self.session.max_session_bytes = max;
        self
    }

    /// Builds the middleware.
    ///
    /// # Panics
    /// If a setting made through this builder is invalid (a cookie name or path, or
    /// `max_session_bytes` below `max_value_bytes`): a programming error found at start-up.
    /// Use [`SessionMiddleware::from_config`] for settings from a file.
    pub fn build(self) -> SessionMiddleware {
        if let Err(e) = self.cookie.validate().and(self.session.validate()) {
            panic!("{e}");
        }
        SessionMiddleware {
            engine: self.engine,
            codec: Arc::new(CookieCodec::new(self.key, self.old_keys, self.cookie)),
            session: self.session,
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for SessionMiddleware
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = SessionService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        // One call per worker: with `Placement::PerWorker` each worker gets its own actor.
        ready(Ok(SessionService {
            service: Rc::new(service),
            binding: Arc::new(Binding {
                engine: self.engine.clone(),
                actor: self.engine.actor(),
                policy: Policy {
                    codec: self.codec.clone(),
                    session: self.session.clone(),
                },
                refreshes: RefreshLimiter::new(&self.session),
                verified: VerifiedCookies::new(),
            }),
        }))
    }
}

/// The per-worker service behind [`SessionMiddleware`].
pub struct SessionService<S> {
    service: Rc<S>,
    binding: Arc<Binding>,
}

impl<S> std::fmt::Debug for SessionService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService").finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for SessionService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        // Nothing about the session is looked at here: the extractor reads the cookie the
        // first time a handler asks for the session, so a request that never does costs one
        // `Arc` clone.
        req.extensions_mut().insert(Bound(self.binding.clone()));
        let binding = self.binding.clone();
        let response = self.service.call(req);
        Box::pin(async move {
            let mut response = response.await?;
            let session = response
                .request()
                .extensions()
                .get::<AsyncSession>()
                .cloned();
            let Some(session) = session else {
                return Ok(response);
            };
            let cookie = match session.cookie_update() {
                CookieUpdate::Keep => return Ok(response),
                CookieUpdate::Set(ticket, ttl) => {
                    let max_age = time::Duration::seconds(ttl.as_secs() as i64);
                    binding.policy.codec.encode(&ticket, Some(max_age))
                }
                CookieUpdate::Remove => binding.policy.codec.removal(),
            };
            match HeaderValue::from_str(&cookie.to_string()) {
                Ok(value) => {
                    response.headers_mut().append(SET_COOKIE, value);
                }
                Err(e) => tracing::error!(error = %e, "session cookie is not a valid header"),
            }
            Ok(response)
        })
    }
}

/// What the middleware leaves in a request's extensions for the extractor: this worker's
/// binding, from which the request's [`AsyncSession`] is made on first extraction.
pub(crate) struct Bound(pub(crate) Arc<Binding>);

/// The raw value of the named cookie, without parsing the others into a jar.
pub(crate) fn find_cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .filter_map(|header| header.to_str().ok())
        .flat_map(|header| header.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.trim_matches('"').to_owned())
        })
}
