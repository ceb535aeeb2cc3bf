//! OCSP stapling from the certificate's own responder (RFC 6960, the HTTP POST of its appendix
//! A.1, over http:// or https://): one task per certificate slot whose certificate names a
//! responder and has no `ocsp_file`, and one per ACME certificate, which follows each renewal to
//! the new certificate. A response is checked and stapled by `tlsgate_tls::staple` (which
//! response may be served, and until when); this shell only asks, waits and retries. A failed
//! fetch keeps the stapled response until `ocsp_margin` before its `nextUpdate`, then staples
//! nothing: never a stale response. An `ocsp_file` slot gets a task too, only to keep the same
//! metrics for the operator's response.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::sign::CertifiedKey;
use tlsgate_config::{CertificateConfig, ListenerConfig};
use tlsgate_telemetry::metrics::{metrics, CertLabels};
use tlsgate_tls::ocsp::{self, Status};
use tlsgate_tls::slot::CertSlot;
use tlsgate_tls::{staple, TlsError};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// A response larger than this is refused (real ones are a few KiB).
const MAX_RESPONSE: usize = 64 * 1024;
/// Connecting, sending and reading one response.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Retries after failures double from the first to the last.
const RETRY_MIN: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(600);

/// A running fetcher and the slot it staples.
#[derive(Debug)]
pub struct Fetcher {
    pub slot: Arc<CertSlot>,
    task: JoinHandle<()>,
    renewed: Arc<Notify>,
}

impl Fetcher {
    /// Says the slot's certificate was replaced (a renewal): the new one's response is fetched
    /// now instead of at the old one's refresh time.
    pub fn renewed(&self) {
        self.renewed.notify_one();
    }
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a fetcher for `slot` when its certificate asks for one (`ocsp`, no `ocsp_file`) and
/// names a responder; with `ocsp_file`, the task that shows that staple in the metrics.
pub fn start(slot: &Arc<CertSlot>, config: &CertificateConfig, listener: &str) -> Option<Fetcher> {
    let labels = CertLabels { listener: listener.to_string(), cert: config.cert.display().to_string() };
    if let Some(file) = &config.ocsp_file {
        return Some(spawn(slot, |_| watch_file(slot.clone(), file.display().to_string(), labels)));
    }
    if !config.ocsp {
        return None;
    }
    ocsp::responder_url(&slot.bare().cert)?;
    Some(spawn(slot, |renewed| run(slot.clone(), config.ocsp_margin, labels, renewed)))
}

/// A fetcher for an ACME slot (its certificate kept in `cert`): it staples whichever certificate
/// the slot serves once that one names a responder (the throwaway one does not), and moves on to
/// each renewed certificate when told by [`Fetcher::renewed`].
pub fn follow(slot: &Arc<CertSlot>, listener: &str, cert: &Path, margin: Duration) -> Fetcher {
    let labels = CertLabels { listener: listener.to_string(), cert: cert.display().to_string() };
    spawn(slot, |renewed| run(slot.clone(), margin, labels, renewed))
}

fn spawn<F>(slot: &Arc<CertSlot>, task: impl FnOnce(Arc<Notify>) -> F) -> Fetcher
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let renewed = Arc::new(Notify::new());
    let task = tokio::spawn(task(renewed.clone()));
    Fetcher { slot: slot.clone(), task, renewed }
}

/// Moves the staple of a slot a reload replaced onto the new slot of the same certificate, so a
/// reload (while the responder is down, say) does not drop a good staple.
pub fn carry_over(old: &[Fetcher], new: &CertSlot) {
    let leaf = new.bare().cert.first().cloned();
    let Some(old) = old.iter().find(|f| f.slot.bare().cert.first() == leaf.as_ref()) else { return };
    if let Some((response, until)) = old.slot.staple() {
        if new.staple().is_none() {
            new.set_staple(Some((response, until)));
        }
    }
}

