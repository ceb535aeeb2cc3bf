//! ACME (RFC 8555) for terminate listeners: one task per `acme` table orders the certificate with
//! `instant-acme`, answers TLS-ALPN-01 through the listener (see `tlsgate_tls::acme`) or, with
//! `http_port`, HTTP-01 on that plain port ([`http01`]), keeps the
//! account and certificates in the state directory, and swaps each new certificate into the slot
//! the listener serves from: new handshakes get it, open connections keep theirs.

pub mod http01;
pub mod schedule;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};
use tlsgate_config::AcmeConfig;
use tlsgate_tls::acme::{self as tls_acme, AcmeShared};

/// How long before its `nextUpdate` an issued certificate's OCSP response stops being stapled,
/// as for a `certificate` without `ocsp_margin`.
const OCSP_MARGIN: Duration = Duration::from_secs(3600);

/// Where one `acme` table keeps its files.
struct StateDir {
    account: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl StateDir {
    fn new(config: &AcmeConfig) -> Self {
        // One directory may serve several listeners' tables: certificates by their first name.
        let certs = config.state.join(&config.names[0]);
        StateDir {
            account: config.state.join("account.json"),
            cert: certs.join("cert.pem"),
            key: certs.join("key.pem"),
        }
    }
}

/// The listener's shared ACME state: the certificate kept from an earlier run when it still
/// covers the names, otherwise a throwaway one.
pub fn prepare(config: &AcmeConfig, listener: &str) -> Result<Arc<AcmeShared>, String> {
    let dir = StateDir::new(config);
    let initial = match tls_acme::load_issued(&dir.cert, &dir.key) {
        Ok(loaded) if config.names.iter().all(|n| loaded.dns_names.contains(n)) => {
            tracing::info!(%listener, cert = %dir.cert.display(), "ACME: serving the certificate kept from before");
            loaded.key
        }
        _ => tls_acme::throwaway(&config.names).map_err(|e| e.to_string())?,
    };
    AcmeShared::new(config.names.clone(), initial).map(Arc::new).map_err(|e| e.to_string())
}

/// Stops the HTTP-01 port with the task that owns it.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Orders and renews until aborted; `ip` is the listener's address, where `http_port` is bound.
pub async fn run(config: AcmeConfig, shared: Arc<AcmeShared>, listener: String, ip: std::net::IpAddr) {
    let _http01 = config.http_port.map(|port| {
        let addr = std::net::SocketAddr::new(ip, port);
        AbortOnDrop(tokio::spawn(http01::serve(addr, shared.challenges.clone(), listener.clone())))
    });
    let dir = StateDir::new(&config);
    // Issued certificates are stapled like configured ones (with the default `ocsp_margin`).
    let stapler = crate::ocsp_fetch::follow(&shared.slot, &listener, &dir.cert, OCSP_MARGIN);
    let mut failures = 0u32;
    loop {
        // Due when the served certificate is not one we issued (throwaway), else at 2/3.
        let due = match tls_acme::load_issued(&dir.cert, &dir.key) {
            Ok(loaded) if same_cert(&shared, &loaded.key) => tls_acme::validity(&loaded.key.cert[0])
                .map(|(from, until)| schedule::renew_at(from, until))
                .unwrap_or_else(SystemTime::now),
            _ => SystemTime::now(),
        };
        if let Ok(wait) = due.duration_since(SystemTime::now()) {
            tracing::info!(%listener, renew_in = ?wait, "ACME: certificate valid, renewal scheduled");
            tokio::time::sleep(wait).await;
        }
        match issue(&config, &shared, &dir, &listener).await {
            Ok(serial) => {
                failures = 0;
                stapler.renewed();
                tracing::info!(%listener, names = ?config.names, %serial, "ACME: certificate issued and now served");
            }
            Err(e) => {
                failures += 1;
                let wait = schedule::backoff(config.retry_min, config.retry_max, failures, rand::random());
                tracing::warn!(
                    %listener, names = ?config.names, error = %e, failures, retry_in = ?wait,
                    "ACME: order failed; serving the previous certificate meanwhile"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Whether the slot serves this certificate (the one in the state directory).
fn same_cert(shared: &AcmeShared, key: &rustls::sign::CertifiedKey) -> bool {
    shared.slot.bare().cert.first() == key.cert.first()
}

/// One order, start to finish; the new certificate's serial.
async fn issue(
    config: &AcmeConfig,
    shared: &AcmeShared,
    dir: &StateDir,
    listener: &str,
) -> Result<String, String> {
    create_dir_0700(&config.state)?;
    let account = account(config, dir).await?;
    let identifiers: Vec<Identifier> = config.names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(|e| format!("the ACME server refused the order: {e}"))?;
    let mut answered = Vec::new();
    let mut tokens = Vec::new();
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| format!("fetching an authorization: {e}"))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("authorization is {other:?}")),
            }
            let name;
            let mut challenge = if config.http_port.is_some() {
                let challenge = authz
                    .challenge(ChallengeType::Http01)
                    .ok_or("the ACME server offers no http-01 challenge")?;
                name = challenge.identifier().to_string();
                shared.challenges.insert_http(&challenge.token, challenge.key_authorization().as_str());
                tokens.push(challenge.token.clone());
                tracing::info!(%listener, %name, "ACME: answering HTTP-01");
                challenge
            } else {
                let challenge = authz
                    .challenge(ChallengeType::TlsAlpn01)
                    .ok_or("the ACME server offers no tls-alpn-01 challenge")?;
                name = challenge.identifier().to_string();
                let digest = challenge.key_authorization().digest();
                shared.challenges.insert(&name, digest.as_ref()).map_err(|e| e.to_string())?;
                answered.push(name.clone());
                tracing::info!(%listener, %name, "ACME: answering TLS-ALPN-01");
                challenge
            };
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("marking the challenge for {name} ready: {e}"))?;
        }
        let retries = RetryPolicy::new().timeout(Duration::from_secs(60));
        match order.poll_ready(&retries).await.map_err(|e| format!("validation: {e}"))? {
            OrderStatus::Ready => {}
            other => return Err(format!("order is {other:?} after validation")),
        }
        let key_pem = order.finalize().await.map_err(|e| format!("finalizing the order: {e}"))?;
        let chain_pem =
            order.poll_certificate(&retries).await.map_err(|e| format!("fetching the certificate: {e}"))?;
        Ok((key_pem, chain_pem))
    }
    .await;
    for name in &answered {
        shared.challenges.remove(name);
    }
    for token in &tokens {
        shared.challenges.remove_http(token);
    }
    let (key_pem, chain_pem) = result?;
    let parent = dir.cert.parent().ok_or("state path has no parent")?;
    create_dir_0700(parent)?;
    write_atomic(&dir.key, key_pem.as_bytes(), 0o600)?;
    write_atomic(&dir.cert, chain_pem.as_bytes(), 0o644)?;
    let loaded = tls_acme::load_issued(&dir.cert, &dir.key)
        .map_err(|e| format!("the issued certificate does not load: {e}"))?;
    let serial = serial(&loaded.key.cert[0]);
    shared.slot.replace(loaded.key);
    Ok(serial)
}

