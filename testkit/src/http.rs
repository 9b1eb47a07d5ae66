//! A tiny HTTP/1.1 client for tests: one request per connection, the status and
//! the body (chunked bodies decoded). No client crate needed for a few requests.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PATIENCE: Duration = Duration::from_secs(10);

/// A response: status and body text. Status 0: the connection was refused (or
/// broke before the request was sent), so a test can wait for a server to go down
/// or come up without handling errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code; 0 when no connection could be made.
    pub status: u16,
    /// The body as text (chunked encoding decoded; invalid UTF-8 replaced).
    pub body: String,
}

impl Response {
    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// Sends `method url` with `headers` and an optional JSON `body`
/// (`Content-Type: application/json` is always sent), on a new connection that is
/// closed afterwards. `url` must be `http://host:port/path`. Panics if the response
/// does not arrive within 10 s or is not HTTP.
pub async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    let rest = url.strip_prefix("http://").expect("an http:// url");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let Ok(mut stream) = TcpStream::connect(host).await else {
        return Response {
            status: 0,
            body: String::new(),
        };
    };
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    if stream.write_all(req.as_bytes()).await.is_err() {
        return Response {
            status: 0,
            body: String::new(),
        };
    }
    let mut buf = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{method} {url}: no response within {PATIENCE:?}"))
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {url}: bad HTTP response: {text}"));
    let body = match text.find("\r\n\r\n") {
        Some(i) => dechunk(&text[..i], &text[i + 4..]),
        None => String::new(),
    };
    Response { status, body }
}

/// `GET url` (see [`request`]).
pub async fn get(url: &str) -> Response {
    request("GET", url, &[], None).await
}

/// `POST url` with a JSON `body` (see [`request`]).
pub async fn post(url: &str, body: &str) -> Response {
    request("POST", url, &[], Some(body)).await
}

fn dechunk(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some(i) = rest.find("\r\n") {
        let size = usize::from_str_radix(rest[..i].trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < i + 2 + size {
            break;
        }
        out.push_str(&rest[i + 2..i + 2 + size]);
        rest = rest.get(i + 2 + size + 2..).unwrap_or("");
    }
    out
}