/// Counts an `ocsp_file` that stopped a listener from loading (unreadable, or refused) as a
/// failure of its certificate's staple.
pub fn file_refused(listener: &ListenerConfig, name: &str, error: &TlsError) {
    let path = match error {
        TlsError::Read { what: "OCSP response", path, .. }
        | TlsError::Material { what: "OCSP response", path, .. } => path,
        _ => return,
    };
    for c in listener.certificate.iter().filter(|c| c.ocsp_file.as_ref() == Some(path)) {
        let labels = CertLabels { listener: name.to_string(), cert: c.cert.display().to_string() };
        metrics().ocsp_fetch_failures.get_or_create(&labels).inc();
    }
}

/// Shows the `ocsp_file` response loaded on `slot` in the metrics, until it reaches its margin.
async fn watch_file(slot: Arc<CertSlot>, file: String, labels: CertLabels) {
    let m = metrics();
    let stapled = m.ocsp_stapled.get_or_create_owned(&labels);
    let checked = slot.staple().and_then(|(der, until)| {
        Some((ocsp::check(&der, &slot.bare().cert, SystemTime::now()).ok()?, until))
    });
    let Some((checked, until)) = checked else {
        stapled.set(0);
        m.ocsp_staple_age.remove(&labels);
        return;
    };
    stapled.set(1);
    m.ocsp_staple_age.get_or_create(&labels).set_this_update(checked.this_update);
    tokio::time::sleep(until.duration_since(SystemTime::now()).unwrap_or_default()).await;
    stapled.set(0);
    m.ocsp_staple_age.remove(&labels);
    tracing::error!(
        listener = %labels.listener, cert = %labels.cert, %file,
        "OCSP: the ocsp_file response is within ocsp_margin of its nextUpdate and is no longer stapled; \
         provide a fresh one"
    );
}

/// Staples the slot's certificate, and each one that replaces it, from its responder.
async fn run(slot: Arc<CertSlot>, margin: Duration, labels: CertLabels, renewed: Arc<Notify>) {
    loop {
        let bare = slot.bare();
        match ocsp::responder_url(&bare.cert) {
            Some(url) => fetch_loop(&slot, &bare, &url, margin, &labels, &renewed).await,
            None => {
                show(&slot, &labels);
                tracing::info!(
                    listener = %labels.listener, cert = %labels.cert,
                    "OCSP: the certificate names no OCSP responder; not stapled"
                );
            }
        }
        // Until the slot serves another certificate.
        while Arc::ptr_eq(&slot.bare(), &bare) {
            renewed.notified().await;
        }
    }
}

/// Publishes whether `slot` has a staple.
fn show(slot: &CertSlot, labels: &CertLabels) {
    let m = metrics();
    let present = slot.staple_until().is_some();
    m.ocsp_stapled.get_or_create(labels).set(i64::from(present));
    if !present {
        m.ocsp_staple_age.remove(labels);
    }
}

