//! How a `SessionMiddleware` is made: `new` (the secure defaults), `builder` and
//! `from_config`, and `SessionMiddlewareBuilder` with every setting, its default and what it
//! does; `build` checks them as the file loader does.
//!
//! Why this file is long: it is almost all documentation, one setter per setting of
//! `[session]` and `[cookie]`, each with its default and, where it changes what a browser or
//! Redis sees, a runnable example (secure defaults, no cookie before the first write, key
//! rotation, the id header, the per-user cap); the code is under 180 lines.

use std::time::Duration;

use actix_web::cookie::Key;

use super::SessionMiddleware;
use crate::config::{
    Config, CookieConfig, CookieLifecycle, CookieSecurity, SameSite, SessionConfig, TtlRefresh,
};
use crate::engine::SessionEngine;
use crate::error::Error;

impl SessionMiddleware {
    /// Secure defaults: a signed, `Secure`, `HttpOnly`, `SameSite=Lax` browser-session cookie
    /// named `session`, 30 minutes time to idle refreshed on use. The same as
    /// `SessionMiddleware::builder(engine, key).build()`, which cannot fail with the defaults.
    ///
    /// ```
    /// use actix_web::cookie::{Key, SameSite};
    /// use actix_web::{test, web, App};
    /// use circumflex_session::{AsyncSession, Error, MemoryBackend, SessionMiddleware};
    ///
    /// async fn handler(session: AsyncSession) -> Result<(), Error> {
    ///     session.set("theme", "dark").await
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let middleware = SessionMiddleware::new(MemoryBackend::new(), Key::generate());
    /// let app = App::new().wrap(middleware).route("/", web::post().to(handler));
    /// let app = test::init_service(app).await;
    /// let response = test::call_service(&app, test::TestRequest::post().to_request()).await;
    /// let cookie = response.response().cookies().next().unwrap();
    /// assert_eq!(cookie.name(), "session");
    /// assert_eq!(cookie.secure(), Some(true));
    /// assert_eq!(cookie.http_only(), Some(true));
    /// assert_eq!(cookie.same_site(), Some(SameSite::Lax));
    /// assert_eq!(cookie.max_age(), None); // the browser forgets it when it closes
    /// # });
    /// ```
    pub fn new(engine: impl Into<SessionEngine>, key: Key) -> Self {
        let builder = Self::builder(engine, key);
        Self::assemble(
            builder.engine,
            builder.key,
            builder.old_keys,
            builder.cookie,
            builder.session,
        )
    }

    /// A builder to change any of the defaults.
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_web::cookie::{time, Key};
    /// use actix_web::{test, web, App};
    /// use circumflex_session::{AsyncSession, CookieLifecycle, Error};
    /// use circumflex_session::{MemoryBackend, SessionMiddleware};
    ///
    /// async fn handler(session: AsyncSession) -> Result<(), Error> {
    ///     session.set("theme", "dark").await
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let middleware = SessionMiddleware::builder(MemoryBackend::new(), Key::generate())
    ///     .cookie_name("sid")
    ///     .cookie_path("/app")
    ///     .cookie_lifecycle(CookieLifecycle::Persistent)
    ///     .tti(Duration::from_secs(3600))
    ///     .anonymous_tti(Duration::from_secs(300))
    ///     .build()?;
    /// let app = App::new().wrap(middleware).route("/app", web::post().to(handler));
    /// let app = test::init_service(app).await;
    /// let request = test::TestRequest::post().uri("/app").to_request();
    /// let response = test::call_service(&app, request).await;
    /// let cookie = response.response().cookies().next().unwrap();
    /// assert_eq!((cookie.name(), cookie.path()), ("sid", Some("/app")));
    /// // Not logged in yet, so the anonymous time to idle:
    /// assert_eq!(cookie.max_age(), Some(time::Duration::seconds(300)));
    /// # Ok::<(), Error>(())
    /// # }).unwrap();
    /// ```
    pub fn builder(engine: impl Into<SessionEngine>, key: Key) -> SessionMiddlewareBuilder {
        SessionMiddlewareBuilder {
            engine: engine.into(),
            key,
            old_keys: Vec::new(),
            cookie: CookieConfig::default(),
            session: SessionConfig::default(),
        }
    }

