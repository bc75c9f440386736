//! User authentication and authorisation: argon2id passwords, login sessions kept in the
//! synchronised `sessions` collection, user tokens (JWT `typ=user`, HS256 pinned, `aud` and `exp`
//! required), the failed-login limiter, and the actix extractor that makes a handler's signature
//! say which role it needs (`Authenticated<EditorPolicy>` cannot be built for a viewer).
//!
//! A token is only a signed pointer to a session: logout tombstones the session, so a token dies
//! with it even before it expires. Because sessions and users are synchronised collections and the
//! signing key is derived from the cluster secret, a session made on one server is valid on all.
//! A token whose session has not reached this server yet (made a moment ago on another one) waits
//! for it up to `cluster.push.timeout` instead of being refused.

pub mod expiry;
pub mod limiter;
pub mod password;
pub mod server;

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::ApiError;
use crate::store::{Collection, Store, StoreError};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "folio_session";
/// How many times more failures an address may have than a single user name.
pub const IP_LIMIT_FACTOR: u32 = 4;
/// Audience of user tokens.
pub const USER_AUDIENCE: &str = "folio-api";

/// What a user may do; ordered, so `role >= Role::Editor` reads naturally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Editor,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Admin => "admin",
        }
    }
}

/// The content of an item in the `users` collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    pub role: Role,
    pub password_hash: String,
}

/// The content of an item in the `sessions` collection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user: String,
    /// Unix seconds.
    pub expires: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct UserClaims {
    sub: String,
    sid: String,
    typ: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// Signs and checks user tokens; owns the login limiter.
pub struct Auth {
    /// Where sessions and users are read.
    store: Store,
    /// The administrator's stored password hash last checked against `auth.admin.password`,
    /// and whether it matched (see `GET /api/v1/me`).
    pub bootstrap_checked: std::sync::Mutex<Option<(String, bool)>>,
    encoding: EncodingKey,
    decoding: Vec<DecodingKey>,
    pub session_ttl: Duration,
    /// Failed logins per user name.
    pub limiter: limiter::LoginLimiter,
    /// Failed logins per client address; looser, since many users can share one (a balancer).
    pub ip_limiter: limiter::LoginLimiter,
    /// Sessions found valid, so a request need not read its session and user from the store.
    sessions: std::sync::Mutex<ValidSessions>,
    /// In a cluster, how long a request waits for a recently made session this server does not
    /// hold yet (see [`SESSION_IN_FLIGHT_SECS`]); `None` on a stand-alone server.
    arrival_wait: Option<Duration>,
}

/// A token issued at most this long ago may name a session still on its way to this server.
const SESSION_IN_FLIGHT_SECS: u64 = 60;

/// Sessions found valid while the [`accounts_version`] was `version`: forgotten as soon as any
/// user or session is written (a logout, a role change, an expiry).
#[derive(Default)]
struct ValidSessions {
    version: u64,
    /// Session id → (user, role, expiry in Unix seconds).
    by_id: std::collections::HashMap<String, (String, Role, u64)>,
}

/// Sessions remembered at most; beyond, the memory starts again.
const VALID_SESSIONS_MAX: usize = 10_000;

/// A number that grows after every committed write of a user or a session, so whatever was read
/// of them under one number is still current while it holds.
pub fn accounts_version(store: &Store) -> u64 {
    store.writes_to(Collection::Users) + store.writes_to(Collection::Sessions)
}

/// Collections whose superseded revisions the store does not keep: a session's history has no
/// use, and a server may hold very many sessions.
pub const WITHOUT_HISTORY: [Collection; 1] = [Collection::Sessions];

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn derive_key(secret: &str, label: &[u8]) -> Vec<u8> {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.as_bytes());
    aws_lc_rs::hmac::sign(&key, label).as_ref().to_vec()
}

