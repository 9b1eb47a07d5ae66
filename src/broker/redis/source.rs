//! Where the Redis nodes come from, and how to log into them. The Redis broker is
//! the same for all three deployments (the subscriber connections, the wire
//! format, the scripts, the reconciler); only this part differs:
//!
//! * **Cluster**: seeds, and the slot map from `CLUSTER SHARDS`.
//! * **One server** (`--broker redis`): a slot map of one shard that owns every
//!   slot; its replicas, from `INFO replication`, for `--subscribe-from`.
//! * **Sentinel** (`--broker redis-sentinel`): the primary and replicas from the
//!   sentinels (`SENTINEL get-master-addr-by-name`, `SENTINEL replicas`); a
//!   `+switch-master` from any sentinel triggers a refresh at once.

use super::connector::{Connector, Login};
use super::topology::{NodeHealth, RedisAddr, Shard, SlotMap};
use crate::broker::BrokerError;
use crate::config::{BrokerKind, Config};
use crate::slot::SLOTS;

fn dec(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Clone)]
pub enum Source {
    Cluster {
        seeds: Vec<RedisAddr>,
    },
    Standalone {
        addr: RedisAddr,
    },
    Sentinel {
        /// Each sentinel with its own credentials (`redis://:password@host:26379`).
        sentinels: Vec<(RedisAddr, Login)>,
        master: String,
    },
}

/// What a Redis URL says.
#[derive(Debug)]
pub struct Target {
    pub addr: RedisAddr,
    pub login: Login,
    /// `rediss://`.
    pub tls: bool,
}

/// `redis[s]://[user:password@]host:port[/db]` (or `host:port`).
pub fn parse_url(url: &str) -> Result<Target, BrokerError> {
    let url = url.trim();
    let tls = url.starts_with("rediss://");
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
        .or_else(|| (!url.contains("://")).then_some(url))
        .ok_or_else(|| {
            BrokerError::Config(format!(
                "unsupported Redis URL `{}` (use redis://host:port)",
                redact(url)
            ))
        })?;
    let (userinfo, hostpart) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (hostport, db) = match hostpart.split_once('/') {
        Some((h, d)) if !d.is_empty() => (
            h,
            d.parse::<i64>().map_err(|_| {
                BrokerError::Config(format!("`{}`: the database must be a number", redact(url)))
            })?,
        ),
        Some((h, _)) => (h, 0),
        None => (hostpart, 0),
    };
    if hostport.is_empty() || !hostport.contains(':') {
        return Err(BrokerError::Config(format!(
            "`{}` needs host:port",
            redact(url)
        )));
    }
    let mut login = Login {
        db,
        ..Login::default()
    };
    if let Some(u) = userinfo {
        match u.split_once(':') {
            Some((user, pass)) => {
                login.username = (!user.is_empty()).then(|| dec(user));
                login.password = Some(dec(pass));
            }
            None => login.password = Some(dec(u)),
        }
    }
    Ok(Target {
        addr: hostport.to_string(),
        login,
        tls,
    })
}

/// A URL with its password hidden, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// The source of `config`'s `--broker`, and the connector every connection uses.
pub fn from_config(config: &Config) -> Result<(Source, Connector), BrokerError> {
    let mut login = Login {
        username: config.redis_username.clone(),
        password: config
            .redis_password
            .as_ref()
            .map(|s| s.expose().to_string()),
        db: 0,
    };
    // Credentials in a URL win over the flags; the database is the URL's.
    let merge = |login: &mut Login, from_url: &Login| {
        if from_url.password.is_some() {
            login.username = from_url.username.clone();
            login.password = from_url.password.clone();
        }
        login.db = from_url.db;
    };
    let mut tls = None::<bool>;
    let mut same_tls = |t: &Target| match tls {
        Some(x) if x != t.tls => Err(BrokerError::Config(
            "mixed redis:// and rediss:// URLs: use one scheme for every Redis node".into(),
        )),
        _ => {
            tls = Some(t.tls);
            Ok(())
        }
    };
    let source = match config.broker {
        BrokerKind::RedisCluster => {
            if config.redis_nodes.is_empty() {
                return Err(BrokerError::Config(
                    "--broker redis-cluster needs --redis-nodes redis://host:port,...".into(),
                ));
            }
            let mut seeds = Vec::new();
            for u in &config.redis_nodes {
                let t = parse_url(u)?;
                same_tls(&t)?;
                if t.login.db != 0 {
                    return Err(BrokerError::Config(format!(
                        "`{}`: a Redis Cluster has only database 0",
                        redact(u)
                    )));
                }
                if t.login.password.is_some() {
                    merge(&mut login, &t.login);
                }
                seeds.push(t.addr);
            }
            Source::Cluster { seeds }
        }
        BrokerKind::Redis => {
            let url = config.redis_url.as_deref().ok_or_else(|| {
                BrokerError::Config("--broker redis needs --redis-url redis://host:port".into())
            })?;
            let t = parse_url(url)?;
            same_tls(&t)?;
            merge(&mut login, &t.login);
            Source::Standalone { addr: t.addr }
        }
        BrokerKind::RedisSentinel => {
            if config.sentinels.is_empty() {
                return Err(BrokerError::Config(
                    "--broker redis-sentinel needs --sentinels host:26379,...".into(),
                ));
            }
            let mut sentinels = Vec::new();
            for s in &config.sentinels {
                let t = parse_url(s)?;
                same_tls(&t)?;
                sentinels.push((t.addr, t.login));
            }
            if let Some(url) = &config.redis_url {
                let t = parse_url(url)?;
                merge(&mut login, &t.login);
            }
            Source::Sentinel {
                sentinels,
                master: config.sentinel_master.clone(),
            }
        }
        BrokerKind::Memory => return Err(BrokerError::Config("not a Redis broker".into())),
    };
    let connector = Connector::new(login, tls.unwrap_or(false), config.redis_ca_cert.as_deref())?;
    Ok((source, connector))
}

