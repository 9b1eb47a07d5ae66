//! How this instance connects to Redis: the credentials, the database, and TLS
//! (`rediss://`), the same for every connection it makes (the data connection,
//! the subscriber connections, discovery and Sentinel probes), so that no path
//! can forget the password or skip certificate checks.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::{RedisResult, TlsCertificates};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::resp::{Frame, decode, encode};
use crate::broker::BrokerError;

/// Connect and response timeout of every connection but the subscriber's (which
/// has its own liveness check).
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// Credentials and database.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Login {
    pub username: Option<String>,
    pub password: Option<String>,
    /// The database of keys (one server and Sentinel only; a cluster has only 0).
    /// Pub/sub channels are not per database: two deployments sharing one Redis
    /// need different servers (or ACL users with channel permissions), not only
    /// different databases.
    pub db: i64,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("db", &self.db)
            .finish()
    }
}

/// Percent-encodes what a URL's userinfo cannot hold as is.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A stream the subscriber connection reads and writes: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// TLS settings: the roots that sign Redis's certificate.
#[derive(Clone)]
struct Tls {
    /// The operator's CA bundle (PEM), when given; the system's roots otherwise.
    ca_pem: Option<Vec<u8>>,
    config: Arc<rustls::ClientConfig>,
}

#[derive(Clone)]
pub struct Connector {
    login: Login,
    tls: Option<Tls>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("login", &self.login)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Connector {
    /// `ca_file`: a PEM bundle of the CAs Redis's certificate may chain to.
    pub fn new(login: Login, tls: bool, ca_file: Option<&str>) -> Result<Connector, BrokerError> {
        if !tls {
            if ca_file.is_some() {
                return Err(BrokerError::Config(
                    "--redis-ca-cert is for TLS; use rediss:// URLs".into(),
                ));
            }
            return Ok(Connector { login, tls: None });
        }
        // One crypto provider for the process (another crate may have installed it).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        let ca_pem = match ca_file {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| BrokerError::Config(format!("--redis-ca-cert {path}: {e}")))?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert
                        .map_err(|e| BrokerError::Config(format!("--redis-ca-cert {path}: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| BrokerError::Config(format!("--redis-ca-cert {path}: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(BrokerError::Config(format!(
                        "--redis-ca-cert {path}: no certificate in the file"
                    )));
                }
                Some(pem)
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(BrokerError::Config(
                        "rediss:// needs CA certificates: none in the system store; give --redis-ca-cert".into(),
                    ));
                }
                None
            }
        };
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Connector {
            login,
            tls: Some(Tls {
                ca_pem,
                config: Arc::new(config),
            }),
        })
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The same TLS settings with other credentials (a sentinel's own).
    pub fn with_login(&self, login: Login) -> Connector {
        Connector {
            login,
            tls: self.tls.clone(),
        }
    }

    /// The redis-rs URL of `addr` with these credentials.
    pub fn url(&self, addr: &str) -> String {
        let auth = match (&self.login.username, &self.login.password) {
            (Some(u), Some(p)) => format!("{}:{}@", enc(u), enc(p)),
            (None, Some(p)) => format!(":{}@", enc(p)),
            _ => String::new(),
        };
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://{auth}{addr}/{}", self.login.db)
    }

    fn certificates(&self) -> Option<TlsCertificates> {
        let tls = self.tls.as_ref()?;
        Some(TlsCertificates {
            client_tls: None,
            root_cert: tls.ca_pem.clone(),
        })
    }

    fn client(&self, addr: &str) -> RedisResult<redis::Client> {
        match self.certificates() {
            Some(certs) if certs.root_cert.is_some() => {
                redis::Client::build_with_tls(self.url(addr), certs)
            }
            _ => redis::Client::open(self.url(addr)),
        }
    }

    /// A multiplexed connection to `addr` (data commands, discovery probes).
    pub async fn connection(&self, addr: &str) -> RedisResult<MultiplexedConnection> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        self.client(addr)?
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }

    /// A pub/sub connection to `addr` (a sentinel's event channels).
    pub async fn pubsub(&self, addr: &str) -> Result<redis::aio::PubSub, String> {
        let client = self.client(addr).map_err(|e| e.to_string())?;
        timeout(REDIS_TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())
    }

