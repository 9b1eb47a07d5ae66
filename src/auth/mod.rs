//! Who is who: connection and subscription tokens ([`token`]), API keys
//! ([`apikey`]) and browser origins ([`origin`]), put together from the
//! configuration once at start ([`Auth`]).

pub mod apikey;
pub mod origin;
pub mod token;

use thiserror::Error;

use crate::config::{AuthConfig, Secret};
use origin::Origins;
use token::{KeyError, Verifier};

#[derive(Debug, Error)]
pub enum AuthError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("--allowed-origins: {0}")]
    Origins(String),
}

/// The authentication settings of one instance.
pub struct Auth {
    /// `None`: no keys, so no token can be verified.
    pub verifier: Option<Verifier>,
    pub insecure: bool,
    pub token_in_query: bool,
    api_keys: Vec<Secret>,
    admin_keys: Vec<Secret>,
    pub origins: Origins,
}

/// Whether an HTTP API request may proceed.
#[derive(Debug, PartialEq, Eq)]
pub enum ApiAccess {
    Granted,
    /// No key, or a wrong one.
    Refused(&'static str),
}

impl Auth {
    pub fn from_config(c: &AuthConfig) -> Result<Auth, AuthError> {
        Ok(Auth {
            verifier: Verifier::from_config(c)?,
            insecure: c.insecure,
            token_in_query: c.token_in_query,
            api_keys: c.api_key.clone(),
            admin_keys: c.admin_key.clone(),
            origins: Origins::new(&c.allowed_origins).map_err(AuthError::Origins)?,
        })
    }

    /// Whether clients can be authenticated at all (keys, or development mode).
    pub fn can_authenticate(&self) -> bool {
        self.verifier.is_some() || self.insecure
    }

    fn check(&self, keys: &[&[Secret]], presented: Option<&str>) -> ApiAccess {
        let configured = keys.iter().any(|k| !k.is_empty());
        if !configured {
            return if self.insecure {
                // Development mode without keys: the API is open, as --insecure says.
                ApiAccess::Granted
            } else {
                ApiAccess::Refused("no API key is configured (--api-key); the API is closed")
            };
        }
        match presented {
            None => ApiAccess::Refused(
                "an API key is required (Authorization: apikey <key>, or X-API-Key)",
            ),
            Some(k) if keys.iter().any(|set| apikey::matches(set, k)) => ApiAccess::Granted,
            Some(_) => ApiAccess::Refused("wrong API key"),
        }
    }

    /// Access to `/api/*`.
    pub fn api(&self, presented: Option<&str>) -> ApiAccess {
        self.check(&[&self.api_keys], presented)
    }

    /// Access to the operator's view (`/dashboard`, `/api/instances`): an admin
    /// key or an API key.
    pub fn admin(&self, presented: Option<&str>) -> ApiAccess {
        self.check(&[&self.admin_keys, &self.api_keys], presented)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn auth(args: &[&str]) -> Auth {
        let mut argv = vec!["shardcast"];
        argv.extend_from_slice(args);
        Auth::from_config(&Config::from_args(argv).unwrap().auth).unwrap()
    }

    #[test]
    fn the_api_is_closed_without_keys_unless_insecure() {
        assert!(matches!(auth(&[]).api(Some("x")), ApiAccess::Refused(_)));
        assert_eq!(auth(&["--insecure"]).api(None), ApiAccess::Granted);
        let a = auth(&["--api-key", "k1", "--admin-key", "adm"]);
        assert!(matches!(a.api(None), ApiAccess::Refused(_)));
        assert!(matches!(a.api(Some("nope")), ApiAccess::Refused(_)));
        assert_eq!(a.api(Some("k1")), ApiAccess::Granted);
        assert!(
            matches!(a.api(Some("adm")), ApiAccess::Refused(_)),
            "an admin key is not an API key"
        );
        assert_eq!(a.admin(Some("adm")), ApiAccess::Granted);
        assert_eq!(a.admin(Some("k1")), ApiAccess::Granted);
        // Keys configured: required even in development mode.
        assert!(matches!(
            auth(&["--insecure", "--api-key", "k"]).api(None),
            ApiAccess::Refused(_)
        ));
    }
}