    /// Builds the middleware from the `[cookie]` and `[session]` sections of a [`Config`].
    ///
    /// ```
    /// use actix_web::cookie::Key;
    /// use circumflex_session::{Config, Error, MemoryBackend, SessionEngine, SessionMiddleware};
    ///
    /// let mut config = Config::from_toml("[cookie]\nname = \"sid\"\n")?;
    /// let engine = SessionEngine::with_config(MemoryBackend::new(), config.actor.clone())?;
    /// let middleware = SessionMiddleware::from_config(engine.clone(), Key::generate(), &config)?;
    /// # let _ = middleware;
    ///
    /// config.session.max_keys = 0; // the fields are public, so checked again here
    /// let refused = SessionMiddleware::from_config(engine, Key::generate(), &config);
    /// assert!(matches!(refused, Err(Error::Config(_))));
    /// # Ok::<(), Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] naming the first setting out of range: the same checks as
    /// [`SessionMiddlewareBuilder::build`].
    pub fn from_config(
        engine: impl Into<SessionEngine>,
        key: Key,
        config: &Config,
    ) -> Result<Self, Error> {
        let mut builder = Self::builder(engine, key);
        builder.cookie = config.cookie.clone();
        builder.session = config.session.clone();
        builder.build()
    }
}

/// Builder for [`SessionMiddleware`]; every setter documents its default.
#[must_use]
pub struct SessionMiddlewareBuilder {
    pub(super) engine: SessionEngine,
    pub(super) key: Key,
    pub(super) old_keys: Vec<Key>,
    pub(super) cookie: CookieConfig,
    pub(super) session: SessionConfig,
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

    /// A request header that may carry the session instead of the cookie, for API and mobile
    /// clients that keep no cookie jar (`cookie.header` in the configuration file). Default
    /// none: off, the header is ignored. A valid header name, compared without regard to case;
    /// not one a browser script may not set (`cookie`, `set-cookie`, `host`, `origin`,
    /// `sec-*`, `proxy-*`, ...), nor `authorization`, which other layers read.
    ///
    /// A request that sends the header, even empty, uses it for the whole request: it carries
    /// exactly the cookie's value (same signing, keys and rules), the cookie is not read, and
    /// the response answers in the same header (the new value, or an empty one after
    /// `invalidate`, with `Cache-Control: no-store`) instead of with a `Set-Cookie`. A request
    /// without it is a cookie request.
    /// The module docs of `middleware.rs` and the README's "Sessions over a header" say more.
    ///
    /// **Security trade-off.** Unlike an `HttpOnly` cookie, the value is readable by the
    /// client's code (a script injected into a browser client can steal it), and a mobile
    /// client must store it safely (platform secure storage, never in logs). In exchange it is
    /// never sent automatically, so requests with it are not exposed to CSRF. Browser clients
    /// on another origin need it in the app's `Access-Control-Expose-Headers` and
    /// `Access-Control-Allow-Headers`. Nothing stops a client from sending it over plain HTTP
    /// as `Secure` does for the cookie: serve it over TLS only.
    ///
    /// ```
    /// use actix_web::{cookie::Key, http::header::HeaderValue, test, web, App, HttpResponse};
    /// use circumflex_session::{AsyncSession, MemoryBackend, SessionMiddleware};
    ///
    /// async fn count(session: AsyncSession) -> actix_web::Result<HttpResponse> {
    ///     Ok(HttpResponse::Ok().json(session.incr("n", 1).await?))
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let middleware = SessionMiddleware::builder(MemoryBackend::new(), Key::generate())
    ///     .id_header("x-session-id")
    ///     .build()
    ///     .unwrap();
    /// let app = App::new().wrap(middleware).route("/", web::get().to(count));
    /// let app = test::init_service(app).await;
    ///
    /// // The first call opts in with an empty header and gets the session's value back in it.
    /// let first = test::TestRequest::get().insert_header(("x-session-id", ""));
    /// let response = test::call_service(&app, first.to_request()).await;
    /// assert!(response.headers().get("set-cookie").is_none());
    /// let value: HeaderValue = response.headers().get("x-session-id").unwrap().clone();
    ///
    /// let next = test::TestRequest::get().insert_header(("x-session-id", value));
    /// let body: i64 = test::call_and_read_body_json(&app, next.to_request()).await;
    /// assert_eq!(body, 2);
    /// # });
    /// ```
    pub fn id_header(mut self, name: impl Into<String>) -> Self {
        self.cookie.header = Some(name.into());
        self
    }

