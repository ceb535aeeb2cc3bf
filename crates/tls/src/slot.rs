//! One served certificate whose contents change while the listener runs: a fetched OCSP staple
//! replaces the previous one, an ACME renewal replaces the chain and key. Each handshake reads the
//! slot once, so a swap never disturbs a handshake in progress or a connection already open.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::sign::CertifiedKey;

/// A chain and key, and the OCSP response stapled to it until it goes stale.
#[derive(Debug)]
struct Served {
    bare: Arc<CertifiedKey>,
    stapled: Option<(Arc<CertifiedKey>, SystemTime)>,
}

#[derive(Debug)]
pub struct CertSlot {
    served: ArcSwap<Served>,
}

impl CertSlot {
    pub fn new(key: Arc<CertifiedKey>) -> Self {
        CertSlot { served: ArcSwap::from_pointee(Served { bare: key, stapled: None }) }
    }

    /// What a handshake at `now` serves: the stapled variant while its response is fresh, never
    /// a stale one.
    pub fn current(&self, now: SystemTime) -> Arc<CertifiedKey> {
        let served = self.served.load();
        match &served.stapled {
            Some((key, until)) if now < *until => key.clone(),
            _ => served.bare.clone(),
        }
    }

    /// The chain and key, without staple.
    pub fn bare(&self) -> Arc<CertifiedKey> {
        self.served.load().bare.clone()
    }

    /// Staples `response` (DER) until `until`; `None` staples nothing from now on.
    pub fn set_staple(&self, response: Option<(Vec<u8>, SystemTime)>) {
        self.staple_on(&self.bare(), response);
    }

    /// [`CertSlot::set_staple`], but only while the slot still serves `bare` (the certificate the
    /// response was checked against): false, and nothing changed, once a renewal replaced it.
    pub fn staple_on(&self, bare: &Arc<CertifiedKey>, response: Option<(Vec<u8>, SystemTime)>) -> bool {
        let stapled = response.map(|(der, until)| {
            let mut key = (**bare).clone();
            key.ocsp = Some(der);
            (Arc::new(key), until)
        });
        let mut applied = false;
        self.served.rcu(|served| {
            applied = Arc::ptr_eq(&served.bare, bare);
            if applied {
                Arc::new(Served { bare: bare.clone(), stapled: stapled.clone() })
            } else {
                served.clone()
            }
        });
        applied
    }

    /// A new chain and key (renewal); the old staple belongs to the old certificate and goes.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        self.served.store(Arc::new(Served { bare: key, stapled: None }));
    }

    /// The stapled response and until when, to carry it over to the slot a reload builds for the
    /// same certificate.
    pub fn staple(&self) -> Option<(Vec<u8>, SystemTime)> {
        let served = self.served.load();
        let (key, until) = served.stapled.as_ref()?;
        Some((key.ocsp.clone()?, *until))
    }

    /// When the staple goes stale, if one is served.
    pub fn staple_until(&self) -> Option<SystemTime> {
        self.served.load().stapled.as_ref().map(|(_, until)| *until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_checked_against_a_replaced_certificate_is_not_stapled_on_its_successor() {
        let names = ["slot.test".to_string()];
        let old = crate::acme::throwaway(&names).unwrap();
        let slot = CertSlot::new(old.clone());
        let until = SystemTime::now() + std::time::Duration::from_secs(60);
        assert!(slot.staple_on(&old, Some((b"old".to_vec(), until))));
        assert_eq!(slot.current(SystemTime::now()).ocsp.as_deref(), Some(&b"old"[..]));
        // A renewal drops the staple, and a late response for the old certificate stays off.
        let new = crate::acme::throwaway(&names).unwrap();
        slot.replace(new.clone());
        assert!(slot.staple().is_none());
        assert!(!slot.staple_on(&old, Some((b"old".to_vec(), until))));
        assert!(slot.staple().is_none());
        assert!(slot.staple_on(&new, Some((b"new".to_vec(), until))));
        assert_eq!(slot.staple().map(|(der, _)| der), Some(b"new".to_vec()));
    }
}
