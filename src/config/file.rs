//! The configuration file, and how it meets the flags.
//!
//! The file's keys are the flags' names with `_` for `-` (`redis_nodes`,
//! `token_hmac_secret`), at the top level or in any table used for grouping
//! (`[auth]`, `[limits]`, …), except two tables that describe namespaces:
//! `[namespaces.<name>]` and `[default_namespace]` (options in
//! [`crate::namespace::NamespaceOptions`]). A key from the file becomes the
//! default of its flag, so a flag or its environment variable still wins.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{CommandFactory, FromArgMatches};
use thiserror::Error;

use super::Config;
use crate::namespace::{NamespaceOptions, Namespaces};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error(transparent)]
    Flags(#[from] clap::Error),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Toml {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl ConfigError {
    /// Prints the error the way clap does for flags (help and version included) and
    /// exits; for `main`.
    pub fn exit(self) -> ! {
        match self {
            ConfigError::Flags(e) => e.exit(),
            other => {
                eprintln!("shardcast: {other}");
                std::process::exit(2)
            }
        }
    }
}

/// The file's pieces: defaults for flags (by flag id) and the namespaces.
#[derive(Default)]
struct FileSettings {
    defaults: Vec<(String, Vec<String>)>,
    namespaces: HashMap<String, NamespaceOptions>,
    default_namespace: NamespaceOptions,
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn read(path: &Path) -> Result<FileSettings, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| ConfigError::Toml {
        path: path.to_path_buf(),
        source,
    })?;
    let flag_ids: Vec<String> = Config::command()
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    let mut out = FileSettings::default();
    let flat =
        |key: &str, value: &toml::Value, out: &mut FileSettings| -> Result<(), ConfigError> {
            if key == "config" || !flag_ids.iter().any(|id| id == key) {
                return Err(invalid(format!("unknown setting `{key}`")));
            }
            let values = match value {
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| {
                        scalar(v).ok_or_else(|| invalid(format!("`{key}`: a list of plain values")))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                other => vec![
                    scalar(other).ok_or_else(|| invalid(format!("`{key}`: not a plain value")))?,
                ],
            };
            out.defaults.push((key.to_string(), values));
            Ok(())
        };
    for (key, value) in &table {
        match (key.as_str(), value) {
            ("namespaces", toml::Value::Table(ns)) => {
                for (name, options) in ns {
                    let o: NamespaceOptions =
                        options.clone().try_into().map_err(|e: toml::de::Error| {
                            invalid(format!("namespace `{name}`: {e}"))
                        })?;
                    out.namespaces.insert(name.clone(), o);
                }
            }
            ("default_namespace", v) => {
                out.default_namespace = v
                    .clone()
                    .try_into()
                    .map_err(|e: toml::de::Error| invalid(format!("default_namespace: {e}")))?;
            }
            (_, toml::Value::Table(group)) => {
                for (k, v) in group {
                    flat(k, v, &mut out)?;
                }
            }
            (k, v) => flat(k, v, &mut out)?,
        }
    }
    Ok(out)
}

pub fn load<I, T>(args: I) -> Result<Config, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    // Which file? A first look at the flags and the environment, errors left for
    // the real parse.
    let pre = Config::command()
        .ignore_errors(true)
        .try_get_matches_from(&args)
        .ok();
    let path = pre.and_then(|m| m.get_one::<PathBuf>("config").cloned());
    let settings = match &path {
        Some(p) => read(p)?,
        None => FileSettings::default(),
    };
    let mut cmd = Config::command();
    for (id, values) in &settings.defaults {
        let values: Vec<clap::builder::OsStr> = values.iter().map(|v| v.clone().into()).collect();
        cmd = cmd.mut_arg(id, |a| a.default_values(values));
    }
    let matches = cmd.try_get_matches_from(&args)?;
    let mut config = Config::from_arg_matches(&matches)?;
    config
        .instance_id
        .get_or_insert_with(|| format!("{:08x}", rand::random::<u32>()));
    let mut default_ns = settings.default_namespace;
    if let Some(p) = config.client_publish {
        default_ns.publish = p;
    }
    if let Some(s) = config.client_subscribe {
        default_ns.subscribe = s;
    }
    config.namespaces =
        Namespaces::new(settings.namespaces, default_ns, &config.history).map_err(|message| {
            ConfigError::Invalid {
                path: path.clone().unwrap_or_else(|| PathBuf::from("(flags)")),
                message,
            }
        })?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Channel;
    use crate::namespace::PublishPolicy;

    fn write(text: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("shardcast-config-{}.toml", rand::random::<u64>()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_file_sets_defaults_that_flags_override() {
        let path = write(
            r#"
ping_interval = "3s"
history = ["log:5:1m"]
[auth]
insecure = true
api_key = ["a", "b"]
[namespaces.chat]
presence = true
join_leave = true
publish = "subscribers"
history = { max_len = 100, ttl = "10m" }
[default_namespace]
publish = "authenticated"
"#,
        );
        let p = path.to_str().unwrap();
        let c = Config::from_args(["shardcast", "--config", p]).unwrap();
        assert_eq!(c.ping_interval, std::time::Duration::from_secs(3));
        assert!(c.auth.insecure);
        assert_eq!(c.auth.api_key.len(), 2);
        let chat = c.namespaces.options(&Channel::parse("chat:1").unwrap());
        assert!(chat.presence && chat.join_leave);
        assert_eq!(chat.history.as_ref().map(|r| r.max_len), Some(100));
        let log = c.namespaces.options(&Channel::parse("log").unwrap());
        assert_eq!(log.history.as_ref().map(|r| r.max_len), Some(5));
        assert_eq!(log.publish, PublishPolicy::Authenticated);
        let c = Config::from_args(["shardcast", "--config", p, "--ping-interval", "9s"]).unwrap();
        assert_eq!(
            c.ping_interval,
            std::time::Duration::from_secs(9),
            "the flag wins"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn unknown_settings_and_bad_namespaces_are_errors() {
        let path = write("pingg_interval = \"3s\"\n");
        let e = Config::from_args(["shardcast", "--config", path.to_str().unwrap()]).unwrap_err();
        assert!(
            e.to_string().contains("unknown setting `pingg_interval`"),
            "{e}"
        );
        let path = write("[namespaces.chat]\npresense = true\n");
        let e = Config::from_args(["shardcast", "--config", path.to_str().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("presense"), "{e}");
        let e = Config::from_args(["shardcast", "--config", "/nonexistent/x.toml"]).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    }
}