    /// A previous key that still verifies cookies (key rotation). New cookies are signed with
    /// the key given to `builder`. Default: none.
    ///
    /// ```
    /// use actix_web::{cookie::Key, test, web, App};
    /// use circumflex_session::{AsyncSession, Error, SessionEngine, SessionMiddleware};
    ///
    /// async fn login(session: AsyncSession) -> Result<(), Error> {
    ///     session.set("user", "ann").await
    /// }
    ///
    /// async fn whoami(session: AsyncSession) -> Result<String, Error> {
    ///     Ok(session.get::<String>("user").await?.unwrap_or_default())
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let engine = SessionEngine::new(circumflex_session::MemoryBackend::new());
    /// let (old, new) = (Key::generate(), Key::generate());
    /// // Before the rotation: cookies signed with the old key.
    /// let before = App::new()
    ///     .wrap(SessionMiddleware::new(engine.clone(), old.clone()))
    ///     .route("/login", web::post().to(login));
    /// let before = test::init_service(before).await;
    /// let request = test::TestRequest::post().uri("/login").to_request();
    /// let response = test::call_service(&before, request).await;
    /// let cookie = response.response().cookies().next().unwrap().into_owned();
    ///
    /// // After it: the old key still verifies, and the cookie goes back re-signed.
    /// let middleware = SessionMiddleware::builder(engine, new).old_key(old).build()?;
    /// let after = App::new().wrap(middleware).route("/whoami", web::get().to(whoami));
    /// let after = test::init_service(after).await;
    /// let request = test::TestRequest::get().uri("/whoami").cookie(cookie.clone());
    /// let response = test::call_service(&after, request.to_request()).await;
    /// let resigned = response.response().cookies().next().unwrap().into_owned();
    /// assert_ne!(resigned.value(), cookie.value());
    /// assert_eq!(test::read_body(response).await, "ann");
    /// # Ok::<(), Error>(())
    /// # }).unwrap();
    /// ```
    pub fn old_key(mut self, key: Key) -> Self {
        self.old_keys.push(key);
        self
    }

    /// Time to idle of a logged-in (renewed) session: unused this long, it expires. Default 30
    /// minutes. Whole seconds, at least one.
    pub fn tti(mut self, tti: Duration) -> Self {
        self.session.tti_secs = tti.as_secs();
        self
    }

    /// Time to idle of a session that never logged in (was never
    /// [renewed](crate::AsyncSession::renew)). Default 10 minutes, capped at [`tti`](Self::tti).
    /// Anonymous sessions are the ones a client can create in bulk, so they get the shorter
    /// life; set it equal to `tti` to treat every session alike. Whole seconds, at least one.
    pub fn anonymous_tti(mut self, tti: Duration) -> Self {
        self.session.anonymous_tti_secs = tti.as_secs();
        self
    }

    /// When the idle timer is pushed back. Default [`TtlRefresh::OnUse`].
    pub fn ttl_refresh(mut self, refresh: TtlRefresh) -> Self {
        self.session.refresh = refresh;
        self
    }

    /// Refresh the TTL only when at least this percentage (0 to 99) of the time to idle has
    /// passed since this worker last refreshed the session. Default 10. With `p`, an idle
    /// session may expire up to `p`% of the time to idle early, and a busy session costs about
    /// one refresh per window instead of one per request (a read is then one `HMGET`, not an
    /// `HMGET` and a `PEXPIRE`). 0: every request that uses the session refreshes it.
    pub fn refresh_after_percent(mut self, percent: u8) -> Self {
        self.session.refresh_after_percent = percent;
        self
    }

    /// Absolute lifetime cap from creation, whatever the activity. Default none. Whole
    /// seconds, at least one.
    pub fn max_lifetime(mut self, lifetime: Duration) -> Self {
        self.session.max_lifetime_secs = Some(lifetime.as_secs());
        self
    }

    /// Largest serialised value `set` accepts. Default 64 KiB. At least 1 and at most
    /// [`max_session_bytes`](Self::max_session_bytes).
    pub fn max_value_bytes(mut self, max: usize) -> Self {
        self.session.max_value_bytes = max;
        self
    }

