//! The handle's user methods: log in as a user, list and revoke the user's sessions, and
//! remember-me.

use std::sync::Arc;
use std::time::Duration;

use super::{unexpected, AsyncSession};
use crate::actor::message::{Binding, Op, Reply, META_USER};
use crate::error::Error;
use crate::events::SessionEventKind;
use crate::ticket::Ticket;
use crate::users::{check_label, UserIndex};
use crate::{clock, SessionInfo};

impl AsyncSession {
    /// Logs the session in as `user_id`: moves it to a new id (as [`renew`](Self::renew)
    /// does, against session fixation) and lists it under the user, so that
    /// [`sessions`](Self::sessions), [`SessionEngine::sessions_of`](crate::SessionEngine::sessions_of)
    /// and the revoke calls find it. What the session held before login is kept. If the user
    /// already has `max_sessions_per_user` sessions, the oldest are revoked in the same step.
    ///
    /// ```
    /// use circumflex_session::{AsyncSession, Error};
    ///
    /// async fn handler(session: AsyncSession) -> Result<(), Error> {
    ///     session.set("cart", &["apple"]).await?; // shopping before login
    ///     let anonymous = session.id();
    ///     // ... check the password, then:
    ///     session.bind_user("ann").await?;
    ///     assert_ne!(session.id(), anonymous);
    ///     assert_eq!(session.user_id().await?.as_deref(), Some("ann"));
    ///     let cart = session.get::<Vec<String>>("cart").await?;
    ///     assert_eq!(cart, Some(vec!["apple".to_owned()])); // kept
    ///     assert_eq!(session.sessions().await?.len(), 1); // ann's only session
    ///     Ok(())
    /// }
    /// # actix_web::rt::System::new().block_on(async {
    /// # use actix_web::{cookie::Key, test, web, App};
    /// # use circumflex_session::{MemoryBackend, SessionMiddleware};
    /// # let middleware = SessionMiddleware::new(MemoryBackend::new(), Key::generate());
    /// # let app = App::new().wrap(middleware).route("/", web::get().to(handler));
    /// # let app = test::init_service(app).await;
    /// # let response = test::call_service(&app, test::TestRequest::get().to_request()).await;
    /// # assert!(response.status().is_success());
    /// # });
    /// ```
    ///
    /// Redis: an `HGETALL` of the session before login (if there is one), one `EVALSHA` of the
    /// bind script (`HSET`, `PEXPIRE`, `ZADD` to the user's index, pruning, and the cap), then
    /// the invalidate script on the old id. Three round trips, once per login. On a cluster
    /// the new id has the user's slot tag, so the copy crosses slots: a write to the old id
    /// racing the login is not carried over (as with `renew`, whose racing writes start a new
    /// session).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty user id or one over 256 bytes, and the store's
    /// errors (see [`AsyncSession`]). If the old id could not be deleted, the new session is
    /// in place (its cookie goes out) and the error is returned.
    pub async fn bind_user(&self, user_id: &str) -> Result<(), Error> {
        self.bind_user_labelled(user_id, "").await
    }

