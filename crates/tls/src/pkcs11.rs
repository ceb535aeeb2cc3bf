//! Private keys in a PKCS#11 token (an HSM, SoftHSM), named by an RFC 7512 URI:
//!
//! `pkcs11:token=LABEL;object=LABEL[;id=%01]?module-path=/usr/lib/…/module.so&pin-source=file:/etc/…/pin`
//!
//! The PIN is read from the `pin-source` file (RFC 7512 §2.4: a URI, here `file:` or a plain path),
//! which must not be readable by group or others. Every signature is made by the token: ECDSA on a
//! digest computed here (CKM_ECDSA, whose raw r||s becomes the DER TLS wants), RSA-PSS on a digest
//! (CKM_RSA_PKCS_PSS), RSA PKCS#1 v1.5 for TLS 1.2 clients without PSS (CKM_SHA*_RSA_PKCS).
//! Token calls block the worker thread that runs the handshake, as keyd's round trips do
//! (docs/keyd.md); sessions are pooled so concurrent handshakes sign in parallel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use aws_lc_rs::digest;
use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

use crate::TlsError;

/// The parts of the URI tlsgate uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: String,
    pub object: String,
    pub id: Option<Vec<u8>>,
    pub module: PathBuf,
    pub pin_file: PathBuf,
}

/// `Some` for a `pkcs11:` source.
pub fn parse(source: &str) -> Option<Result<Pkcs11Uri, String>> {
    let rest = source.strip_prefix("pkcs11:")?;
    Some(parse_uri(rest))
}

fn parse_uri(rest: &str) -> Result<Pkcs11Uri, String> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (mut token, mut object, mut id, mut module, mut pin) = (None, None, None, None, None);
    for attr in path.split(';').filter(|a| !a.is_empty()) {
        let (k, v) = attr.split_once('=').ok_or_else(|| format!("{attr:?}: expected NAME=VALUE"))?;
        let v = decode(v)?;
        match k {
            "token" => token = Some(utf8(v)?),
            "object" => object = Some(utf8(v)?),
            "id" => id = Some(v),
            "type" if v == b"private" => {}
            "type" => return Err("type must be private".into()),
            // Other RFC 7512 attributes (manufacturer, serial, …) do not narrow the search here.
            _ => {}
        }
    }
    for attr in query.split('&').filter(|a| !a.is_empty()) {
        let (k, v) = attr.split_once('=').ok_or_else(|| format!("{attr:?}: expected NAME=VALUE"))?;
        let v = utf8(decode(v)?)?;
        match k {
            "module-path" => module = Some(PathBuf::from(v)),
            "pin-source" => pin = Some(PathBuf::from(v.strip_prefix("file:").unwrap_or(&v))),
            "pin-value" => return Err("pin-value is refused: give the PIN in a pin-source file".into()),
            _ => {}
        }
    }
    Ok(Pkcs11Uri {
        token: token.ok_or("token= is required")?,
        object: object.ok_or("object= is required")?,
        id,
        module: module.ok_or("module-path= is required")?,
        pin_file: pin.ok_or("pin-source= is required (a file holding the PIN, mode 0600)")?,
    })
}

fn utf8(v: Vec<u8>) -> Result<String, String> {
    String::from_utf8(v).map_err(|_| "attribute value is not UTF-8".to_string())
}

/// RFC 3986 percent-decoding.
fn decode(v: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut bytes = v.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next(), bytes.next()];
            let [Some(h), Some(l)] = hex else { return Err(format!("{v:?}: truncated %-escape")) };
            let s = std::str::from_utf8(&[h, l]).map_err(|_| format!("{v:?}: bad %-escape"))?.to_string();
            out.push(u8::from_str_radix(&s, 16).map_err(|_| format!("{v:?}: bad %-escape"))?);
        } else {
            out.push(b);
        }
    }
    Ok(out)
}

/// One initialised context per module: C_Initialize may run once per process.
fn context(module: &Path) -> Result<Arc<Pkcs11>, String> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Pkcs11>>>> = OnceLock::new();
    let mut modules = MODULES.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ctx) = modules.get(module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module).map_err(|e| format!("cannot load module {}: {e}", module.display()))?;
    ctx.initialize(CInitializeArgs::OsThreads).map_err(|e| format!("C_Initialize: {}", p11(&e)))?;
    let ctx = Arc::new(ctx);
    modules.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// A cryptoki error by its PKCS#11 name, without the library's paragraph of prose.
