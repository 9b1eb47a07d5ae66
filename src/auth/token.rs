//! Connection and subscription tokens: JWTs verified with the configured keys.
//!
//! The algorithm is pinned by configuration: a token whose `alg` is not one of the
//! accepted algorithms is refused before any key is tried (`none` never is one),
//! and each family is verified only with its own keys, so an HMAC token is never
//! checked against public key material (the classic confusion attack). Secrets
//! may be listed several times over for rotation: any listed one verifies.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;

use crate::channel::{Channel, UserId};
use crate::codes::ErrorCode;
use crate::config::AuthConfig;

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 5;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm {0} is not accepted")]
    Algorithm(String),
    #[error("signature does not verify with any configured key")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("token is for another audience")]
    Audience,
    #[error("token is from another issuer")]
    Issuer,
    #[error("token has no `sub`")]
    MissingSub,
    #[error("token has no `exp`")]
    MissingExp,
    #[error("anonymous connections (`sub: \"\"`) are not allowed")]
    Anonymous,
    #[error("invalid claim: {0}")]
    Claim(String),
    #[error("the token is for another user")]
    OtherUser,
    #[error("the token is for another channel")]
    OtherChannel,
}

impl TokenError {
    pub fn code(&self) -> ErrorCode {
        match self {
            TokenError::Expired => ErrorCode::TokenExpired,
            _ => ErrorCode::Unauthorized,
        }
    }
}

/// Why the configured keys cannot be used (reported at start).
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a PEM public key of a supported kind (RSA, EC P-256, Ed25519)")]
    Pem { path: String },
    #[error("{path}: not a JWKS file: {source}")]
    Jwks {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("unknown algorithm `{0}`")]
    Algorithm(String),
    #[error("algorithm {alg:?} is accepted but no configured key can verify it")]
    NoKeyFor { alg: Algorithm },
}

/// What a connection token says.
#[derive(Debug, Clone)]
pub struct ConnectClaims {
    /// The anonymous user for `sub: ""` (when allowed).
    pub user: UserId,
    /// Unix seconds.
    pub expires_at: u64,
    pub info: Option<Arc<RawValue>>,
    /// Server-side subscriptions made at connect.
    pub channels: Vec<Channel>,
    /// Server-only data (never sent to clients).
    pub meta: Option<Arc<RawValue>>,
}

/// What a subscription token says.
#[derive(Debug, Clone)]
pub struct SubscriptionClaims {
    pub channel: Channel,
    pub expires_at: u64,
    pub info: Option<Arc<RawValue>>,
}

#[derive(Deserialize)]
struct Raw {
    sub: Option<String>,
    exp: Option<u64>,
    #[serde(default)]
    info: Option<Box<RawValue>>,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    meta: Option<Box<RawValue>>,
    #[serde(default)]
    channel: Option<String>,
}

/// A key with the algorithms it may verify.
struct Key {
    decoding: DecodingKey,
    family: AlgorithmFamily,
    kid: Option<String>,
}

/// Verifies tokens with the configured keys.
pub struct Verifier {
    keys: Vec<Key>,
    algorithms: Vec<Algorithm>,
    audience: Option<String>,
    issuer: Option<String>,
    allow_anonymous: bool,
}

fn family_of(alg: Algorithm) -> AlgorithmFamily {
    alg.family()
}

fn key_error(path: &std::path::Path) -> impl Fn(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Read {
        path: path.display().to_string(),
        source,
    }
}

