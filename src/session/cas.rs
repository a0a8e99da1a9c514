//! The handle's atomic read-modify-write: `compare_and_set`, and `update` built on it.
//!
//! # Why a script, not `WATCH`
//! The compare and the write run in the write script (`'x'`), in the same pipeline as every
//! other command of the batch. `WATCH` state belongs to a connection, so a `WATCH`ed update
//! would need a connection of its own for two round trips, outside the batch; BENCHMARKS.md
//! (section "Compare-and-set") has the measurement. A mismatch answers the value it found, so
//! a retry costs one round trip, not two.

use rand::Rng as _;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{unexpected, values, AsyncSession};
use crate::actor::message::{Op, Reply};
use crate::error::Error;

/// Most attempts [`AsyncSession::update`] makes before [`Error::Conflict`].
const UPDATE_ATTEMPTS: u32 = 32;
/// Longest pause between two attempts, in milliseconds: each pause is random up to
/// `min(2^attempt, this)`, so that updaters that collided spread over later batches instead
/// of colliding again in the next one.
const MAX_BACKOFF_MS: u64 = 32;

/// What a compare-and-set found.
enum Swap {
    Done,
    /// The field held this instead (`None`: absent).
    Found(Option<Vec<u8>>),
}

impl AsyncSession {
    /// Stores `new` under `key` only if the key holds `expected` (`None`: only if it is
    /// absent); answers whether it stored it. The comparison is of the stored JSON with
    /// `expected`'s JSON, byte for byte, so use it with types that serialise the same way every
    /// time (not a `HashMap`, whose order varies). Creates the session if there is none.
    ///
    /// ```
    /// use circumflex_session::{AsyncSession, Error};
    ///
    /// async fn handler(session: AsyncSession) -> Result<(), Error> {
    ///     assert!(session.compare_and_set("step", None, &1).await?); // it was absent
    ///     assert!(session.compare_and_set("step", Some(&1), &2).await?);
    ///     assert!(!session.compare_and_set("step", Some(&1), &3).await?); // it holds 2 now
    ///     assert_eq!(session.get::<i32>("step").await?, Some(2));
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
    /// Redis: one `EVALSHA` of the write script (compare, then `HSET` inside).
    ///
    /// # Errors
    /// As [`set`](Self::set).
    pub async fn compare_and_set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        expected: Option<&T>,
        new: &T,
    ) -> Result<bool, Error> {
        let session = &self.inner.binding.policy.session;
        let expected = expected
            .map(|v| values::encode(session, key, v))
            .transpose()?;
        let new = values::encode(session, key, new)?;
        Ok(matches!(self.swap(key, expected, new).await?, Swap::Done))
    }

    /// Applies `f` to the value under `key` (`None` when absent) and stores what it returns,
    /// atomically: if another request changed the key in between, `f` runs again on the new
    /// value (after a short random pause), up to 32 times. Answers the value stored. `f` may
    /// run more than once, so it should not have side effects. For a plain counter,
    /// [`incr`](Self::incr) is cheaper. Creates the session if there is none.
    ///
    /// ```
    /// use circumflex_session::{AsyncSession, Error};
    ///
    /// async fn handler(session: AsyncSession) -> Result<(), Error> {
    ///     session.set("cart", &["apple"]).await?;
    ///     let cart: Vec<String> = session
    ///         .update("cart", |cart: Option<Vec<String>>| {
    ///             let mut cart = cart.unwrap_or_default();
    ///             cart.push("pear".to_owned());
    ///             cart
    ///         })
    ///         .await?;
    ///     assert_eq!(cart, ["apple", "pear"]); // the value stored
    ///     assert_eq!(session.get::<Vec<String>>("cart").await?, Some(cart));
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
    /// Redis: one `HMGET` (fused with other reads of the session), then one `EVALSHA` of the
    /// write script per attempt; a lost attempt learns the new value from its reply.
    ///
    /// # Errors
    /// [`Error::Conflict`] when every attempt met a concurrent change (nothing was written by
    /// this call), [`Error::Serialization`] if the stored value is not a `T`, and as
    /// [`set`](Self::set).
    pub async fn update<T, F>(&self, key: &str, mut f: F) -> Result<T, Error>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        values::check_key(key)?;
        let session = &self.inner.binding.policy.session;
        let mut current = match self.read(Op::Get([key].into_iter().collect())).await? {
            Some(Reply::Values(mut values)) => values.pop().flatten(),
            Some(other) => return Err(unexpected(other)),
            None => None,
        };
        for attempt in 0..UPDATE_ATTEMPTS {
            if attempt > 0 {
                let most = (1u64 << attempt.min(6)).min(MAX_BACKOFF_MS);
                let pause = rand::rng().random_range(0..=most);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            let old = current
                .as_deref()
                .map(|raw| values::decode(key, raw))
                .transpose()?;
            let new = f(old);
            let encoded = values::encode(session, key, &new)?;
            match self.swap(key, current, encoded).await? {
                Swap::Done => return Ok(new),
                Swap::Found(found) => current = found,
            }
        }
        Err(Error::Conflict {
            key: key.to_owned(),
            attempts: UPDATE_ATTEMPTS,
        })
    }

    async fn swap(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<Swap, Error> {
        let field = key.to_owned();
        let reply = self
            .write(|mode| {
                Ok(Op::CompareAndSet(
                    mode,
                    field.clone(),
                    expected.clone(),
                    new.clone(),
                ))
            })
            .await?;
        match reply {
            Reply::Bool(true) => Ok(Swap::Done),
            Reply::Values(mut found) if found.len() == 1 => Ok(Swap::Found(found.pop().flatten())),
            other => Err(unexpected(other)),
        }
    }
}
