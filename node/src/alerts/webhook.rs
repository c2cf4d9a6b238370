//! The alert webhook: each alert POSTed as JSON to `[alerts] webhook`, by one background
//! task fed through a bounded queue. A request path only ever puts an alert on the
//! queue (or, when it is full, drops it from the webhook with a log line: the alert is
//! still in the audit log); the task gives each POST a timeout and a few retries.
//!
//! HTTP/1.1 over hyper (already in the node through tonic). `https://` URLs are checked
//! against the CA in `[alerts] webhook_ca`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::rule::Alert;

/// Alerts waiting for the webhook; beyond this, new ones skip the webhook.
const QUEUE: usize = 256;
/// How long one POST may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Tries per alert, and the pause before each retry (doubling).
const ATTEMPTS: u32 = 3;
const FIRST_PAUSE: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    #[error("[alerts] webhook: {url:?} is not usable: {reason}")]
    Url { url: String, reason: String },
    #[error("[alerts] webhook_ca: {0}")]
    Ca(String),
}

/// The queue to the webhook task.
pub struct Sender {
    queue: mpsc::Sender<Alert>,
}

impl Sender {
    /// Checks the URL (and the CA for https) and starts the sending task.
    pub fn start(url: &str, ca: Option<&Path>) -> Result<Self, WebhookError> {
        let target = Target::parse(url, ca)?;
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(target, rx));
        Ok(Self { queue })
    }

    /// Queues an alert for the webhook; never waits.
    pub fn send(&self, alert: Alert) {
        if let Err(e) = self.queue.try_send(alert) {
            let alert = match e {
                mpsc::error::TrySendError::Full(a) | mpsc::error::TrySendError::Closed(a) => a,
            };
            tracing::warn!(
                rule = alert.rule.name(),
                "the alert webhook is behind (queue full); this alert is only in the audit log"
            );
        }
    }
}

/// Where alerts go.
struct Target {
    url: String,
    /// The host to connect to: a name or an IP address (an IPv6 one without brackets).
    host: String,
    port: u16,
    /// The request's `Host` header: the host as the URL writes it (an IPv6 address in
    /// brackets), with the port unless it is the scheme's default.
    authority: String,
    /// Path and query of the request line.
    path: String,
    /// For https.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Target {
    fn parse(url: &str, ca: Option<&Path>) -> Result<Self, WebhookError> {
        let bad = |reason: &str| WebhookError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(bad("give an http:// or https:// URL")),
        };
        let host = uri
            .host()
            .ok_or_else(|| bad("the URL names no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let default_port = if https { 443 } else { 80 };
        let port = uri.port_u16().unwrap_or(default_port);
        let authority = host_header(&host, port, default_port);
        let path = uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let tls = if https {
            let ca = ca.ok_or_else(|| {
                WebhookError::Ca(
                    "an https:// webhook needs the CA of its certificate (a PEM file)".into(),
                )
            })?;
            let roots = crate::tls::load_roots(ca).map_err(|e| WebhookError::Ca(e.to_string()))?;
            let config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| WebhookError::Ca(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
        } else {
            None
        };
        Ok(Self {
            url: url.to_owned(),
            host,
            port,
            authority,
            path,
            tls,
        })
    }
}

async fn run(target: Target, mut rx: mpsc::Receiver<Alert>) {
    while let Some(alert) = rx.recv().await {
        // Plain data always serializes.
        let body = serde_json::to_vec(&alert).expect("alerts serialize");
        let mut pause = FIRST_PAUSE;
        for attempt in 1..=ATTEMPTS {
            let result = match tokio::time::timeout(TIMEOUT, post(&target, body.clone())).await {
                Ok(r) => r,
                Err(_) => Err(format!(
                    "no answer within {}",
                    humantime::format_duration(TIMEOUT)
                )),
            };
            match result {
                Ok(()) => break,
                Err(reason) if attempt == ATTEMPTS => tracing::warn!(
                    webhook = %target.url,
                    rule = alert.rule.name(),
                    %reason,
                    "the alert webhook did not take the alert; it is only in the audit log"
                ),
                Err(reason) => {
                    tracing::debug!(webhook = %target.url, %reason, attempt, "alert webhook failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
            }
        }
    }
}

/// One POST; any answer but 2xx is a failure.
async fn post(target: &Target, body: Vec<u8>) -> Result<(), String> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    match &target.tls {
        None => exchange(tcp, target, body).await,
        Some(connector) => {
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| format!("bad host name: {e}"))?;
            let tls = connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            exchange(tls, target, body).await
        }
    }
}

async fn exchange<IO>(io: IO, target: &Target, body: Vec<u8>) -> Result<(), String>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    // Drives the connection; it ends when the exchange is over.
    tokio::spawn(connection);
    let request = http::Request::post(target.path.as_str())
        .header(http::header::HOST, target.authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("liutong/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("HTTP: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = response.status();
    // Read the answer to its end so the connection closes cleanly.
    let _ = response.into_body().collect().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the webhook answered {status}"))
    }
}

/// The `Host` header for `host` (an IPv6 address is written in brackets, RFC 9110
/// §7.2 and RFC 3986 §3.2.2) and `port` (left out when it is the scheme's default).
fn host_header(host: &str, port: u16, default_port: u16) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    if port == default_port {
        host
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_when_the_node_starts() {
        let t = Target::parse("http://127.0.0.1:9000/hooks/liutong?x=1", None).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 9000));
        assert_eq!(t.authority, "127.0.0.1:9000");
        assert_eq!(t.path, "/hooks/liutong?x=1");
        let t = Target::parse("http://alerts.example", None).unwrap();
        assert_eq!((t.port, t.authority.as_str()), (80, "alerts.example"));
        // IPv6: connect to the bare address, name it in brackets.
        let t = Target::parse("http://[::1]:8080/a", None).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        assert_eq!(t.authority, "[::1]:8080");
        let t = Target::parse("http://[fd00::5]/a", None).unwrap();
        assert_eq!(t.authority, "[fd00::5]");
        // Port 443 is not the default of http://, so it is named.
        let t = Target::parse("http://alerts.example:443/", None).unwrap();
        assert_eq!(t.authority, "alerts.example:443");

        let err = |url: &str| Target::parse(url, None).err().unwrap().to_string();
        assert!(
            err("ftp://x/").contains("http:// or https://"),
            "{}",
            err("ftp://x/")
        );
        assert!(
            err("not a url").contains("not usable"),
            "{}",
            err("not a url")
        );
        assert!(err("https://alerts.example/").contains("CA"));
    }

