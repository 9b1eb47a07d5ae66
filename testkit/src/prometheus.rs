//! Reading Prometheus text exposition (`/metrics`): exact names and label sets.

use std::collections::BTreeMap;

/// One scrape: `name{labels}` → value. Lookups are by exact metric name and
/// exact label values, so a renamed metric or label fails the test instead of
/// reading 0 from a near miss (use [`Scrape::get`] or [`Scrape::has`] to tell
/// absent from zero).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    /// Parses Prometheus text exposition. Comments (`# HELP`, `# TYPE`) and lines
    /// without a numeric value are skipped; timestamps are not supported.
    pub fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            samples.push((name.to_string(), labels, value));
        }
        Scrape { samples }
    }

    /// The value of the series `name` whose labels include all of `labels`;
    /// `None` if there is none.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).is_some_and(|x| x == v))
            })
            .map(|(_, _, v)| *v)
    }

    /// Like [`Scrape::get`], 0 when absent (a counter never incremented).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Every metric name in the scrape (with `_bucket`/`_sum`/`_count` kept as is).
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.samples.iter().map(|(n, _, _)| n.as_str()).collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Whether any series named exactly `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _, _)| n == name)
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_string();
        let after = &rest[eq + 1..];
        let Some(body) = after.strip_prefix('"') else {
            break;
        };
        let mut value = String::new();
        let mut chars = body.char_indices();
        let mut end = body.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.insert(key, value);
        rest = &body[end.min(body.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_names_and_labels() {
        let s = Scrape::parse(
            "# TYPE x counter\nshardcast_connections 3\nshardcast_connections_total 10\n\
             shardcast_errors_total{code=\"bad_request\"} 2\nshardcast_errors_total{code=\"limit\"} 1\n",
        );
        assert_eq!(s.get("shardcast_connections", &[]), Some(3.0));
        assert_eq!(s.get("shardcast_connections_total", &[]), Some(10.0));
        assert_eq!(s.value("shardcast_errors_total", &[("code", "limit")]), 1.0);
        assert_eq!(
            s.get("shardcast_errors_total", &[("code", "internal")]),
            None
        );
        assert!(s.has("shardcast_connections") && !s.has("shardcast_conn"));
    }
}
