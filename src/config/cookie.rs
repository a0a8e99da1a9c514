//! The session cookie's attributes, and the request header that may carry its value instead.

use actix_web::http::header::HeaderName;
use serde::{Deserialize, Serialize};

use super::DEFAULT_COOKIE_NAME;
use crate::error::Error;

/// How the cookie value is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CookieSecurity {
    /// Signed (HMAC-SHA256): tamper-proof, readable. The default.
    #[default]
    Signed,
    /// Private (AES-256-GCM): tamper-proof and unreadable.
    Private,
}

/// The `SameSite` attribute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SameSite {
    /// `SameSite=Strict`.
    Strict,
    /// `SameSite=Lax`, the default.
    #[default]
    Lax,
    /// `SameSite=None` (requires `Secure` in browsers).
    None,
}

/// Whether the cookie outlives the browser session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CookieLifecycle {
    /// No `Max-Age`: the browser forgets the cookie when it closes. The default.
    #[default]
    BrowserSession,
    /// `Max-Age` equal to the time to idle, re-sent whenever the idle timer is refreshed.
    Persistent,
}

/// Session cookie attributes: the `[cookie]` section of [`Config`](crate::Config), also set
/// through [`SessionMiddleware::builder`](crate::SessionMiddleware::builder).
///
/// ```
/// use circumflex_session::{CookieConfig, CookieSecurity};
///
/// let config = CookieConfig::default();
/// assert!(config.secure && config.http_only);
/// assert_eq!(config.security, CookieSecurity::Signed);
/// // A setting cannot smuggle in another attribute:
/// let injected = CookieConfig { path: "/; Domain=evil.example".into(), ..config };
/// assert!(injected.validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CookieConfig {
    /// Cookie name. Default `session`.
    pub name: String,
    /// `Secure` attribute. Default `true`.
    pub secure: bool,
    /// `HttpOnly` attribute. Default `true`.
    pub http_only: bool,
    /// `SameSite` attribute. Default `lax`.
    pub same_site: SameSite,
    /// `Path` attribute. Default `/`.
    pub path: String,
    /// `Domain` attribute. Default none (host-only cookie).
    pub domain: Option<String>,
    /// Signed or private. Default `signed`.
    pub security: CookieSecurity,
    /// Browser-session or persistent cookie. Default `browser_session`.
    pub lifecycle: CookieLifecycle,
    /// A request header that may carry the cookie's value instead, for API and mobile
    /// clients (for example `x-session-id`). Default none: the cookie only. See
    /// [`SessionMiddlewareBuilder::id_header`](crate::SessionMiddlewareBuilder::id_header).
    pub header: Option<String>,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            name: DEFAULT_COOKIE_NAME.to_owned(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            path: "/".to_owned(),
            domain: None,
            security: CookieSecurity::Signed,
            lifecycle: CookieLifecycle::BrowserSession,
            header: None,
        }
    }
}

/// Names `cookie.header` may not take: the headers a browser script may not set (the Fetch
/// standard's forbidden request-header names, whose `proxy-` and `sec-` prefixes
/// [`RESERVED_HEADER_PREFIXES`] lists), and `authorization`, whose scheme syntax and
/// credentials belong to other layers (HTTP authentication, `actix-web-httpauth`).
const RESERVED_HEADERS: &[&str] = &[
    "accept-charset",
    "accept-encoding",
    "access-control-request-headers",
    "access-control-request-method",
    "authorization",
    "connection",
    "content-length",
    "cookie",
    "cookie2",
    "date",
    "dnt",
    "expect",
    "host",
    "keep-alive",
    "origin",
    "referer",
    "set-cookie",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "via",
];

/// Prefixes of the header names a browser script may not set (see [`RESERVED_HEADERS`]).
const RESERVED_HEADER_PREFIXES: &[&str] = &["proxy-", "sec-"];

/// The header that `cookie.header` names, checked: a valid header name (compared without
/// regard to case, as HTTP does), none of the reserved ones.
pub(crate) fn id_header(name: &str) -> Result<HeaderName, Error> {
    let header = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| Error::Config(format!("cookie.header {name:?} is not a valid header name")))?;
    let lower = header.as_str();
    let reserved = RESERVED_HEADERS.contains(&lower)
        || RESERVED_HEADER_PREFIXES
            .iter()
            .any(|p| lower.starts_with(p));
    if reserved {
        return Err(Error::Config(format!(
            "cookie.header {name:?} is reserved: browsers do not let scripts set it, or \
             another layer reads it; choose a name of your own such as \"x-session-id\""
        )));
    }
    Ok(header)
}

impl CookieConfig {
    /// Checks the name, path, domain and header.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first attribute that is not valid.
    pub fn validate(&self) -> Result<(), Error> {
        let valid_name = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid_name {
            return Err(Error::Config(format!(
                "cookie.name {:?} is not a valid cookie name",
                self.name
            )));
        }
        if !self.path.starts_with('/') {
            return Err(Error::Config("cookie.path must start with '/'".into()));
        }
        // A `;` or control character would let a setting inject cookie attributes.
        let attribute_ok = |v: &str| !v.bytes().any(|b| b == b';' || b.is_ascii_control());
        if !attribute_ok(&self.path) {
            return Err(Error::Config(
                "cookie.path must not contain ';' or control characters".into(),
            ));
        }
        if let Some(domain) = &self.domain {
            if domain.is_empty() || !attribute_ok(domain) || domain.contains(' ') {
                return Err(Error::Config(format!(
                    "cookie.domain {domain:?} is not a valid domain"
                )));
            }
        }
        if let Some(header) = &self.header {
            id_header(header)?;
        }
        Ok(())
    }
}