fn p11(e: &cryptoki::error::Error) -> String {
    match e {
        cryptoki::error::Error::Pkcs11(rv, function) => format!("{function}: {rv:?}"),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum KeyType {
    Rsa,
    P256,
    P384,
}

/// Opens the key the URI names, logs in with the PIN file's PIN, and checks with one signature
/// that it matches the certificate `chain[0]`.
pub fn open(
    source: &str,
    uri: &Pkcs11Uri,
    leaf: &CertificateDer<'_>,
) -> Result<Arc<dyn SigningKey>, TlsError> {
    let fail = |problem: String| TlsError::Remote { key: redact(source), problem };
    crate::keys::check_key_permissions(&uri.pin_file).map_err(|e| fail(format!("PIN file: {e}")))?;
    let pin = std::fs::read_to_string(&uri.pin_file)
        .map_err(|e| fail(format!("cannot read PIN file {}: {e}", uri.pin_file.display())))?;
    let pin = AuthPin::new(pin.trim_end_matches(['\n', '\r']).to_string());
    let (spki, key_type) = leaf_key(leaf).map_err(fail)?;
    let ctx = context(&uri.module).map_err(fail)?;
    let slot = find_token(&ctx, &uri.token).map_err(fail)?;
    let session = ctx.open_ro_session(slot).map_err(|e| fail(format!("C_OpenSession: {}", p11(&e))))?;
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => return Err(fail(format!("login to token {:?} refused: {}", uri.token, p11(&e)))),
    }
    let mut template =
        vec![Attribute::Class(ObjectClass::PRIVATE_KEY), Attribute::Label(uri.object.as_bytes().to_vec())];
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    let found = session.find_objects(&template).map_err(|e| fail(format!("C_FindObjects: {}", p11(&e))))?;
    let handle = match found.as_slice() {
        [one] => *one,
        [] => return Err(fail(format!("no private key object={:?} on token {:?}", uri.object, uri.token))),
        _ => {
            return Err(fail(format!("{} private keys match object={:?}; add id=", found.len(), uri.object)))
        }
    };
    let key = Arc::new(TokenKey {
        inner: Arc::new(Token { ctx, slot, handle, idle: Mutex::new(vec![session]), source: redact(source) }),
        key_type,
        spki: SubjectPublicKeyInfoDer::from(spki),
    });
    key.check_against(leaf).map_err(fail)?;
    Ok(key)
}

/// The URI without its query (module and PIN file paths), for logs.
fn redact(source: &str) -> String {
    source.split('?').next().unwrap_or(source).to_string()
}

fn find_token(ctx: &Pkcs11, label: &str) -> Result<Slot, String> {
    let slots = ctx.get_slots_with_token().map_err(|e| format!("C_GetSlotList: {}", p11(&e)))?;
    for slot in slots {
        if let Ok(info) = ctx.get_token_info(slot) {
            if info.label().trim_end() == label {
                return Ok(slot);
            }
        }
    }
    Err(format!("no token labelled {label:?}"))
}

/// The leaf's SubjectPublicKeyInfo and what kind of key it is.
fn leaf_key(leaf: &CertificateDer<'_>) -> Result<(Vec<u8>, KeyType), String> {
    use x509_parser::prelude::*;
    use x509_parser::public_key::PublicKey;
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| format!("bad certificate: {e}"))?;
    let spki = cert.public_key();
    let key_type = match spki.parsed() {
        Ok(PublicKey::RSA(_)) => KeyType::Rsa,
        Ok(PublicKey::EC(point)) if point.data().len() == 65 => KeyType::P256,
        Ok(PublicKey::EC(point)) if point.data().len() == 97 => KeyType::P384,
        _ => return Err("the certificate's key is neither RSA nor ECDSA P-256/P-384".into()),
    };
    Ok((spki.raw.to_vec(), key_type))
}

#[derive(Debug)]
struct Token {
    ctx: Arc<Pkcs11>,
    slot: Slot,
    handle: ObjectHandle,
    /// Sessions not in use; the first one's login holds for every session of the token.
    idle: Mutex<Vec<Session>>,
    source: String,
}

impl Token {
    fn sign(&self, mechanism: &Mechanism, data: &[u8]) -> Result<Vec<u8>, String> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let session = match pooled {
            Some(s) => s,
            None => self.ctx.open_ro_session(self.slot).map_err(|e| format!("C_OpenSession: {}", p11(&e)))?,
        };
        let signature =
            session.sign(mechanism, self.handle, data).map_err(|e| format!("C_Sign: {}", p11(&e)));
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < 32 {
            idle.push(session);
        }
        signature
    }
}

#[derive(Debug)]
struct TokenKey {
    inner: Arc<Token>,
    key_type: KeyType,
    spki: SubjectPublicKeyInfoDer<'static>,
}

impl TokenKey {
    fn schemes(&self) -> &'static [SignatureScheme] {
        match self.key_type {
            KeyType::P256 => &[SignatureScheme::ECDSA_NISTP256_SHA256],
            KeyType::P384 => &[SignatureScheme::ECDSA_NISTP384_SHA384],
            KeyType::Rsa => &[
                SignatureScheme::RSA_PSS_SHA256,
                SignatureScheme::RSA_PSS_SHA384,
                SignatureScheme::RSA_PSS_SHA512,
                SignatureScheme::RSA_PKCS1_SHA256,
                SignatureScheme::RSA_PKCS1_SHA384,
                SignatureScheme::RSA_PKCS1_SHA512,
            ],
        }
    }

    /// Signs a test message with the token and verifies it with the certificate's public key.
    fn check_against(&self, leaf: &CertificateDer<'_>) -> Result<(), String> {
        use aws_lc_rs::signature::{self as sig, UnparsedPublicKey};
        let scheme = self.schemes()[0];
        let message = b"tlsgate: does the token's key match the certificate?";
        let signature = TokenSigner { token: self.inner.clone(), scheme }.sign_raw(message)?;
        let (_, cert) =
            x509_parser::parse_x509_certificate(leaf).map_err(|e| format!("bad certificate: {e}"))?;
        let public = cert.public_key().subject_public_key.data.to_vec();
        let algorithm: &dyn sig::VerificationAlgorithm = match self.key_type {
            KeyType::P256 => &sig::ECDSA_P256_SHA256_ASN1,
            KeyType::P384 => &sig::ECDSA_P384_SHA384_ASN1,
            KeyType::Rsa => &sig::RSA_PSS_2048_8192_SHA256,
        };
        UnparsedPublicKey::new(algorithm, public)
            .verify(message, &signature)
            .map_err(|_| "the token's private key does not match the certificate".to_string())
    }
}