impl Verifier {
    /// The verifier of `config`; `None` when no key is configured.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Verifier>, KeyError> {
        let mut keys = Vec::new();
        for s in &config.token_hmac_secret {
            keys.push(Key {
                decoding: DecodingKey::from_secret(s.expose().as_bytes())
                    .map_err(|_| KeyError::Algorithm("HMAC".into()))?,
                family: AlgorithmFamily::Hmac,
                kid: None,
            });
        }
        for path in &config.token_public_key {
            let pem = std::fs::read(path).map_err(key_error(path))?;
            let key = DecodingKey::from_rsa_pem(&pem)
                .map(|k| (k, AlgorithmFamily::Rsa))
                .or_else(|_| DecodingKey::from_ec_pem(&pem).map(|k| (k, AlgorithmFamily::Ec)))
                .or_else(|_| DecodingKey::from_ed_pem(&pem).map(|k| (k, AlgorithmFamily::Ed)))
                .map_err(|_| KeyError::Pem {
                    path: path.display().to_string(),
                })?;
            keys.push(Key {
                decoding: key.0,
                family: key.1,
                kid: None,
            });
        }
        if let Some(path) = &config.token_jwks {
            let text = std::fs::read(path).map_err(key_error(path))?;
            let set: JwkSet = serde_json::from_slice(&text).map_err(|source| KeyError::Jwks {
                path: path.display().to_string(),
                source,
            })?;
            for jwk in &set.keys {
                let Ok(decoding) = DecodingKey::from_jwk(jwk) else {
                    continue;
                };
                let family = decoding.family();
                keys.push(Key {
                    decoding,
                    family,
                    kid: jwk.common.key_id.clone(),
                });
            }
        }
        if keys.is_empty() {
            return Ok(None);
        }
        let algorithms = if config.token_algorithms.is_empty() {
            let mut algs = Vec::new();
            for k in &keys {
                let extra: &[Algorithm] = match k.family {
                    AlgorithmFamily::Hmac => {
                        &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]
                    }
                    AlgorithmFamily::Rsa => &[Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
                    AlgorithmFamily::Ec => &[Algorithm::ES256],
                    AlgorithmFamily::Ed => &[Algorithm::EdDSA],
                };
                for a in extra {
                    if !algs.contains(a) {
                        algs.push(*a);
                    }
                }
            }
            algs
        } else {
            let mut algs = Vec::new();
            for name in &config.token_algorithms {
                let alg: Algorithm = name
                    .trim()
                    .parse()
                    .map_err(|_| KeyError::Algorithm(name.clone()))?;
                if !keys.iter().any(|k| k.family == family_of(alg)) {
                    return Err(KeyError::NoKeyFor { alg });
                }
                algs.push(alg);
            }
            algs
        };
        Ok(Some(Verifier {
            keys,
            algorithms,
            audience: config.token_audience.clone(),
            issuer: config.token_issuer.clone(),
            allow_anonymous: config.allow_anonymous,
        }))
    }

    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// Checks signature, algorithm and the registered claims; returns the rest.
    fn verify(&self, token: &str) -> Result<Raw, TokenError> {
        let header = decode_header(token).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName => {
                TokenError::Algorithm("unsupported".into())
            }
            _ => TokenError::Malformed,
        })?;
        if !self.algorithms.contains(&header.alg) {
            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.required_spec_claims = ["exp".to_string()].into();
        validation.validate_aud = self.audience.is_some();
        if let Some(a) = &self.audience {
            validation.set_audience(&[a]);
            validation.required_spec_claims.insert("aud".into());
        }
        if let Some(i) = &self.issuer {
            validation.set_issuer(&[i]);
            validation.required_spec_claims.insert("iss".into());
        }
        let family = family_of(header.alg);
        let candidates = self.keys.iter().filter(|k| k.family == family).filter(|k| {
            // With a `kid`, only the key of that id (when keys have ids).
            match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            }
        });
        let mut last = TokenError::Signature;
        for key in candidates {
            match decode::<Raw>(token, &key.decoding, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::InvalidSignature
                        | K::InvalidEcdsaKey
                        | K::InvalidRsaKey(_)
                        | K::InvalidEddsaKey => TokenError::Signature,
                        K::ExpiredSignature => return Err(TokenError::Expired),
                        K::ImmatureSignature => return Err(TokenError::NotYetValid),
                        K::InvalidAudience => return Err(TokenError::Audience),
                        K::InvalidIssuer => return Err(TokenError::Issuer),
                        K::MissingRequiredClaim(c) if c == "exp" => {
                            return Err(TokenError::MissingExp);
                        }
                        K::MissingRequiredClaim(c) if c == "aud" => {
                            return Err(TokenError::Audience);
                        }
                        K::MissingRequiredClaim(c) if c == "iss" => return Err(TokenError::Issuer),
                        K::InvalidAlgorithm => {
                            return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
                        }
                        K::Json(err) => return Err(TokenError::Claim(err.to_string())),
                        _ => TokenError::Malformed,
                    };
                }
            }
        }
        Err(last)
    }

    /// Verifies a connection token.
    pub fn connect(&self, token: &str) -> Result<ConnectClaims, TokenError> {
        let raw = self.verify(token)?;
        let sub = raw.sub.ok_or(TokenError::MissingSub)?;
        let user = if sub.is_empty() {
            if !self.allow_anonymous {
                return Err(TokenError::Anonymous);
            }
            UserId::anonymous()
        } else {
            UserId::parse(&sub).map_err(|e| TokenError::Claim(format!("sub: {e}")))?
        };
        let channels = raw
            .channels
            .unwrap_or_default()
            .iter()
            .map(|c| {
                Channel::parse(c).map_err(|e| TokenError::Claim(format!("channels: `{c}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ConnectClaims {
            user,
            expires_at: raw.exp.ok_or(TokenError::MissingExp)?,
            info: raw.info.map(Arc::from),
            channels,
            meta: raw.meta.map(Arc::from),
        })
    }

    /// Verifies a subscription token of `user` for `channel`.
    pub fn subscription(
        &self,
        token: &str,
        user: &UserId,
        channel: &Channel,
    ) -> Result<SubscriptionClaims, TokenError> {
        let raw = self.verify(token)?;
        if raw.sub.as_deref() != Some(user.as_str()) {
            return Err(TokenError::OtherUser);
        }
        if raw.channel.as_deref() != Some(channel.as_str()) {
            return Err(TokenError::OtherChannel);
        }
        Ok(SubscriptionClaims {
            channel: channel.clone(),
            expires_at: raw.exp.ok_or(TokenError::MissingExp)?,
            info: raw.info.map(Arc::from),
        })
    }
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How long until the Unix second `at` (zero when passed).
pub fn until(at: u64) -> Duration {
    Duration::from_secs(at.saturating_sub(now_secs()))
}

/// Signs `claims` with an HMAC secret (HS256): for `shardcast token` and tests.
pub fn mint_hs256(
    secret: &str,
    claims: &serde_json::Value,
) -> Result<String, jsonwebtoken::errors::Error> {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())?;
    jsonwebtoken::encode(&jsonwebtoken::Header::new(Algorithm::HS256), claims, &key)
}

/// Signs `claims` with a PEM private key (RSA, EC P-256 or Ed25519) and `alg`.
pub fn mint_pem(
    pem: &[u8],
    alg: Algorithm,
    claims: &serde_json::Value,
) -> Result<String, jsonwebtoken::errors::Error> {
    let key = match alg.family() {
        AlgorithmFamily::Rsa => jsonwebtoken::EncodingKey::from_rsa_pem(pem)?,
        AlgorithmFamily::Ec => jsonwebtoken::EncodingKey::from_ec_pem(pem)?,
        _ => jsonwebtoken::EncodingKey::from_ed_pem(pem)?,
    };
    jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), claims, &key)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::Config;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keys");

    fn fixture(name: &str) -> String {
        format!("{FIXTURES}/{name}")
    }

    fn verifier(args: &[&str]) -> Verifier {
        let mut argv = vec!["shardcast"];
        argv.extend_from_slice(args);
        let c = Config::from_args(argv).unwrap();
        Verifier::from_config(&c.auth)
            .unwrap()
            .expect("keys configured")
    }

    fn claims(sub: &str, ttl: i64) -> serde_json::Value {
        json!({"sub": sub, "exp": now_secs() as i64 + ttl, "info": {"name": "Alice"}, "channels": ["news"]})
    }

    fn pem(name: &str) -> Vec<u8> {
        std::fs::read(fixture(name)).unwrap()
    }

    #[test]
    fn a_valid_hmac_token_gives_the_user_info_and_channels() {
        let v = verifier(&["--token-hmac-secret", "s1"]);
        let t = mint_hs256("s1", &claims("alice", 60)).unwrap();
        let c = v.connect(&t).unwrap();
        assert_eq!(c.user.as_str(), "alice");
        assert_eq!(
            c.info.as_ref().map(|i| i.get()),
            Some(r#"{"name":"Alice"}"#)
        );
        assert_eq!(c.channels, vec![Channel::parse("news").unwrap()]);
    }

    #[test]
    fn a_forged_signature_is_refused() {
        let v = verifier(&["--token-hmac-secret", "s1"]);
        let t = mint_hs256("not-the-secret", &claims("alice", 60)).unwrap();
        assert_eq!(v.connect(&t).unwrap_err(), TokenError::Signature);
        // A payload swapped under a valid signature.
        let good = mint_hs256("s1", &claims("alice", 60)).unwrap();
        let other = mint_hs256("s1", &claims("mallory", 60)).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let theirs: Vec<&str> = other.split('.').collect();
        let spliced = format!("{}.{}.{}", parts[0], theirs[1], parts[2]);
        assert_eq!(v.connect(&spliced).unwrap_err(), TokenError::Signature);
    }

    #[test]
    fn alg_none_is_refused() {
        let v = verifier(&["--token-hmac-secret", "s1"]);
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(claims("alice", 60).to_string());
        for t in [format!("{header}.{body}."), format!("{header}.{body}")] {
            assert!(
                matches!(
                    v.connect(&t),
                    Err(TokenError::Algorithm(_) | TokenError::Malformed)
                ),
                "{t}"
            );
        }
    }

    #[test]
    fn an_algorithm_not_configured_is_refused() {
        let v = verifier(&["--token-hmac-secret", "s1", "--token-algorithms", "HS512"]);
        let t = mint_hs256("s1", &claims("alice", 60)).unwrap();
        assert_eq!(
            v.connect(&t).unwrap_err(),
            TokenError::Algorithm("HS256".into())
        );
    }

    #[test]
    fn an_hmac_token_signed_with_the_public_key_is_refused() {
        // The confusion attack: HS256 "signed" with the RSA public key's PEM bytes.
        let rsa_only = verifier(&["--token-public-key", &fixture("rsa.pub")]);
        let public = String::from_utf8(pem("rsa.pub")).unwrap();
        let t = mint_hs256(&public, &claims("alice", 60)).unwrap();
        assert!(matches!(
            rsa_only.connect(&t),
            Err(TokenError::Algorithm(_))
        ));
        // With an HMAC secret configured too, HS256 is accepted but checked only
        // against the secret.
        let both = verifier(&[
            "--token-public-key",
            &fixture("rsa.pub"),
            "--token-hmac-secret",
            "s1",
        ]);
        assert_eq!(both.connect(&t).unwrap_err(), TokenError::Signature);
    }

    #[test]
    fn public_key_tokens_verify_with_their_family() {
        let v = verifier(&[
            "--token-public-key",
            &format!(
                "{},{},{}",
                fixture("rsa.pub"),
                fixture("ec.pub"),
                fixture("ed.pub")
            ),
        ]);
        for (key, alg) in [
            ("rsa.key", Algorithm::RS256),
            ("ec.key", Algorithm::ES256),
            ("ed.key", Algorithm::EdDSA),
        ] {
            let t = mint_pem(&pem(key), alg, &claims("bob", 60)).unwrap();
            assert_eq!(
                v.connect(&t).map(|c| c.user.as_str().to_string()),
                Ok("bob".into()),
                "{alg:?}"
            );
        }
        let jwks = verifier(&["--token-jwks", &fixture("jwks.json")]);
        let t = mint_pem(&pem("rsa.key"), Algorithm::RS256, &claims("carol", 60)).unwrap();
        assert_eq!(
            jwks.connect(&t).map(|c| c.user.as_str().to_string()),
            Ok("carol".into())
        );
        let ec = mint_pem(&pem("ec.key"), Algorithm::ES256, &claims("carol", 60)).unwrap();
        assert!(
            jwks.connect(&ec).is_err(),
            "ES256 is not accepted with only an RSA JWK"
        );
    }

    #[test]
    fn expired_and_not_yet_valid_tokens_are_refused() {
        let v = verifier(&["--token-hmac-secret", "s1"]);
        let t = mint_hs256("s1", &claims("alice", -30)).unwrap();
        assert_eq!(v.connect(&t).unwrap_err(), TokenError::Expired);
        assert_eq!(TokenError::Expired.code(), ErrorCode::TokenExpired);
        let mut c = claims("alice", 600);
        c["nbf"] = json!(now_secs() + 300);
        let t = mint_hs256("s1", &c).unwrap();
        assert_eq!(v.connect(&t).unwrap_err(), TokenError::NotYetValid);
        let t = mint_hs256("s1", &json!({"sub": "alice"})).unwrap();
        assert_eq!(v.connect(&t).unwrap_err(), TokenError::MissingExp);
    }

    #[test]
    fn audience_issuer_and_sub_are_checked() {
        let v = verifier(&[
            "--token-hmac-secret",
            "s1",
            "--token-audience",
            "rt",
            "--token-issuer",
            "backend",
        ]);
        let mut c = claims("alice", 60);
        c["aud"] = json!("rt");
        c["iss"] = json!("backend");
        assert!(v.connect(&mint_hs256("s1", &c).unwrap()).is_ok());
        let mut wrong = c.clone();
        wrong["aud"] = json!("other");
        assert_eq!(
            v.connect(&mint_hs256("s1", &wrong).unwrap()).unwrap_err(),
            TokenError::Audience
        );
        let mut wrong = c.clone();
        wrong["iss"] = json!("evil");
        assert_eq!(
            v.connect(&mint_hs256("s1", &wrong).unwrap()).unwrap_err(),
            TokenError::Issuer
        );
        let mut none = c.clone();
        none.as_object_mut().unwrap().remove("aud");
        assert_eq!(
            v.connect(&mint_hs256("s1", &none).unwrap()).unwrap_err(),
            TokenError::Audience
        );
        let mut nosub = c.clone();
        nosub.as_object_mut().unwrap().remove("sub");
        assert_eq!(
            v.connect(&mint_hs256("s1", &nosub).unwrap()).unwrap_err(),
            TokenError::MissingSub
        );
        let mut anon = c;
        anon["sub"] = json!("");
        assert_eq!(
            v.connect(&mint_hs256("s1", &anon).unwrap()).unwrap_err(),
            TokenError::Anonymous
        );
    }

    #[test]
    fn a_rotated_key_is_accepted_while_listed() {
        let old = mint_hs256("old", &claims("alice", 60)).unwrap();
        let new = mint_hs256("new", &claims("alice", 60)).unwrap();
        let during = verifier(&["--token-hmac-secret", "new,old"]);
        assert!(during.connect(&old).is_ok() && during.connect(&new).is_ok());
        let after = verifier(&["--token-hmac-secret", "new"]);
        assert_eq!(after.connect(&old).unwrap_err(), TokenError::Signature);
        assert!(after.connect(&new).is_ok());
    }

    #[test]
    fn subscription_tokens_name_the_user_and_the_channel() {
        let v = verifier(&["--token-hmac-secret", "s1"]);
        let alice = UserId::parse("alice").unwrap();
        let ch = Channel::parse("private:1").unwrap();
        let t = mint_hs256(
            "s1",
            &json!({"sub":"alice","channel":"private:1","exp": now_secs() + 60}),
        )
        .unwrap();
        assert!(v.subscription(&t, &alice, &ch).is_ok());
        let bob = UserId::parse("bob").unwrap();
        assert_eq!(
            v.subscription(&t, &bob, &ch).unwrap_err(),
            TokenError::OtherUser
        );
        let other = Channel::parse("private:2").unwrap();
        assert_eq!(
            v.subscription(&t, &alice, &other).unwrap_err(),
            TokenError::OtherChannel
        );
    }
}