impl Auth {
    /// Builds the signing keys: derived from the cluster secret (and the previous one, for
    /// rotation) when clustered, else a random key kept in this store's meta.
    pub async fn new(config: &Config, store: &Store) -> Result<Auth, StoreError> {
        const LABEL: &[u8] = b"folio user token key v1";
        let (current, previous) = match &config.cluster.shared_secret {
            Some(s) if config.cluster.mode != crate::config::Mode::None => (
                derive_key(s.expose(), LABEL),
                config
                    .cluster
                    .shared_secret_previous
                    .as_ref()
                    .map(|p| derive_key(p.expose(), LABEL)),
            ),
            _ => {
                let mut fresh = [0u8; 32];
                aws_lc_rs::rand::fill(&mut fresh)
                    .map_err(|_| StoreError::Task("no randomness".into()))?;
                (
                    store.meta_init("user_token_key", fresh.to_vec()).await?,
                    None,
                )
            }
        };
        let mut decoding = vec![DecodingKey::from_secret(&current)];
        decoding.extend(previous.iter().map(|p| DecodingKey::from_secret(p)));
        Ok(Auth {
            encoding: EncodingKey::from_secret(&current),
            decoding,
            session_ttl: config.auth.session_ttl,
            limiter: limiter::LoginLimiter::new(
                config.auth.login_max_failures,
                config.auth.login_window,
            ),
            ip_limiter: limiter::LoginLimiter::new(
                config
                    .auth
                    .login_max_failures
                    .saturating_mul(IP_LIMIT_FACTOR),
                config.auth.login_window,
            ),
            sessions: Default::default(),
            store: store.clone(),
            bootstrap_checked: Default::default(),
            arrival_wait: (config.cluster.mode != crate::config::Mode::None)
                .then_some(config.cluster.push_timeout),
        })
    }

    /// A signed user token for a session.
    pub fn issue(&self, user: &str, sid: &str, expires: u64) -> Result<String, ApiError> {
        let claims = UserClaims {
            sub: user.into(),
            sid: sid.into(),
            typ: "user".into(),
            aud: USER_AUDIENCE.into(),
            iat: unix_now(),
            exp: expires,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| ApiError::internal("could not sign the token"))
    }

    /// Checks signature (HS256 only), expiry, audience and type; answers the user, the session
    /// and when the token was issued (Unix seconds).
    fn verify(&self, token: &str) -> Result<(String, String, u64), ApiError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&[USER_AUDIENCE]);
        v.set_required_spec_claims(&["exp", "aud", "sub"]);
        v.leeway = 5;
        let invalid = || ApiError::unauthorized("invalid or expired token; log in again");
        for key in &self.decoding {
            match jsonwebtoken::decode::<UserClaims>(token, key, &v) {
                Ok(data) if data.claims.typ == "user" => {
                    return Ok((data.claims.sub, data.claims.sid, data.claims.iat));
                }
                Ok(_) => return Err(invalid()),
                Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) => {
                    continue;
                }
                Err(_) => return Err(invalid()),
            }
        }
        Err(invalid())
    }
}

/// The token of a request: `Authorization: Bearer …`, else the session cookie.
fn request_token(req: &HttpRequest) -> Option<String> {
    if let Some(h) = req.headers().get(actix_web::http::header::AUTHORIZATION) {
        let s = h.to_str().ok()?;
        let (scheme, token) = s.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_string());
    }
    req.cookie(SESSION_COOKIE).map(|c| c.value().to_string())
}

/// The least role a handler needs.
pub trait Policy {
    const MIN: Role;
}
pub struct ViewerPolicy;
pub struct EditorPolicy;
pub struct AdminPolicy;
impl Policy for ViewerPolicy {
    const MIN: Role = Role::Viewer;
}
impl Policy for EditorPolicy {
    const MIN: Role = Role::Editor;
}
impl Policy for AdminPolicy {
    const MIN: Role = Role::Admin;
}

/// A logged-in user holding at least `P::MIN`.
pub struct Authenticated<P> {
    pub user: String,
    pub role: Role,
    pub session: String,
    _policy: PhantomData<P>,
}
pub type AnyUser = Authenticated<ViewerPolicy>;
pub type Editor = Authenticated<EditorPolicy>;
pub type Admin = Authenticated<AdminPolicy>;