/// Fetches, staples and refreshes `bare`'s response until the slot serves another certificate
/// (or no request can be made for it).
async fn fetch_loop(
    slot: &CertSlot,
    bare: &Arc<CertifiedKey>,
    url: &str,
    margin: Duration,
    labels: &CertLabels,
    renewed: &Notify,
) {
    let m = metrics();
    let failures_total = m.ocsp_fetch_failures.get_or_create_owned(labels);
    let (listener, cert) = (&labels.listener, &labels.cert);
    let replaced = || !Arc::ptr_eq(&slot.bare(), bare);
    let request = match ocsp::request(&bare.cert) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%listener, %cert, error = %e, "OCSP: cannot build a request; not stapling");
            return;
        }
    };
    show(slot, labels);
    let mut failures = 0u32;
    loop {
        let now = SystemTime::now();
        let outcome = match post(url, request.clone()).await {
            _ if replaced() => return,
            Ok(body) => {
                staple::apply(slot, bare, body, url, now, margin).map_err(|e| format!("responder {url}: {e}"))
            }
            Err(e) => Err(e),
        };
        let next = match outcome {
            Ok(checked) if checked.status != Status::Unknown && slot.staple_until().is_some() => {
                failures = 0;
                m.ocsp_staple_age.get_or_create(labels).set_this_update(checked.this_update);
                tracing::info!(
                    %listener, %cert, status = ?checked.status, next_update = %humantime::format_rfc3339_seconds(checked.next_update),
                    "OCSP: response fetched and stapled"
                );
                staple::refresh_at(&checked, margin, rand::random()).max(now + RETRY_MIN)
            }
            outcome => {
                // Unknown, already past the margin, or no answer at all: try again soon.
                if let Err(e) = &outcome {
                    failures_total.inc();
                    let kept = slot.staple_until().map(humantime::format_rfc3339_seconds);
                    tracing::warn!(
                        %listener, %cert, error = %e,
                        kept_until = %kept.map(|t| t.to_string()).unwrap_or_else(|| "none stapled".into()),
                        "OCSP: fetching a response failed; the stapled one (if any) stays until ocsp_margin \
                         before its nextUpdate"
                    );
                }
                failures += 1;
                now + crate::acme::schedule::backoff(RETRY_MIN, RETRY_MAX, failures, rand::random())
            }
        };
        show(slot, labels);
        // Sleep until the next fetch, waking to drop the staple when it reaches its margin, and
        // leaving when a renewal replaced the certificate.
        loop {
            if replaced() {
                return;
            }
            let now = SystemTime::now();
            if slot.staple_until().is_some_and(|until| until <= now) {
                slot.staple_on(bare, None);
                tracing::error!(
                    %listener, %cert,
                    "OCSP: no fresh response from the responder; the stapled one is within ocsp_margin of \
                     its nextUpdate and is no longer stapled"
                );
                show(slot, labels);
            }
            if now >= next {
                break;
            }
            let wake = slot.staple_until().filter(|u| *u < next).unwrap_or(next);
            tokio::select! {
                () = tokio::time::sleep(wake.duration_since(now).unwrap_or_default()) => {}
                () = renewed.notified() => {}
            }
        }
    }
}

/// POSTs the DER request to `url` and returns the DER response body.
async fn post(url: &str, request: Vec<u8>) -> Result<Vec<u8>, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("responder URL {url}: {e}"))?;
    let host = uri.host().ok_or_else(|| format!("responder URL {url} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_else(|| host.clone());
    let path = uri.path_and_query().map(|p| p.as_str()).filter(|p| !p.is_empty()).unwrap_or("/").to_string();
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connecting to the responder {url}: {e}"))?;
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/ocsp-request")
            .body(Full::new(Bytes::from(request)))
            .map_err(|e| format!("OCSP request for {url}: {e}"))?;
        if !https {
            return send(TokioIo::new(tcp), request, url).await;
        }
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| format!("responder URL {url}: {e}"))?;
        let client = https_client().map_err(|e| format!("responder {url}: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with the responder {url}: {e}"))?;
        send(TokioIo::new(tls), request, url).await
    };
    tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("responder {url} did not answer within {FETCH_TIMEOUT:?}"))?
}

/// Sends `request` over `io` (HTTP/1.1) and reads the response body.
async fn send<IO>(io: TokioIo<IO>, request: hyper::Request<Full<Bytes>>, url: &str) -> Result<Vec<u8>, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("responder {url}: {e}"))?;
    let conn = tokio::spawn(conn);
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| format!("responder {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("responder {url} answered HTTP {}", response.status()));
        }
        let body = Limited::new(response.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| format!("responder {url}: reading the response: {e}"))?;
        Ok(body.to_bytes().to_vec())
    }
    .await;
    conn.abort();
    result
}

/// The TLS client for https:// responders: the system's roots (`SSL_CERT_FILE` or
/// `SSL_CERT_DIR` replace them, as for other TLS clients), loaded once.
fn https_client() -> Result<Arc<rustls::ClientConfig>, String> {
    use tlsgate_config::TlsVersion;
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let settings = tlsgate_tls::client::ClientSettings {
                ca: None,
                cert: None,
                key: None,
                alpn: &[],
                tls_versions: &[TlsVersion::Tls12, TlsVersion::Tls13],
            };
            tlsgate_tls::client::client_config(settings, false).map_err(|e| match e {
                TlsError::Config(e) if e.starts_with("no system root") => {
                    "no system root certificates to check an https:// responder with \
                     (SSL_CERT_FILE or SSL_CERT_DIR can name them)"
                        .to_string()
                }
                e => e.to_string(),
            })
        })
        .clone()
}