/// The account kept in the state directory, or a new one registered (and then kept).
async fn account(config: &AcmeConfig, dir: &StateDir) -> Result<Account, String> {
    let builder = || {
        match &config.directory_ca {
            Some(ca) => Account::builder_with_root(ca),
            None => Account::builder(),
        }
        .map_err(|e| format!("ACME HTTP client: {e}"))
    };
    if let Ok(bytes) = std::fs::read(&dir.account) {
        let creds: AccountCredentials = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{}: not an account file: {e}", dir.account.display()))?;
        return builder()?
            .from_credentials(creds)
            .await
            .map_err(|e| format!("restoring the ACME account from {}: {e}", dir.account.display()));
    }
    let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
    let (account, creds) = builder()?
        .create(
            &NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false },
            config.directory.clone(),
            None,
        )
        .await
        .map_err(|e| format!("registering an ACME account at {}: {e}", config.directory))?;
    let json = serde_json::to_vec(&creds).map_err(|e| e.to_string())?;
    write_atomic(&dir.account, &json, 0o600)?;
    tracing::info!(directory = %config.directory, id = %account.id(), "ACME: account registered");
    Ok(account)
}

fn serial(cert: &rustls::pki_types::CertificateDer<'_>) -> String {
    use x509_parser::prelude::*;
    X509Certificate::from_der(cert).map(|(_, c)| c.raw_serial_as_string()).unwrap_or_default()
}

/// The state directory, mode 0700 (tightened if it exists).
fn create_dir_0700(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| format!("ACME state directory {}: {e}", path.display()))
}

/// Writes through a temporary file and a rename, so a reader sees the old file or the new one.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let fail = |e: std::io::Error| format!("writing {}: {e}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(fail)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}
