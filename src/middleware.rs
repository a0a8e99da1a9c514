//! `SessionMiddleware`: reads the session cookie on the way in, writes it on the way out.
//!
//! How a middleware is made, and every setting it takes, is in `middleware/builder.rs`; this
//! file is what it does to each request.
//!
//! # Cookie rules
//! `cookie.rs` finds, verifies and writes the cookie; this file decides when.
//! - **In.** The middleware only leaves this worker's session context in the request. The
//!   first time a handler extracts the [`AsyncSession`](crate::AsyncSession), the extractor finds the raw cookie
//!   value; its signature is checked on first use, so a request whose handler never touches
//!   the session costs neither a MAC nor a Redis command.
//! - **Out.** A `Set-Cookie` is sent only when the request issued a session (first write, or
//!   `renew`), when `invalidate` ended one (a removal cookie with the same path and domain), or
//!   when a persistent cookie's `Max-Age` follows a TTL refresh. A visitor who only reads gets
//!   no cookie.
//! - **Distrust.** A tampered, garbage or unknown cookie, or one whose session expired, is no
//!   session; a write then creates a new session under a new id. A client-presented id is never
//!   adopted.
//!
//! # The id header
//! Off by default; [`SessionMiddlewareBuilder::id_header`] (or `cookie.header` in the
//! configuration file) names a request header, say `x-session-id`, for API and mobile clients
//! that keep no cookie jar. It carries exactly the value the cookie would carry, and all of the
//! rules above hold for it unchanged: the same signing or encryption and keys (an `old_key`
//! verifies it, and it is re-sent signed with the current key), the same distrust, the same
//! lazy verification.
//! - **Who uses it.** A request that sends the header, even empty (a client's first call, to
//!   opt in), uses the header for the whole request: its cookie is not read, and its response
//!   never has a `Set-Cookie`. A request without the header is a cookie request, exactly as
//!   when the header is off. A browser sends no such header on its own (a cross-origin script
//!   needs the app's CORS preflight to allow it), so a page is never switched to the header by
//!   accident, and a request that sends both never mixes two sessions up: the header wins.
//! - **Out.** The response answers in the same header when the cookie would have changed: the
//!   new value when the request issued a session, renewed it (`renew`, `bind_user`), gave it
//!   its own time to idle or re-signed it after a key rotation; an empty value when
//!   `invalidate` ended one ("forget your value"). A header absent from a response means
//!   "keep what you have". `Max-Age` has no equivalent: a persistent cookie is re-sent when its
//!   idle timer is pushed back, the header is not. A response that sends the header is marked
//!   `Cache-Control: no-store`, replacing what the handler set: unlike `Set-Cookie`, a custom
//!   header does not stop a shared cache from keeping the response, and handing one client's
//!   session to the next.
//! - **The trade-off.** The cookie's `HttpOnly` has no equivalent: the client's code holds the
//!   value, so a script injected into a browser client can read it, and a mobile client must
//!   keep it in the platform's secure storage and out of its logs (this crate never logs it).
//!   In exchange nothing sends it automatically, so a request with the header cannot be forged
//!   cross-site (no CSRF), unlike one with a cookie. Browser clients on another origin read it
//!   only if the app's CORS policy lists it in `Access-Control-Expose-Headers` (and allows it
//!   in `Access-Control-Allow-Headers`). Without the cookie's `Secure`, nothing stops a client
//!   from sending it over plain HTTP: serve the API over TLS only.

use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::cookie::Key;
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{HeaderName, HeaderValue, CACHE_CONTROL, SET_COOKIE};
use actix_web::HttpMessage;
use futures::future::{MapOk, TryFutureExt as _};

use crate::config::{CookieConfig, SessionConfig};
use crate::cookie::{CookieCodec, Transport, VerifiedCookies};
use crate::engine::SessionEngine;
use crate::session::{Binding, Bound, Policy, RefreshLimiter, INDEX_SLACK_PERCENT};

// How a middleware is made (`new`, `builder`, `from_config`) and every setting it takes.
pub(crate) mod builder;