    /// The cluster connection (slot-routed, following MOVED/ASK).
    pub async fn cluster_connection(&self, seeds: &[String]) -> RedisResult<ClusterConnection> {
        let urls: Vec<String> = seeds.iter().map(|s| self.url(s)).collect();
        let mut builder = redis::cluster::ClusterClientBuilder::new(urls)
            .connection_timeout(REDIS_TIMEOUT)
            .response_timeout(REDIS_TIMEOUT)
            .retries(3);
        if let Some(u) = &self.login.username {
            builder = builder.username(u);
        }
        if let Some(p) = &self.login.password {
            builder = builder.password(p);
        }
        if let Some(certs) = self.certificates()
            && certs.root_cert.is_some()
        {
            builder = builder.certs(certs);
        }
        builder.build()?.get_async_connection().await
    }

    /// A raw stream to `addr`, TLS when configured.
    async fn stream(&self, addr: &str, within: Duration) -> Result<Box<dyn Io>, String> {
        let tcp = timeout(within, TcpStream::connect(addr))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("TLS server name `{host}`: {e}"))?;
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        let stream = timeout(within, connector.connect(name, tcp))
            .await
            .map_err(|_| "TLS handshake timed out".to_string())?
            .map_err(|e| format!("TLS handshake: {e}"))?;
        Ok(Box::new(stream))
    }

    /// A RESP3 connection of our own ([`super::resp`]) to `addr`: the stream after
    /// `HELLO 3` (with `AUTH` when configured, and `SETNAME name`) was accepted, and
    /// whatever Redis sent after its answer. For the connections whose replies
    /// redis-rs would misroute or slow down: the subscriber's and the publisher's.
    pub async fn resp3(
        &self,
        addr: &str,
        name: &str,
        within: Duration,
    ) -> Result<(Box<dyn Io>, BytesMut), String> {
        let mut stream = self.stream(addr, within).await?;
        let mut out = Vec::new();
        let mut hello: Vec<&[u8]> = vec![b"HELLO", b"3"];
        let auth = self.hello_auth();
        if let Some((user, password)) = &auth {
            hello.extend([b"AUTH".as_slice(), user.as_bytes(), password.as_bytes()]);
        }
        hello.extend([b"SETNAME".as_slice(), name.as_bytes()]);
        encode(&mut out, &hello);
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
        let mut buf = BytesMut::with_capacity(4096);
        let hello = timeout(within, async {
            loop {
                if let Some(frame) = decode(&mut buf).map_err(|e| e.to_string())? {
                    return Ok::<Frame, String>(frame);
                }
                if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                    return Err("closed during HELLO".to_string());
                }
            }
        })
        .await
        .map_err(|_| "HELLO timed out".to_string())??;
        if let Frame::Error(e) = hello {
            // (The error names the problem, e.g. WRONGPASS; it never echoes the password.)
            return Err(format!("HELLO refused: {e}"));
        }
        Ok((stream, buf))
    }

    /// The `AUTH` part of `HELLO 3`.
    fn hello_auth(&self) -> Option<(String, String)> {
        let password = self.login.password.clone()?;
        let user = self
            .login
            .username
            .clone()
            .unwrap_or_else(|| "default".into());
        Some((user, password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_carry_the_login_encoded_and_the_database() {
        let c = Connector::new(
            Login {
                username: Some("u".into()),
                password: Some("a b@c".into()),
                db: 3,
            },
            false,
            None,
        )
        .unwrap();
        assert_eq!(c.url("h:1"), "redis://u:a%20b%40c@h:1/3");
        assert_eq!(c.hello_auth(), Some(("u".to_string(), "a b@c".to_string())));
        let anon = Connector::new(Login::default(), false, None).unwrap();
        assert_eq!(anon.url("h:1"), "redis://h:1/0");
        assert_eq!(anon.hello_auth(), None);
        let only_password = c.with_login(Login {
            password: Some("p".into()),
            ..Login::default()
        });
        assert_eq!(only_password.url("h:1"), "redis://:p@h:1/0");
        assert_eq!(
            only_password.hello_auth(),
            Some(("default".to_string(), "p".to_string()))
        );
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let c = Connector::new(
            Login {
                username: None,
                password: Some("topsecret".into()),
                db: 0,
            },
            false,
            None,
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("topsecret"));
    }

    #[test]
    fn a_ca_file_without_tls_or_without_certificates_is_refused() {
        assert!(Connector::new(Login::default(), false, Some("/nonexistent")).is_err());
        let dir = std::env::temp_dir().join(format!("sc-ca-{}", std::process::id()));
        std::fs::write(&dir, "not a certificate").unwrap();
        let e = Connector::new(Login::default(), true, dir.to_str()).unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        let _ = std::fs::remove_file(dir);
    }
}
