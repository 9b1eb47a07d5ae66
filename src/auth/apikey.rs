//! API keys for the HTTP API: `Authorization: apikey <key>` or `X-API-Key: <key>`,
//! compared in constant time against every configured key.

use subtle::ConstantTimeEq;

use crate::config::Secret;

/// The key a request presents, if any.
pub fn presented(authorization: Option<&str>, x_api_key: Option<&str>) -> Option<String> {
    if let Some(v) = authorization {
        let v = v.trim();
        if let Some((scheme, key)) = v.split_once(' ')
            && scheme.eq_ignore_ascii_case("apikey")
        {
            return Some(key.trim().to_string());
        }
    }
    x_api_key.map(|k| k.trim().to_string())
}

/// Whether `key` is one of `keys` (constant time in the key's content).
pub fn matches(keys: &[Secret], key: &str) -> bool {
    let mut ok = subtle::Choice::from(0u8);
    for k in keys {
        ok |= k.expose().as_bytes().ct_eq(key.as_bytes());
    }
    bool::from(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_either_header_and_must_match_exactly() {
        assert_eq!(presented(Some("apikey abc"), None).as_deref(), Some("abc"));
        assert_eq!(
            presented(Some("ApiKey  abc "), None).as_deref(),
            Some("abc")
        );
        assert_eq!(
            presented(Some("Bearer abc"), Some("x")).as_deref(),
            Some("x")
        );
        assert_eq!(presented(None, None), None);
        let keys = vec![Secret::new("k1"), Secret::new("k2")];
        assert!(matches(&keys, "k2"));
        assert!(!matches(&keys, "k"));
        assert!(!matches(&keys, "k22"));
        assert!(!matches(&[], "k1"));
    }
}
