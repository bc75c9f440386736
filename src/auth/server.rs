//! Server-to-server authentication. A server first asks the other for a challenge (single-use,
//! answerable for 30 s as the issuer measures time), then proves it knows `cluster.shared.secret`
//! with an HMAC-SHA256 over its id, a fresh nonce, the challenge, the server it is meant for and
//! the protocol version; the answering server checks the proof in constant time (against the
//! current secret, then the previous one during a rotation), takes the challenge back (a replay
//! finds it gone), and issues a short-lived JWT with `typ=server` and audience `folio-cluster`,
//! signed with a key that lives in this process only: tokens are only ever checked by the server
//! that issued them, against its own clock, so no two clocks need agree. Earlier versions answer
//! no challenge: their proofs carry a timestamp, refused outside ±60 s of this server's clock,
//! and a nonce, refused when seen before.
//!
//! Server tokens open `/cluster/v1/*` and nothing else; user tokens never open it. Every cluster
//! call carries the protocol version and the caller's term (see `cluster::Terms`).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::cluster::Terms;
use crate::config::Config;
use crate::error::{ApiError, Code};
use crate::wire::{
    CLUSTER_AUDIENCE, NOW_HEADER, PROOF_WINDOW_MS, PROTOCOL, PROTOCOL_HEADER, TERM_HEADER,
    TokenRequest, VERSION_HEADER, hmac_key, now_ms, unhex,
};

#[derive(Debug, Serialize, Deserialize)]
struct ServerClaims {
    sub: String,
    typ: String,
    aud: String,
    iat: u64,
    exp: u64,
}

/// What the server-token extractor ([`ServerAuth`]) reads: this server's token issuer (none
/// when it stands alone) and the terms a call's term is checked against.
pub struct ServerGate {
    pub tokens: Option<ServerTokens>,
    pub terms: std::sync::Arc<Terms>,
}

/// Issues and checks server tokens for this server.
pub struct ServerTokens {
    /// This server's id: a proof meant for another server is refused.
    me: String,
    secrets: Vec<aws_lc_rs::hmac::Key>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    /// Nonces seen within the proof window, with the time they may be forgotten.
    nonces: Mutex<HashMap<String, u64>>,
    /// Challenges handed out and not yet answered, with the moment they expire.
    challenges: Mutex<HashMap<String, Instant>>,
    /// Why each caller's last token request was refused, while they are (by the id it gave):
    /// a refusal is logged when it differs from that caller's last, not at every attempt.
    refused: Mutex<HashMap<String, String>>,
    /// Lifetime of issued tokens, in seconds.
    pub ttl_secs: u64,
}

/// How long a challenge may be answered.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(30);

/// The most challenges held at once: anyone may ask for one, so what they cost is bounded.
const CHALLENGES_HELD: usize = 10_000;

/// The most callers whose refusals are remembered for logging.
const REFUSALS_HELD: usize = 1024;

/// The refusal for a call that speaks another protocol version.
pub fn protocol_mismatch(theirs: Option<&str>) -> ApiError {
    ApiError::new(
        Code::ProtocolMismatch,
        format!(
            "this server speaks Folio cluster protocol {PROTOCOL}; the caller sent {}",
            theirs
                .map(|t| format!("protocol {t}"))
                .unwrap_or_else(|| "no protocol version".into())
        ),
    )
}

impl ServerTokens {
    /// `None` when no shared secret is configured (stand-alone).
    pub fn new(config: &Config, me: &str) -> Option<ServerTokens> {
        let current = config.cluster.shared_secret.as_ref()?;
        let mut secrets = vec![hmac_key(current.expose())];
        secrets.extend(
            config
                .cluster
                .shared_secret_previous
                .as_ref()
                .map(|p| hmac_key(p.expose())),
        );
        let mut key = [0u8; 32];
        let _ = aws_lc_rs::rand::fill(&mut key);
        Some(ServerTokens {
            me: me.to_string(),
            secrets,
            encoding: EncodingKey::from_secret(&key),
            decoding: DecodingKey::from_secret(&key),
            nonces: Mutex::new(HashMap::new()),
            challenges: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
            ttl_secs: config.cluster.token_ttl.as_secs().max(1),
        })
    }

    /// Logs how a token request of `caller` ended (`refused`: why) when that differs from how
    /// its last one ended.
    pub fn log_outcome(&self, caller: &str, refused: Option<&str>) {
        if !crate::ids::is_valid_id(caller) {
            // Not an id any server has: nothing to remember it by (its refusal says so).
            return;
        }
        let mut last = crate::lock(&self.refused);
        match refused {
            Some(why) if last.get(caller).map(String::as_str) != Some(why) => {
                // Anyone may ask, under any id: what is remembered is bounded.
                if last.len() >= REFUSALS_HELD {
                    last.clear();
                }
                last.insert(caller.to_string(), why.to_string());
                tracing::warn!(caller, reason = %why, "server token refused");
            }
            Some(_) => {}
            None => {
                if last.remove(caller).is_some() {
                    tracing::info!(caller, "server token issued after refusals");
                }
            }
        }
    }

    /// A new challenge for a token request to answer within [`CHALLENGE_TTL`]; when
    /// [`CHALLENGES_HELD`] are outstanding, expired ones are forgotten, then the oldest.
    pub fn challenge(&self) -> String {
        let mut n = [0u8; 16];
        let _ = aws_lc_rs::rand::fill(&mut n);
        let challenge = crate::wire::hex(&n);
        let now = Instant::now();
        let mut held = crate::lock(&self.challenges);
        if held.len() >= CHALLENGES_HELD {
            held.retain(|_, until| *until > now);
        }
        if held.len() >= CHALLENGES_HELD
            && let Some(oldest) = held.iter().min_by_key(|(_, u)| **u).map(|(c, _)| c.clone())
        {
            held.remove(&oldest);
        }
        held.insert(challenge.clone(), now + CHALLENGE_TTL);
        challenge
    }