impl SigningKey for TokenKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = *self.schemes().iter().find(|s| offered.contains(s))?;
        Some(Box::new(TokenSigner { token: self.inner.clone(), scheme }))
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(self.spki.clone())
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.key_type {
            KeyType::Rsa => SignatureAlgorithm::RSA,
            _ => SignatureAlgorithm::ECDSA,
        }
    }
}

#[derive(Debug)]
struct TokenSigner {
    token: Arc<Token>,
    scheme: SignatureScheme,
}

impl TokenSigner {
    fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        use SignatureScheme as S;
        let pss = |hash: &'static digest::Algorithm, alg: MechanismType, mgf: PkcsMgfType| {
            let d = digest::digest(hash, message);
            let params = PkcsPssParams { hash_alg: alg, mgf, s_len: (hash.output_len as u64).into() };
            (Mechanism::RsaPkcsPss(params), d.as_ref().to_vec())
        };
        let (mechanism, data) = match self.scheme {
            S::ECDSA_NISTP256_SHA256 => {
                (Mechanism::Ecdsa, digest::digest(&digest::SHA256, message).as_ref().to_vec())
            }
            S::ECDSA_NISTP384_SHA384 => {
                (Mechanism::Ecdsa, digest::digest(&digest::SHA384, message).as_ref().to_vec())
            }
            S::RSA_PSS_SHA256 => pss(&digest::SHA256, MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
            S::RSA_PSS_SHA384 => pss(&digest::SHA384, MechanismType::SHA384, PkcsMgfType::MGF1_SHA384),
            S::RSA_PSS_SHA512 => pss(&digest::SHA512, MechanismType::SHA512, PkcsMgfType::MGF1_SHA512),
            S::RSA_PKCS1_SHA256 => (Mechanism::Sha256RsaPkcs, message.to_vec()),
            S::RSA_PKCS1_SHA384 => (Mechanism::Sha384RsaPkcs, message.to_vec()),
            S::RSA_PKCS1_SHA512 => (Mechanism::Sha512RsaPkcs, message.to_vec()),
            other => return Err(format!("scheme {other:?} not supported")),
        };
        let signature = self.token.sign(&mechanism, &data)?;
        match mechanism {
            Mechanism::Ecdsa => ecdsa_der(&signature),
            _ => Ok(signature),
        }
    }
}

/// CKM_ECDSA's r||s (PKCS#11 §2.3.1) as the DER ECDSA-Sig-Value TLS carries (RFC 8446 §4.2.3).
fn ecdsa_der(raw: &[u8]) -> Result<Vec<u8>, String> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return Err(format!("token returned a {}-byte ECDSA signature", raw.len()));
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    Ok(yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_bigint_bytes(r, true);
            w.next().write_bigint_bytes(s, true);
        })
    }))
}

impl Signer for TokenSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.sign_raw(message).map_err(|e| {
            tracing::warn!(key = %self.token.source, error = %e, "PKCS#11 signature failed, handshake refused");
            rustls::Error::General(format!("{}: {e}", self.token.source))
        })
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc7512_uris() {
        let uri = parse(
            "pkcs11:token=tls%20gate;object=web;id=%01%02;type=private?module-path=/m.so&pin-source=file:/p",
        )
        .unwrap()
        .unwrap();
        assert_eq!(uri.token, "tls gate");
        assert_eq!(uri.id, Some(vec![1, 2]));
        assert_eq!(uri.pin_file, PathBuf::from("/p"));
        assert!(parse("pkcs11:token=t;object=o?module-path=/m.so&pin-value=1234").unwrap().is_err());
        assert!(parse("pkcs11:token=t;object=o?module-path=/m.so").unwrap().is_err());
        assert_eq!(parse("/etc/key.pem"), None);
    }

    #[test]
    fn ecdsa_signatures_become_der() {
        // r with its high bit set gains a zero byte; s with leading zeros loses them.
        let mut raw = vec![0x80; 32];
        raw.extend([0u8; 31]);
        raw.push(5);
        let der = ecdsa_der(&raw).unwrap();
        assert_eq!(&der[..5], &[0x30, 0x26, 0x02, 0x21, 0x00]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 0x01, 0x05]);
    }
}