impl<P: Policy + 'static> FromRequest for Authenticated<P> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let auth = req.app_data::<web::Data<Auth>>().cloned();
        let token = request_token(req);
        Box::pin(async move {
            let auth = auth.ok_or_else(|| ApiError::internal("authentication state missing"))?;
            let token = token.ok_or_else(|| {
                ApiError::unauthorized("log in first: no session cookie or bearer token")
            })?;
            let (user, sid, issued) = auth.verify(&token)?;
            let (user, role) = auth.check_session(&user, &sid, issued).await?;
            if role < P::MIN {
                return Err(ApiError::forbidden(format!(
                    "this needs the {} role; you are {}",
                    P::MIN.as_str(),
                    role.as_str()
                )));
            }
            Ok(Authenticated {
                user,
                role,
                session: sid,
                _policy: PhantomData,
            })
        })
    }
}

impl Auth {
    /// The session must be live, unexpired and belong to a live user; answers the user's role.
    /// Read from the store once, then remembered until a user or a session is written. A session
    /// this server has never held, named by a token `issued` recently, may still be on its way
    /// from the server that made it: it is awaited (see [`Auth::stored_session`]).
    async fn check_session(
        &self,
        user: &str,
        sid: &str,
        issued: u64,
    ) -> Result<(String, Role), ApiError> {
        let store = &self.store;
        let gone = || ApiError::unauthorized("the session has ended; log in again");
        // Read before the store, so a write that lands meanwhile makes what is read here stale.
        let version = accounts_version(store);
        {
            let mut known = crate::lock(&self.sessions);
            if known.version < version {
                known.by_id.clear();
                known.version = version;
            }
            if known.version == version
                && let Some((u, role, expires)) = known.by_id.get(sid)
                && u == user
                && *expires > unix_now()
            {
                return Ok((u.clone(), *role));
            }
        }
        if !crate::ids::is_valid_id(sid) {
            return Err(gone());
        }
        let session = self.stored_session(sid, issued).await?.ok_or_else(gone)?;
        if session.deleted {
            return Err(gone());
        }
        let record: SessionRecord = session.content.parse().map_err(|_| gone())?;
        if record.user != user || record.expires <= unix_now() {
            return Err(gone());
        }
        let role = user_record(store, user).await?.ok_or_else(gone)?.role;
        let mut known = crate::lock(&self.sessions);
        if known.version == version {
            if known.by_id.len() >= VALID_SESSIONS_MAX {
                known.by_id.clear();
            }
            known
                .by_id
                .insert(sid.to_string(), (record.user.clone(), role, record.expires));
        }
        Ok((record.user, role))
    }

    /// The stored session `sid`, tombstone included. One this server does not hold, named by a
    /// token `issued` recently, is awaited through the cluster up to `arrival_wait` (woken by
    /// each write to the store); a stand-alone server, or an older token, answers `None` at once.
    async fn stored_session(
        &self,
        sid: &str,
        issued: u64,
    ) -> Result<Option<crate::store::Item>, StoreError> {
        let deadline = self
            .arrival_wait
            .filter(|_| unix_now().saturating_sub(issued) <= SESSION_IN_FLIGHT_SECS)
            .map(|wait| tokio::time::Instant::now() + wait);
        let store = &self.store;
        let mut writes = store.watch_seq();
        loop {
            // Marked seen before the read, so a write landing after it wakes the next wait.
            writes.borrow_and_update();
            if let Some(s) = store.get(Collection::Sessions, sid.to_string()).await? {
                return Ok(Some(s));
            }
            let Some(deadline) = deadline else {
                return Ok(None);
            };
            if !matches!(
                tokio::time::timeout_at(deadline, writes.changed()).await,
                Ok(Ok(()))
            ) {
                return Ok(None);
            }
        }
    }
}

/// A user's record, if the user exists.
pub async fn user_record(store: &Store, user: &str) -> Result<Option<UserRecord>, ApiError> {
    if !crate::ids::is_valid_id(user) {
        return Ok(None);
    }
    match store.get_live(Collection::Users, user.to_string()).await {
        Ok(item) => Ok(item.content.parse().ok()),
        Err(StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
