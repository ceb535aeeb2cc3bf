//! Putting OCSP responses on a [`CertSlot`]: from a file the operator provides, or (see the
//! fetcher in tlsgate-io) from the certificate's responder. Only a response that names the
//! certificate and is still within its `nextUpdate` is stapled; a revoked status is stapled (it
//! is the truth) and logged as an error.

use std::path::Path;
use std::time::SystemTime;

use crate::ocsp::{self, Checked, Status};
use crate::slot::CertSlot;
use crate::TlsError;

/// Checks `response` against the slot's certificate and staples it when it may be. `Err` only
/// for a response that is not for this certificate or does not parse.
pub fn apply(slot: &CertSlot, response: Vec<u8>, source: &str, now: SystemTime) -> Result<Checked, String> {
    let checked = ocsp::check(&response, &slot.bare().cert, now)?;
    let until = checked.next_update;
    match checked.status {
        Status::Good if checked.fresh(now) => slot.set_staple(Some((response, until))),
        Status::Good => {
            tracing::warn!(%source, "OCSP response is past its nextUpdate: not stapled");
            slot.set_staple(None);
        }
        Status::Revoked => {
            tracing::error!(%source, "OCSP: the certificate is REVOKED; clients will refuse it");
            if checked.fresh(now) {
                slot.set_staple(Some((response, until)));
            }
        }
        Status::Unknown => {
            tracing::warn!(%source, "OCSP responder does not know the certificate: not stapled");
            slot.set_staple(None);
        }
    }
    Ok(checked)
}

/// `ocsp_file`: a DER response loaded with the certificate; one for another certificate is a
/// configuration error.
pub fn from_file(slot: &CertSlot, path: &Path, cert: &Path) -> Result<(), TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what: "OCSP response",
        path: path.to_path_buf(),
        source,
    })?;
    apply(slot, bytes, &path.display().to_string(), SystemTime::now()).map_err(|problem| {
        TlsError::Material {
            what: "OCSP response",
            path: path.to_path_buf(),
            problem: format!("{problem} (certificate {})", cert.display()),
        }
    })?;
    Ok(())
}