    /// Most keys one session may hold, at least 1; a write past it fails with
    /// [`Error::SessionFull`] and changes nothing. Default 256.
    pub fn max_keys(mut self, max: usize) -> Self {
        self.session.max_keys = max;
        self
    }

    /// Most bytes (keys plus serialised values) one session may hold; a write past it fails
    /// with [`Error::SessionFull`] and changes nothing. Default 256
    /// KiB. It bounds the cost of every Redis call about one session (`entries`, a write).
    pub fn max_session_bytes(mut self, max: usize) -> Self {
        self.session.max_session_bytes = max;
        self
    }

    /// Most sessions one user may have at once: [`bind_user`](crate::AsyncSession::bind_user)
    /// past it revokes the user's oldest sessions (first bound first), atomically with the
    /// bind. `max_sessions_per_user(1)` is "one session per user". Default: no cap. At least 1.
    ///
    /// ```
    /// use actix_web::{cookie::Key, test, web, App};
    /// use circumflex_session::{AsyncSession, Error, MemoryBackend, SessionMiddleware};
    ///
    /// async fn login(session: AsyncSession) -> Result<(), Error> {
    ///     session.bind_user("ann").await
    /// }
    ///
    /// async fn whoami(session: AsyncSession) -> Result<String, Error> {
    ///     Ok(session.user_id().await?.unwrap_or_default())
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let middleware = SessionMiddleware::builder(MemoryBackend::new(), Key::generate())
    ///     .max_sessions_per_user(1)
    ///     .build()?;
    /// let app = App::new()
    ///     .wrap(middleware)
    ///     .route("/login", web::post().to(login))
    ///     .route("/whoami", web::get().to(whoami));
    /// let app = test::init_service(app).await;
    /// let mut cookies = Vec::new();
    /// for _device in ["laptop", "phone"] {
    ///     let request = test::TestRequest::post().uri("/login").to_request();
    ///     let response = test::call_service(&app, request).await;
    ///     cookies.push(response.response().cookies().next().unwrap().into_owned());
    /// }
    /// // Logging in on the phone logged the laptop out:
    /// let request = test::TestRequest::get().uri("/whoami").cookie(cookies[0].clone());
    /// assert_eq!(test::call_and_read_body(&app, request.to_request()).await, "");
    /// let request = test::TestRequest::get().uri("/whoami").cookie(cookies[1].clone());
    /// assert_eq!(test::call_and_read_body(&app, request.to_request()).await, "ann");
    /// # Ok::<(), Error>(())
    /// # }).unwrap();
    /// ```
    pub fn max_sessions_per_user(mut self, max: u32) -> Self {
        self.session.max_sessions_per_user = Some(max);
        self
    }

    /// The times to idle [`set_tti`](crate::AsyncSession::set_tti) accepts (remember-me).
    /// Default 1 minute to 30 days. Whole seconds; `min` at least one and at most `max`.
    pub fn tti_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.session.min_tti_secs = min.as_secs();
        self.session.max_tti_secs = max.as_secs();
        self
    }

    /// Builds the middleware.
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_web::cookie::Key;
    /// use circumflex_session::{MemoryBackend, SessionMiddleware};
    ///
    /// let builder = SessionMiddleware::builder(MemoryBackend::new(), Key::generate());
    /// let middleware = builder.tti(Duration::from_secs(3600)).build().unwrap();
    /// # let _ = middleware;
    /// let builder = SessionMiddleware::builder(MemoryBackend::new(), Key::generate());
    /// let error = builder.cookie_name("a b").build().unwrap_err();
    /// assert!(error.to_string().contains("cookie.name"));
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] naming the first setting out of range (a cookie name, path, domain or
    /// id header, a zero time to idle, `max_session_bytes` below `max_value_bytes`, ...):
    /// exactly the checks [`Config::load`] makes on a file.
    pub fn build(self) -> Result<SessionMiddleware, Error> {
        self.cookie.validate()?;
        self.session.validate()?;
        Ok(SessionMiddleware::assemble(
            self.engine,
            self.key,
            self.old_keys,
            self.cookie,
            self.session,
        ))
    }
}