    fn alert() -> Alert {
        Alert {
            rule: super::super::Rule::TrustListExpiry,
            severity: super::super::Severity::Warning,
            node: "91110000600037341L".into(),
            peer: None,
            detail: "soon".into(),
            time: "2026-01-01T00:00:00Z".into(),
            time_unix: 1_767_225_600,
            audit_index: Some(7),
        }
    }

    /// Reads one request up to the end of [`alert`]'s JSON.
    async fn read_request(socket: &mut (impl AsyncRead + Unpin)) -> String {
        use tokio::io::AsyncReadExt as _;
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&request).contains("\"audit_index\":7}") {
            let n = socket.read(&mut buf).await.unwrap();
            assert!(n > 0, "the request ended early");
            request.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(request).unwrap()
    }

    #[tokio::test]
    async fn https_webhooks_are_checked_against_the_configured_ca() {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        use tokio::io::AsyncWriteExt as _;
        crate::tls::install_default_provider();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name
            .push(DnType::CommonName, "Webhook test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        leaf.distinguished_name.push(DnType::CommonName, "webhook");
        let leaf = leaf.signed_by(&leaf_key, &issuer).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/tls", listener.local_addr().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca_pem).unwrap();

        let sender = Sender::start(&url, Some(&ca_path)).unwrap();
        sender.send(alert());
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor
            .accept(tcp)
            .await
            .expect("the client trusts the CA");
        let request = read_request(&mut tls).await;
        assert!(request.starts_with("POST /tls HTTP/1.1\r\n"), "{request}");
        tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();

        // A CA file that is not PEM is refused when the node starts.
        std::fs::write(&ca_path, "not a certificate").unwrap();
        let err = Sender::start(&url, Some(&ca_path))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("webhook_ca"), "{err}");
    }

    #[tokio::test]
    async fn an_ipv6_webhook_gets_a_bracketed_host_header() {
        use tokio::io::AsyncWriteExt as _;
        let listener = match tokio::net::TcpListener::bind("[::1]:0").await {
            Ok(l) => l,
            Err(e) => {
                // Only a machine without IPv6 loopback gets here.
                eprintln!("skipped: cannot bind [::1]: {e}");
                return;
            }
        };
        let port = listener.local_addr().unwrap().port();
        let sender = Sender::start(&format!("http://[::1]:{port}/v6"), None).unwrap();
        sender.send(alert());
        let (mut socket, _) = listener.accept().await.unwrap();
        let request = read_request(&mut socket).await;
        socket
            .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        assert!(request.starts_with("POST /v6 HTTP/1.1\r\n"), "{request}");
        let host = request
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(name, _)| name.eq_ignore_ascii_case("host"))
                    .map(|(_, value)| value.trim().to_owned())
            })
            .expect("a Host header");
        assert_eq!(host, format!("[::1]:{port}"), "{request}");
    }

    #[tokio::test]
    async fn a_failed_post_is_retried() {
        use tokio::io::AsyncWriteExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/a", listener.local_addr().unwrap());
        let sender = Sender::start(&url, None).unwrap();
        sender.send(alert());
        // The first answer is an error, the second a success.
        let mut bodies = Vec::new();
        for answer in ["503 Service Unavailable", "204 No Content"] {
            let (mut socket, _) = listener.accept().await.unwrap();
            bodies.push(read_request(&mut socket).await);
            let reply = format!("HTTP/1.1 {answer}\r\ncontent-length: 0\r\n\r\n");
            socket.write_all(reply.as_bytes()).await.unwrap();
        }
        assert_eq!(bodies[0], bodies[1], "the same alert, again");
        assert!(
            bodies[0].starts_with("POST /a HTTP/1.1\r\n"),
            "{}",
            bodies[0]
        );
        assert!(
            bodies[0].contains("\"rule\":\"trust_list_expiry\""),
            "{}",
            bodies[0]
        );
    }
}
