//! The rustls side of tlsgate, kept in one crate so the rustls 0.24 upgrade touches little.
//!
//! - [`keys`]: PEM certificate chains and private keys from disk, with the permission check;
//! - [`keyd`]: keys held by `tlsgate keyd` in another process, signing over a Unix socket;
//! - [`pkcs11`]: keys in a PKCS#11 token (RFC 7512 URIs), signing through the token;
//! - [`hkdf`]: TLS 1.3 suites whose key schedule prepares each HMAC key once;
//! - [`server`]: per-listener `ServerConfig`s and the SNI certificate table;
//! - [`slot`]: a served certificate whose staple or chain changes while it runs;
//! - [`staple`]: OCSP responses checked and stapled to a slot;
//! - [`server_handshake`]: terminate's handshake on the unbuffered API, ending in extracted keys;
//! - [`client_auth`]: mutual TLS — CA bundle, CRLs, allow-lists;
//! - [`identity`]: a peer's subject and SANs;
//! - [`describe`]: rustls's errors in an operator's words, for every handshake failure logged;
//! - [`inline`]: the inline engine's per-service configs, keys handed over after the handshake;
//! - [`tunnel`]: the gate's and the portal's TLS 1.3 configs with certificates on both ends;
//! - [`connect`]: the connect gate's and portal's configs;
//! - [`fleet`]: a fleet's ticketer and TLS 1.2 session store (rustls extension points), the fleet key;
//! - [`ocsp`]: OCSP responses matched to a certificate, their freshness, requests for them;
//! - `ocsp_signature`: an OCSP response's signature by the issuer or its delegated responder;
//! - [`acme`]: the ACME certificate slot, the throwaway certificate, TLS-ALPN-01 answers;
//! - [`acme_http`]: HTTP-01 answers on the optional plain port, from a request head;
//! - [`pki`]: a throwaway CA and leaf certificates (rcgen) for the demo and for tests.

pub mod acme;
pub mod acme_http;
pub mod client;
pub mod client_auth;
pub mod client_handshake;
pub mod connect;
pub mod describe;
pub mod error;
pub mod fleet;
mod hkdf;
mod hmac_sha256;
pub mod identity;
pub mod inline;
pub mod keyd;
pub mod keys;
pub mod ocsp;
mod ocsp_signature;
pub mod peek;
pub mod pkcs11;
pub mod pki;
pub mod revocation;
pub mod server;
pub mod server_handshake;
pub mod slot;
pub mod staple;
pub mod tunnel;

pub use error::TlsError;

/// The crypto provider every config uses: aws-lc-rs, TLS 1.2 and 1.3 AEAD suites with ECDHE only,
/// the TLS 1.3 ones with [`hkdf`]'s key schedule.
pub fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = provider.cipher_suites.into_iter().map(hkdf::with_prepared_hkdf).collect();
    std::sync::Arc::new(provider)
}

/// rustls's version constants for the configured versions.
pub fn protocol_versions(
    versions: &[tlsgate_config::TlsVersion],
) -> Vec<&'static rustls::SupportedProtocolVersion> {
    versions
        .iter()
        .map(|v| match v {
            tlsgate_config::TlsVersion::Tls12 => &rustls::version::TLS12,
            tlsgate_config::TlsVersion::Tls13 => &rustls::version::TLS13,
        })
        .collect()
}