/// Redis-backed, on-demand sessions for an actix-web `App`.
///
/// A visitor gets a cookie only once a handler writes to the session:
///
/// ```
/// use actix_web::{cookie::Key, test, web, App};
/// use circumflex_session::{AsyncSession, Error, MemoryBackend, SessionMiddleware};
///
/// async fn read(session: AsyncSession) -> Result<String, Error> {
///     Ok(session.get::<String>("theme").await?.unwrap_or_default())
/// }
///
/// async fn write(session: AsyncSession) -> Result<(), Error> {
///     session.set("theme", "dark").await
/// }
///
/// # actix_web::rt::System::new().block_on(async {
/// let key = Key::generate(); // load a stable 64-byte key in production
/// let app = App::new()
///     .wrap(SessionMiddleware::new(MemoryBackend::new(), key))
///     .route("/read", web::get().to(read))
///     .route("/write", web::post().to(write));
/// let app = test::init_service(app).await;
///
/// let request = test::TestRequest::get().uri("/read").to_request();
/// let response = test::call_service(&app, request).await;
/// assert_eq!(response.response().cookies().count(), 0);
/// let request = test::TestRequest::post().uri("/write").to_request();
/// let response = test::call_service(&app, request).await;
/// assert_eq!(response.response().cookies().count(), 1);
/// # });
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
    /// The middleware for settings that `builder` has checked.
    fn assemble(
        engine: SessionEngine,
        key: Key,
        old_keys: Vec<Key>,
        cookie: CookieConfig,
        session: SessionConfig,
    ) -> Self {
        SessionMiddleware {
            engine,
            codec: Arc::new(CookieCodec::new(key, old_keys, cookie)),
            session,
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
        // Called once per worker: each worker gets its own actor.
        ready(Ok(SessionService {
            service: Rc::new(service),
            binding: Arc::new(Binding {
                handle: self.engine.start(),
                key_prefix: Arc::from(self.engine.key_prefix()),
                codec: self.codec.clone(),
                policy: Policy {
                    session: self.session.clone(),
                },
                refreshes: RefreshLimiter::new(&self.session),
                index_touches: RefreshLimiter::with_percent(INDEX_SLACK_PERCENT),
                verified: VerifiedCookies::new(),
                events: self.engine.events(),
            }),
        }))
    }
}

/// The per-worker service behind [`SessionMiddleware`]; public only because `Transform`
/// names it.
#[doc(hidden)]
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
    /// A named future, not a boxed one: the response passes through [`finish`], which finds
    /// everything it needs in the request's extensions.
    type Future = MapOk<S::Future, fn(ServiceResponse<B>) -> ServiceResponse<B>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        // Nothing about the session is looked at here: the extractor reads the cookie the
        // first time a handler asks for the session, so a request that never does costs one
        // `Arc` clone.
        req.extensions_mut()
            .insert(Bound::new(self.binding.clone()));
        self.service.call(req).map_ok(finish::<B>)
    }
}

/// What the response must carry for the request's session, if a handler used it.
enum Out {
    Cookie(HeaderValue),
    Header(HeaderName, HeaderValue),
}

/// Adds the `Set-Cookie` (or the id header) that the request's session needs, if any.
fn finish<B>(mut response: ServiceResponse<B>) -> ServiceResponse<B> {
    let out = {
        let extensions = response.request().extensions();
        let bound = extensions.get::<Bound>();
        let session = bound.and_then(|bound| Some((bound.binding(), bound.session()?)));
        session.and_then(|(binding, session)| {
            let codec = &binding.codec;
            match session.cookie_update() {
                (Transport::Cookie, update) => codec.set_cookie(&update).map(Out::Cookie),
                (Transport::Header, update) => codec
                    .header(&update)
                    .map(|(name, value)| Out::Header(name, value)),
            }
        })
    };
    match out {
        Some(Out::Cookie(value)) => {
            response.headers_mut().append(SET_COOKIE, value);
        }
        Some(Out::Header(name, value)) => {
            let headers = response.headers_mut();
            headers.insert(name, value);
            // A custom header does not keep a shared cache from storing the response, as
            // `Set-Cookie` usually does: never let it hand one client's session to another.
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        None => {}
    }
    response
}