impl Source {
    /// The broker's name, as `--broker` spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Cluster { .. } => "redis-cluster",
            Source::Standalone { .. } => "redis",
            Source::Sentinel { .. } => "redis-sentinel",
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, Source::Cluster { .. })
    }
}

/// A slot map of one shard owning every slot.
fn one_shard(primary: RedisAddr, replicas: Vec<RedisAddr>, health: Vec<NodeHealth>) -> SlotMap {
    SlotMap::with_health(
        vec![Shard {
            slots: vec![(0, SLOTS - 1)],
            primary,
            replicas,
        }],
        health,
    )
}

/// The replicas a primary reports (`INFO replication`: `slaveN:ip=..,port=..,state=online`).
fn replicas_in_info(info: &str) -> Vec<(RedisAddr, String)> {
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains("ip="))
        .filter_map(|l| {
            let fields = l.split_once(':')?.1;
            let get = |k: &str| {
                fields
                    .split(',')
                    .find_map(|f| f.strip_prefix(&format!("{k}=")))
                    .map(str::to_string)
            };
            Some((
                format!("{}:{}", get("ip")?, get("port")?),
                get("state").unwrap_or_default(),
            ))
        })
        .collect()
}

/// One server as a slot map: itself, and its replicas that are online. A replica
/// is refused: writes to it would fail, and its pub/sub is only what it is sent.
pub async fn fetch_primary(connector: &Connector, addr: &str) -> Result<SlotMap, String> {
    let mut conn = connector
        .connection(addr)
        .await
        .map_err(|e| e.to_string())?;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    if info.lines().any(|l| l.trim() == "role:slave") {
        return Err(format!("{addr} is a replica, not a primary"));
    }
    let mut health = vec![NodeHealth {
        addr: addr.to_string(),
        role: "primary".into(),
        health: "online".into(),
    }];
    let mut replicas = Vec::new();
    for (r, state) in replicas_in_info(&info) {
        health.push(NodeHealth {
            addr: r.clone(),
            role: "replica".into(),
            health: state.clone(),
        });
        if state == "online" {
            replicas.push(r);
        }
    }
    replicas.sort();
    Ok(one_shard(addr.to_string(), replicas, health))
}

/// The primary's address, as `sentinel` says.
pub async fn sentinel_primary(
    connector: &Connector,
    sentinel: &str,
    master: &str,
) -> Result<RedisAddr, String> {
    let mut conn = connector
        .connection(sentinel)
        .await
        .map_err(|e| e.to_string())?;
    let addr: Option<(String, String)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(master)
        .query_async(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    let (host, port) =
        addr.ok_or_else(|| format!("sentinel {sentinel} knows no master named `{master}`"))?;
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_the_address_the_login_and_tls() {
        let t = parse_url("redis://user:p%40ss@10.0.0.1:6380/2").unwrap();
        assert_eq!(
            (
                t.addr.as_str(),
                t.login.username.as_deref(),
                t.login.password.as_deref(),
                t.login.db,
                t.tls
            ),
            ("10.0.0.1:6380", Some("user"), Some("p@ss"), 2, false)
        );
        let t = parse_url("rediss://:secret@h:1").unwrap();
        assert_eq!(
            (
                t.addr.as_str(),
                t.login.username,
                t.login.password.as_deref(),
                t.tls
            ),
            ("h:1", None, Some("secret"), true)
        );
        assert_eq!(parse_url("h:1").unwrap().addr, "h:1");
        assert!(parse_url("redis://h").is_err());
        assert!(parse_url("http://h:1").is_err());
        let e = parse_url("redis://u:topsecret@h:1/x")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("topsecret"), "{e}");
    }

    #[test]
    fn replicas_are_read_from_info_replication() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=10.0.0.2,port=6380,state=online,offset=1,lag=0\r\nslave1:ip=10.0.0.3,port=6381,state=wait_bgsave,offset=0,lag=0\r\n";
        assert_eq!(
            replicas_in_info(info),
            vec![
                ("10.0.0.2:6380".into(), "online".into()),
                ("10.0.0.3:6381".into(), "wait_bgsave".into())
            ]
        );
    }
}