    /// Checks a proof and answers a server token for the caller.
    pub fn exchange(&self, req: &TokenRequest) -> Result<String, ApiError> {
        if req.protocol != PROTOCOL {
            return Err(protocol_mismatch(Some(&req.protocol.to_string())));
        }
        let refused = |why: &str| ApiError::unauthorized(format!("server token refused: {why}"));
        if !crate::ids::is_valid_id(&req.id) {
            return Err(ApiError::new(
                Code::InvalidId,
                "a server id uses the safe id alphabet",
            ));
        }
        let now = now_ms();
        // An earlier version's proof answers no challenge: its timestamp must be recent.
        if req.challenge.is_none() && now.abs_diff(req.ts_ms) > PROOF_WINDOW_MS {
            return Err(refused(
                "the proof's timestamp is more than 60 s from this server's clock (an earlier version's proof, which answers no challenge: upgrade the caller, or set its clock right)",
            ));
        }
        let (Some(tag), true) = (
            unhex(&req.proof),
            req.nonce.len() == 32 && unhex(&req.nonce).is_some(),
        ) else {
            return Err(refused("malformed proof"));
        };
        // A proof names the server it is meant for (older versions name none: accepted, so a
        // cluster can be upgraded one server at a time).
        if let Some(audience) = req.audience.as_deref().filter(|a| *a != self.me) {
            return Err(ApiError::new(
                Code::ProofForAnotherServer,
                format!(
                    "server token refused: the proof is meant for server {audience}, not {}",
                    self.me
                ),
            ));
        }
        let msg = req.signed();
        if !self
            .secrets
            .iter()
            .any(|k| aws_lc_rs::hmac::verify(k, &msg, &tag).is_ok())
        {
            return Err(refused(
                "the proof does not match this cluster's shared secret",
            ));
        }
        // A challenge is answered once, in time as this server measures it.
        if let Some(challenge) = req.challenge.as_deref() {
            let issued = crate::lock(&self.challenges).remove(challenge);
            if issued.is_none_or(|until| until <= Instant::now()) {
                return Err(refused(
                    "the challenge is unknown, already answered or expired: ask for another",
                ));
            }
        }
        {
            let mut seen = crate::lock(&self.nonces);
            if seen.len() > 10_000 {
                seen.retain(|_, until| *until > now);
            }
            if seen
                .insert(req.nonce.clone(), now + 2 * PROOF_WINDOW_MS)
                .is_some()
            {
                return Err(refused("this proof was already used"));
            }
        }
        let iat = now / 1000;
        let claims = ServerClaims {
            sub: req.id.clone(),
            typ: "server".into(),
            aud: CLUSTER_AUDIENCE.into(),
            iat,
            exp: iat + self.ttl_secs,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| ApiError::internal("could not sign the token"))
    }

    /// Checks a server token; answers the caller's id.
    pub fn verify(&self, token: &str) -> Result<String, ApiError> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&[CLUSTER_AUDIENCE]);
        v.set_required_spec_claims(&["exp", "aud", "sub"]);
        v.leeway = 0;
        match jsonwebtoken::decode::<ServerClaims>(token, &self.decoding, &v) {
            Ok(d) if d.claims.typ == "server" => Ok(d.claims.sub),
            _ => Err(ApiError::unauthorized(
                "a valid server token is required here",
            )),
        }
    }
}

/// A caller holding a valid server token, speaking this protocol, at a term no older than ours.
pub struct ServerAuth {
    pub caller: String,
    pub term: u64,
    pub version: Option<String>,
    /// The caller's clock minus ours, from the time it stated it sent the call (earlier
    /// versions do not state it).
    pub clock_offset_ms: Option<i64>,
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Checks the protocol header of a cluster call.
pub fn check_protocol(req: &HttpRequest) -> Result<(), ApiError> {
    match header(req, PROTOCOL_HEADER) {
        Some(p) if p.trim() == PROTOCOL.to_string() => Ok(()),
        other => Err(protocol_mismatch(other)),
    }
}

impl FromRequest for ServerAuth {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let gate = req.app_data::<web::Data<ServerGate>>().cloned();
        let protocol = check_protocol(req);
        let token = header(req, "authorization")
            .and_then(|h| h.split_once(' '))
            .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim().to_string());
        let term = header(req, TERM_HEADER).map(|t| t.trim().parse::<u64>());
        let version = header(req, VERSION_HEADER).map(str::to_string);
        let clock_offset_ms = header(req, NOW_HEADER)
            .and_then(|t| t.trim().parse::<u64>().ok())
            .map(|sent| crate::wire::offset_ms(sent, now_ms()));
        Box::pin(async move {
            let gate = gate.ok_or_else(|| ApiError::internal("server-token state missing"))?;
            protocol?;
            let tokens = gate.tokens.as_ref().ok_or_else(|| {
                ApiError::new(Code::NotClustered, "this server is not part of a cluster")
            })?;
            let token =
                token.ok_or_else(|| ApiError::unauthorized("a server token is required here"))?;
            let caller = tokens.verify(&token)?;
            let term = match term {
                Some(Ok(t)) => t,
                _ => {
                    return Err(ApiError::new(
                        Code::MissingTerm,
                        "cluster calls carry the folio-term header",
                    ));
                }
            };
            gate.terms.check_incoming(term).await?;
            Ok(ServerAuth {
                caller,
                term,
                version,
                clock_offset_ms,
            })
        })
    }
}
