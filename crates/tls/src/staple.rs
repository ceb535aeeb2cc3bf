//! Putting OCSP responses on a [`CertSlot`]: from a file the operator provides, or (see the
//! fetcher in tlsgate-io) from the certificate's responder. Only a response that names the
//! certificate and is still more than `margin` before its `nextUpdate` is stapled, and only until
//! then; a revoked status is stapled (it is the truth: hiding it would only delay the clients'
//! refusal) and logged as an error.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;

use crate::ocsp::{self, Checked, Status};
use crate::slot::CertSlot;
use crate::TlsError;

/// Checks `response` against `bare` (the certificate it was asked for) and staples it on the
/// slot when it may be, unless the slot serves another certificate by now (a renewal). `Err` only
/// for a response that is not for this certificate or does not parse.
pub fn apply(
    slot: &CertSlot,
    bare: &Arc<CertifiedKey>,
    response: Vec<u8>,
    source: &str,
    now: SystemTime,
    margin: Duration,
) -> Result<Checked, String> {
    let checked = ocsp::check(&response, &bare.cert, now)?;
    let until = stapled_until(&checked, margin);
    let fresh = now < until;
    match checked.status {
        Status::Good if fresh => {
            slot.staple_on(bare, Some((response, until)));
        }
        Status::Good => {
            tracing::warn!(
                %source, next_update = ?checked.next_update, ?margin,
                "OCSP response is past its nextUpdate, or within ocsp_margin of it: not stapled"
            );
            slot.staple_on(bare, None);
        }
        Status::Revoked => {
            tracing::error!(
                %source,
                "OCSP: the certificate is REVOKED according to its responder; clients that check \
                 the staple will refuse it — replace the certificate"
            );
            if fresh {
                slot.staple_on(bare, Some((response, until)));
            }
        }
        Status::Unknown => {
            tracing::warn!(%source, "OCSP responder does not know the certificate: not stapled");
            slot.staple_on(bare, None);
        }
    }
    Ok(checked)
}

/// The last instant a response is stapled: `margin` before its `nextUpdate`.
pub fn stapled_until(checked: &Checked, margin: Duration) -> SystemTime {
    checked.next_update.checked_sub(margin).unwrap_or(checked.this_update).max(checked.this_update)
}

/// When to ask the responder again after it answered with `checked`: half-way from `thisUpdate`
/// to [`stapled_until`], earlier by up to a tenth of that span (`jitter` in [0, 1)) so gateways
/// started together do not ask together.
pub fn refresh_at(checked: &Checked, margin: Duration, jitter: f64) -> SystemTime {
    let span = stapled_until(checked, margin).duration_since(checked.this_update).unwrap_or_default();
    checked.this_update + span.mul_f64(0.5 - 0.1 * jitter.clamp(0.0, 1.0))
}

/// `ocsp_file`: a DER response loaded with the certificate; one for another certificate is a
/// configuration error.
pub fn from_file(slot: &CertSlot, path: &Path, cert: &Path, margin: Duration) -> Result<(), TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Read {
        what: "OCSP response",
        path: path.to_path_buf(),
        source,
    })?;
    apply(slot, &slot.bare(), bytes, &path.display().to_string(), SystemTime::now(), margin).map_err(
        |problem| TlsError::Material {
            what: "OCSP response",
            path: path.to_path_buf(),
            problem: format!("{problem} (certificate {})", cert.display()),
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ocsp::Status;

    #[test]
    fn refreshes_half_way_to_the_margin_and_stops_stapling_at_it() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = Checked { status: Status::Good, this_update: t0, next_update: t0 + Duration::from_secs(100) };
        let m = Duration::from_secs(20);
        assert_eq!(stapled_until(&c, m), t0 + Duration::from_secs(80));
        assert_eq!(refresh_at(&c, m, 0.0), t0 + Duration::from_secs(40));
        assert_eq!(refresh_at(&c, m, 1.0), t0 + Duration::from_secs(32));
        // A margin longer than the response lives: never stapled, asked again at once.
        let long = Duration::from_secs(500);
        assert_eq!(stapled_until(&c, long), t0);
        assert_eq!(refresh_at(&c, long, 0.5), t0);
    }
}
