//! Which browser origins may open a WebSocket: the server's own (the `Origin`
//! names the `Host` the request was sent to), the configured ones (exact, or
//! `scheme://*.domain` for any subdomain), and requests without `Origin` (not from
//! a browser, which would always send one).

/// The configured origins.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    exact: Vec<String>,
    /// (scheme, ".domain") of `scheme://*.domain` patterns.
    wildcard: Vec<(String, String)>,
}

impl Origins {
    pub fn new(patterns: &[String]) -> Result<Origins, String> {
        let mut o = Origins::default();
        for p in patterns {
            let p = p.trim().trim_end_matches('/').to_ascii_lowercase();
            let Some((scheme, host)) = p.split_once("://") else {
                return Err(format!(
                    "origin `{p}` needs a scheme (https://app.example.com)"
                ));
            };
            match host.strip_prefix("*.") {
                Some(domain) if !domain.is_empty() => {
                    o.wildcard.push((scheme.to_string(), format!(".{domain}")))
                }
                _ if host.contains('*') => {
                    return Err(format!("origin `{p}`: only a leading `*.` is allowed"));
                }
                _ => o.exact.push(p),
            }
        }
        Ok(o)
    }

    /// Whether a request with this `Origin` (and `Host`) may upgrade.
    pub fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        let Some((scheme, rest)) = origin.split_once("://") else {
            return false;
        };
        if host.is_some_and(|h| h.eq_ignore_ascii_case(rest)) {
            return true;
        }
        if self.exact.contains(&origin) {
            return true;
        }
        self.wildcard.iter().any(|(s, domain)| {
            s == scheme && {
                let name = rest.split(':').next().unwrap_or(rest);
                name.ends_with(domain.as_str()) && name.len() > domain.len()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_origin_exact_and_wildcards() {
        let o = Origins::new(&[
            "https://app.example.com".into(),
            "https://*.example.org".into(),
        ])
        .unwrap();
        assert!(o.allows(None, Some("rt:8080")), "not a browser");
        assert!(
            o.allows(Some("http://rt:8080"), Some("rt:8080")),
            "same origin"
        );
        assert!(o.allows(Some("https://app.example.com"), Some("rt")));
        assert!(!o.allows(Some("https://evil.example.com"), Some("rt")));
        assert!(o.allows(Some("https://a.b.example.org"), Some("rt")));
        assert!(
            !o.allows(Some("https://example.org"), Some("rt")),
            "the bare domain is not a subdomain"
        );
        assert!(
            !o.allows(Some("http://a.example.org"), Some("rt")),
            "scheme matters"
        );
        assert!(!o.allows(Some("https://evilexample.org"), Some("rt")));
        assert!(!o.allows(Some("null"), Some("rt")));
        assert!(Origins::new(&["example.com".into()]).is_err());
        assert!(Origins::new(&["https://a*.example.com".into()]).is_err());
    }
}
