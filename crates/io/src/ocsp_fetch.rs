//! OCSP stapling from the certificate's own responder (RFC 6960, the HTTP POST of its appendix
//! A.1): one task per certificate slot whose certificate names a responder and has no
//! `ocsp_file`. A response is checked and stapled by `tlsgate_tls::staple` (which response may be
//! served, and until when); this shell only asks, waits and retries. A failed fetch keeps the
//! stapled response until `ocsp_margin` before its `nextUpdate`, then staples nothing: never a
//! stale response.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tlsgate_config::CertificateConfig;
use tlsgate_telemetry::metrics::{metrics, CertLabels};
use tlsgate_tls::ocsp::{self, Status};
use tlsgate_tls::slot::CertSlot;
use tlsgate_tls::staple;
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
}

impl Drop for Fetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a fetcher for `slot` when its certificate asks for one (`ocsp`, no `ocsp_file`) and
/// names an http:// responder.
pub fn start(slot: &Arc<CertSlot>, config: &CertificateConfig, listener: &str) -> Option<Fetcher> {
    if !config.ocsp || config.ocsp_file.is_some() {
        return None;
    }
    let url = ocsp::responder_url(&slot.bare().cert)?;
    let labels = CertLabels { listener: listener.to_string(), cert: config.cert.display().to_string() };
    let task = tokio::spawn(run(slot.clone(), url, config.ocsp_margin, labels));
    Some(Fetcher { slot: slot.clone(), task })
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

async fn run(slot: Arc<CertSlot>, url: String, margin: Duration, labels: CertLabels) {
    let m = metrics();
    let stapled = m.ocsp_stapled.get_or_create_owned(&labels);
    let failures_total = m.ocsp_fetch_failures.get_or_create_owned(&labels);
    let cert = labels.cert.clone();
    let listener = labels.listener.clone();
    let request = match ocsp::request(&slot.bare().cert) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%listener, %cert, error = %e, "OCSP: cannot build a request; not stapling");
            return;
        }
    };
    let show = |slot: &CertSlot| {
        let present = slot.staple_until().is_some();
        stapled.set(i64::from(present));
        if !present {
            m.ocsp_staple_age.remove(&labels);
        }
    };
    show(&slot);
    let mut failures = 0u32;
    loop {
        let now = SystemTime::now();
        let outcome = match post(&url, request.clone()).await {
            Ok(body) => {
                staple::apply(&slot, body, &url, now, margin).map_err(|e| format!("responder {url}: {e}"))
            }
            Err(e) => Err(e),
        };
        let next = match outcome {
            Ok(checked) if checked.status != Status::Unknown && slot.staple_until().is_some() => {
                failures = 0;
                m.ocsp_staple_age.get_or_create(&labels).set_this_update(checked.this_update);
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
        show(&slot);
        // Sleep until the next fetch, waking to drop the staple when it reaches its margin.
        loop {
            let now = SystemTime::now();
            if slot.staple_until().is_some_and(|until| until <= now) {
                slot.set_staple(None);
                tracing::error!(
                    %listener, %cert,
                    "OCSP: no fresh response from the responder; the stapled one is within ocsp_margin of \
                     its nextUpdate and is no longer stapled"
                );
                show(&slot);
            }
            if now >= next {
                break;
            }
            let wake = slot.staple_until().filter(|u| *u < next).unwrap_or(next);
            tokio::time::sleep(wake.duration_since(now).unwrap_or_default()).await;
        }
    }
}

/// POSTs the DER request to `url` and returns the DER response body.
async fn post(url: &str, request: Vec<u8>) -> Result<Vec<u8>, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("responder URL {url}: {e}"))?;
    let host = uri.host().ok_or_else(|| format!("responder URL {url} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(80);
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_else(|| host.clone());
    let path = uri.path_and_query().map(|p| p.as_str()).filter(|p| !p.is_empty()).unwrap_or("/").to_string();
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connecting to the responder {url}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("responder {url}: {e}"))?;
        let conn = tokio::spawn(conn);
        let req = hyper::Request::post(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/ocsp-request")
            .body(Full::new(Bytes::from(request)))
            .map_err(|e| format!("OCSP request for {url}: {e}"))?;
        let response = sender.send_request(req).await.map_err(|e| format!("responder {url}: {e}"));
        let result = async {
            let response = response?;
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
    };
    tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("responder {url} did not answer within {FETCH_TIMEOUT:?}"))?
}