    /// [`bind_user`](Self::bind_user), with a label listed with the session (for example the
    /// client's `User-Agent`, at most 256 bytes; empty for none).
    ///
    /// ```
    /// use actix_web::{http::header::USER_AGENT, HttpRequest};
    /// use circumflex_session::{AsyncSession, Error};
    ///
    /// async fn login(session: AsyncSession, request: HttpRequest) -> Result<(), Error> {
    ///     let agent = request.headers().get(USER_AGENT).and_then(|v| v.to_str().ok());
    ///     // 64 characters are at most 256 bytes.
    ///     let label: String = agent.unwrap_or("").chars().take(64).collect();
    ///     session.bind_user_labelled("ann", &label).await?;
    ///     let sessions = session.sessions().await?;
    ///     assert_eq!(sessions[0].label.as_deref(), Some("Firefox"));
    ///     Ok(())
    /// }
    /// # actix_web::rt::System::new().block_on(async {
    /// # use actix_web::{cookie::Key, test, web, App};
    /// # use circumflex_session::{MemoryBackend, SessionMiddleware};
    /// # let middleware = SessionMiddleware::new(MemoryBackend::new(), Key::generate());
    /// # let app = App::new().wrap(middleware).route("/", web::post().to(login));
    /// # let app = test::init_service(app).await;
    /// # let request = test::TestRequest::post().insert_header((USER_AGENT, "Firefox"));
    /// # let response = test::call_service(&app, request.to_request()).await;
    /// # assert!(response.status().is_success());
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`bind_user`](Self::bind_user); [`Error::InvalidArgument`] for a label over 256
    /// bytes.
    pub async fn bind_user_labelled(&self, user_id: &str, label: &str) -> Result<(), Error> {
        check_label(label)?;
        let b = &self.inner.binding;
        let index = UserIndex::new(&b.key_prefix, user_id)?;
        let old = self.lock().resolve(b);
        let mut entries = Vec::new();
        if let Some((_, key)) = &old {
            if let Reply::Entries(e) = self.call_other(key.clone(), Op::Entries).await? {
                entries = e;
            }
        }
        let (mut created, tti) = match &old {
            Some((t, _)) => (t.created, t.tti),
            None => (clock::unix_secs(), None),
        };
        let mut ticket = Ticket::for_user(user_id, created, tti);
        let ttl = match b.policy.ttl(&ticket) {
            Some(ttl) => ttl,
            None => {
                // The old session's absolute lifetime ran out during this request: log in
                // afresh, carrying nothing over (a fresh session always has a lifetime left).
                created = clock::unix_secs();
                entries.clear();
                ticket = Ticket::for_user(user_id, created, tti);
                b.policy
                    .capped(created, b.policy.tti(&ticket))
                    .unwrap_or(Duration::from_secs(1))
            }
        };
        let key = b.key_for(&ticket);
        let binding = Binding {
            user: Arc::from(user_id),
            label: label.to_owned(),
            created,
            tti: b.policy.tti(&ticket),
            ttl,
            max_sessions: b.policy.session.max_sessions_per_user.unwrap_or(0),
            entries,
        };
        let reply = self
            .call_other(key.clone(), Op::Bind(Box::new(binding)))
            .await?;
        let id = ticket.id.clone();
        self.lock().renewed(ticket, key, ttl);
        b.events.emit(SessionEventKind::Bound, &id, Some(user_id));
        index.revoked(reply, &b.events)?;
        if let Some((_, old_key)) = old {
            self.call_other(old_key, Op::Invalidate).await?;
        }
        Ok(())
    }

    /// The user this session is bound to, if any.
    ///
    /// ```
    /// use circumflex_session::{AsyncSession, Error};
    ///
    /// async fn handler(session: AsyncSession) -> Result<(), Error> {
    ///     session.set("theme", "dark").await?;
    ///     assert_eq!(session.user_id().await?, None); // a session, but anonymous
    ///     session.bind_user("ann").await?;
    ///     assert_eq!(session.user_id().await?.as_deref(), Some("ann"));
    ///     Ok(())
    /// }
    /// # actix_web::rt::System::new().block_on(async {
    /// # use actix_web::{cookie::Key, test, web, App};
    /// # use circumflex_session::{MemoryBackend, SessionMiddleware};
    /// # let middleware = SessionMiddleware::new(MemoryBackend::new(), Key::generate());
    /// # let app = App::new().wrap(middleware).route("/", web::get().to(handler));
    /// # let app = test::init_service(app).await;
    /// # let response = test::call_service(&app, test::TestRequest::get().to_request()).await;
    /// # assert!(response.status().is_success());
    /// # });
    /// ```
    ///
    /// Redis: one `HMGET` (fused with other reads of the session), plus the request's TTL
    /// refresh if it is the first use; none for a session that was never bound.
    ///
    /// # Errors
    /// The store's errors (see [`AsyncSession`]).
    pub async fn user_id(&self) -> Result<Option<String>, Error> {
        let bound = self
            .lock()
            .resolve(&self.inner.binding)
            .is_some_and(|(t, _)| t.bound);
        if !bound {
            return Ok(None);
        }
        match self
            .read(Op::Get([META_USER].into_iter().collect()))
            .await?
        {
            Some(Reply::Values(mut values)) => Ok(values
                .pop()
                .flatten()
                .and_then(|raw| String::from_utf8(raw).ok())),
            Some(other) => Err(unexpected(other)),
            None => Ok(None),
        }
    }

    /// The live sessions of this session's user, most recently used first (at most 1000);
    /// empty when the session is not bound.
    ///
    /// A "your devices" page, after ann logged in on a laptop and then on a phone:
    ///
    /// ```
    /// use actix_web::{cookie::Key, test, web, App};
    /// use circumflex_session::{AsyncSession, Error, MemoryBackend, SessionMiddleware};
    ///
    /// async fn login(session: AsyncSession) -> Result<(), Error> {
    ///     session.bind_user("ann").await
    /// }
    ///
    /// async fn devices(session: AsyncSession) -> Result<String, Error> {
    ///     let sessions = session.sessions().await?;
    ///     let this_one = session.id();
    ///     assert!(sessions.iter().any(|s| Some(&s.id) == this_one.as_ref()));
    ///     Ok(sessions.len().to_string())
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = App::new()
    ///     .wrap(SessionMiddleware::new(MemoryBackend::new(), Key::generate()))
    ///     .route("/login", web::post().to(login))
    ///     .route("/devices", web::get().to(devices));
    /// let app = test::init_service(app).await;
    /// let mut cookies = Vec::new();
    /// for _device in ["laptop", "phone"] {
    ///     let request = test::TestRequest::post().uri("/login").to_request();
    ///     let response = test::call_service(&app, request).await;
    ///     cookies.push(response.response().cookies().next().unwrap().into_owned());
    /// }
    /// let request = test::TestRequest::get().uri("/devices").cookie(cookies[1].clone());
    /// assert_eq!(test::call_and_read_body(&app, request.to_request()).await, "2");
    /// # });
    /// ```
    ///
    /// Redis: [`user_id`](Self::user_id), then one `EVALSHA` of the listing script on the
    /// user's index (`ZREVRANGEBYSCORE` and an `HMGET` per session, pruning what expired).
    ///
    /// # Errors
    /// The store's errors (see [`AsyncSession`]).
    pub async fn sessions(&self) -> Result<Vec<SessionInfo>, Error> {
        let Some(user) = self.user_id().await? else {
            return Ok(Vec::new());
        };
        let index = UserIndex::new(&self.inner.binding.key_prefix, &user)?;
        let list = index.list();
        index.infos(self.call_other(list.key, list.op).await?)
    }

    /// Logs this session's user out everywhere: revokes every other session of the user, and
    /// this one too when `this_one` is true (its cookie is then removed). Answers how many
    /// sessions were revoked, this one included. Nothing happens without a bound session.
    ///
    /// A "log out my other devices" button, after ann logged in on a laptop and then on a
    /// phone:
    ///
    /// ```
    /// use actix_web::{cookie::Key, test, web, App};
    /// use circumflex_session::{AsyncSession, Error, MemoryBackend, SessionMiddleware};
    ///
    /// async fn login(session: AsyncSession) -> Result<(), Error> {
    ///     session.bind_user("ann").await
    /// }
    ///
    /// async fn log_out_others(session: AsyncSession) -> Result<String, Error> {
    ///     Ok(session.logout_everywhere(false).await?.to_string())
    /// }
    ///
    /// async fn whoami(session: AsyncSession) -> Result<String, Error> {
    ///     Ok(session.user_id().await?.unwrap_or_default())
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = App::new()
    ///     .wrap(SessionMiddleware::new(MemoryBackend::new(), Key::generate()))
    ///     .route("/login", web::post().to(login))
    ///     .route("/log-out-others", web::post().to(log_out_others))
    ///     .route("/whoami", web::get().to(whoami));
    /// let app = test::init_service(app).await;
    /// let mut cookies = Vec::new();
    /// for _device in ["laptop", "phone"] {
    ///     let request = test::TestRequest::post().uri("/login").to_request();
    ///     let response = test::call_service(&app, request).await;
    ///     cookies.push(response.response().cookies().next().unwrap().into_owned());
    /// }
    /// let (laptop, phone) = (cookies[0].clone(), cookies[1].clone());
    ///
    /// let request = test::TestRequest::post().uri("/log-out-others").cookie(phone.clone());
    /// assert_eq!(test::call_and_read_body(&app, request.to_request()).await, "1");
    /// let request = test::TestRequest::get().uri("/whoami").cookie(laptop);
    /// assert_eq!(test::call_and_read_body(&app, request.to_request()).await, "");
    /// let request = test::TestRequest::get().uri("/whoami").cookie(phone);
    /// assert_eq!(test::call_and_read_body(&app, request.to_request()).await, "ann");
    /// # });
    /// ```
    ///
    /// Redis: [`user_id`](Self::user_id), then the revoke script on the user's index (`UNLINK`
    /// and `ZREM` per session, at most 256 per call, called again while some are left).
    ///
    /// # Errors
    /// The store's errors (see [`AsyncSession`]).
    pub async fn logout_everywhere(&self, this_one: bool) -> Result<u64, Error> {
        let Some(user) = self.user_id().await? else {
            return Ok(0);
        };
        let b = &self.inner.binding;
        let index = UserIndex::new(&b.key_prefix, &user)?;
        let own = self.id();
        let keep = if this_one { None } else { own.as_deref() };
        let run = |command: crate::actor::message::Command| b.handle.call(command);
        let revoked = index.revoke_all(keep, run, &b.events).await?;
        if this_one {
            // Revoked with the others: the cookie goes; no second delete is needed.
            self.lock().invalidate(b);
        }
        Ok(revoked)
    }

    /// Gives this session its own time to idle (remember-me), stored with it so that every
    /// later refresh uses it, and pushes its TTL to `tti` now. The session's cookie becomes
    /// persistent, its `Max-Age` following the TTL. Creates the session if there is none.
    ///
    /// ```
    /// use std::time::Duration;
    /// use actix_web::{cookie::Key, test, web, App};
    /// use circumflex_session::{AsyncSession, Error, MemoryBackend, SessionMiddleware};
    ///
    /// async fn login_remember_me(session: AsyncSession) -> Result<(), Error> {
    ///     session.bind_user("ann").await?;
    ///     session.set_tti(Duration::from_secs(30 * 24 * 3600)).await?; // 30 days
    ///     // Outside session.min_tti_secs..=session.max_tti_secs (1 min to 30 days by default):
    ///     let too_short = session.set_tti(Duration::from_secs(1)).await;
    ///     assert!(matches!(too_short, Err(Error::InvalidArgument(_))));
    ///     Ok(())
    /// }
    ///
    /// # actix_web::rt::System::new().block_on(async {
    /// let app = App::new()
    ///     .wrap(SessionMiddleware::new(MemoryBackend::new(), Key::generate()))
    ///     .route("/login", web::post().to(login_remember_me));
    /// let app = test::init_service(app).await;
    /// let request = test::TestRequest::post().uri("/login").to_request();
    /// let response = test::call_service(&app, request).await;
    /// let cookie = response.response().cookies().next().unwrap();
    /// assert_eq!(cookie.max_age(), Some(actix_web::cookie::time::Duration::days(30)));
    /// # });
    /// ```
    ///
    /// Redis: one `EVALSHA` of the write script (`HSET` of the time to idle, `PEXPIRE`, and for
    /// a bound session the index's `ZADD`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a time to idle outside `session.min_tti_secs` to
    /// `session.max_tti_secs` (whole seconds), and the store's errors (see [`AsyncSession`]).
    pub async fn set_tti(&self, tti: Duration) -> Result<(), Error> {
        let config = &self.inner.binding.policy.session;
        let secs = tti.as_secs();
        if secs < config.min_tti_secs || secs > config.max_tti_secs {
            return Err(Error::InvalidArgument(format!(
                "time to idle {secs} s is outside {}..={} s",
                config.min_tti_secs, config.max_tti_secs
            )));
        }
        let tti = Duration::from_secs(secs);
        let policy = &self.inner.binding.policy;
        let created = self
            .lock()
            .resolve(&self.inner.binding)
            .map_or_else(clock::unix_secs, |(t, _)| t.created);
        let ttl = policy.capped(created, tti).unwrap_or(tti);
        self.write(|mode| Ok(Op::SetTti { mode, tti, ttl })).await?;
        let current = self.lock().resolve(&self.inner.binding);
        if let Some((_, key)) = current {
            self.lock().tti_set(&key, secs, ttl);
        }
        Ok(())
    }
}
