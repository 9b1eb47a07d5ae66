//! Connection and subscription tokens for tests: HS256 JWTs signed with the
//! secret the instances under test were given (`--token-hmac-secret`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs `claims` (any JSON object) with `secret`, HS256.
pub fn sign(secret: &str, claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("an HMAC key");
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), claims, &key).expect("sign a token")
}

/// A connection token for `user` valid for `ttl`, with optional `info` and
/// server-side `channels`.
pub fn connection(
    secret: &str,
    user: &str,
    ttl: Duration,
    info: Option<Value>,
    channels: &[&str],
) -> String {
    let mut c = json!({"sub": user, "exp": now() + ttl.as_secs()});
    if let Some(i) = info {
        c["info"] = i;
    }
    if !channels.is_empty() {
        c["channels"] = json!(channels);
    }
    sign(secret, &c)
}

/// A subscription token of `user` for `channel`, valid for `ttl`.
pub fn subscription(secret: &str, user: &str, channel: &str, ttl: Duration) -> String {
    sign(
        secret,
        &json!({"sub": user, "channel": channel, "exp": now() + ttl.as_secs()}),
    )
}
