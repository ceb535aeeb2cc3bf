//! The compact form of a parked flow: what resuming it needs and nothing else.
//!
//! A flow idle for `park_after` with nothing in flight (no record unacknowledged by the client,
//! no plaintext unacknowledged by the server, nothing held or half-framed, no FIN, no timer)
//! keeps its addresses and options, the two sequence translations (initial sequence numbers,
//! the pair tables' bases and remaining entries, the offsets acknowledged each way), the last
//! windows, counters, and the session's compact form (TLS 1.3: the two traffic secrets, from
//! which the keys are derived again; TLS 1.2: the raw keys and IVs; both: the record sequence
//! numbers). Its next packet rebuilds the working state ([`Parked::resume`]) exactly as it was,
//! so a parked flow behaves as one that never parked. A flow parked with something in flight
//! keeps its working state and only drops its AEAD contexts ([`super::Live::park`]), and is
//! compacted once it is quiet.

use super::{Ends, Keys, Live, SessionInfo};
use crate::downstream::{CompactDown, DownLimits};
use crate::packet::TcpChecksum;
use crate::seq::Stream;
use crate::seq_map::Entry;
use crate::tables::Counters;
use crate::upstream::{CompactUp, UpLimits};
use std::net::SocketAddr;
use std::time::Duration;
use tlsgate_record::session::CompactSession;

/// What the engine keeps anyway and a parked flow therefore does not: its addresses (the flow
/// table's key and entry) and the engine's limits, handed back to wake it.
#[derive(Clone, Copy, Debug)]
pub struct Wake {
    pub client: SocketAddr,
    pub service: SocketAddr,
    pub backend: SocketAddr,
    pub up: UpLimits,
    pub down: DownLimits,
    pub park_after: Option<Duration>,
}

/// [`Ends`] without its addresses.
#[derive(Debug)]
struct Options {
    client_mss: u16,
    server_mss: u16,
    client_wscale: u8,
    server_wscale: u8,
    client_sack: bool,
    server_sack: bool,
    checksum: TcpChecksum,
    gso: bool,
}

impl Options {
    fn of(e: &Ends) -> Options {
        Options {
            client_mss: e.client_mss,
            server_mss: e.server_mss,
            client_wscale: e.client_wscale,
            server_wscale: e.server_wscale,
            client_sack: e.client_sack,
            server_sack: e.server_sack,
            checksum: e.checksum,
            gso: e.gso,
        }
    }

    /// The [`Ends`] again, with the addresses `wake` hands back.
    fn with(&self, wake: &Wake) -> Ends {
        Ends {
            client: wake.client,
            service: wake.service,
            backend: wake.backend,
            client_mss: self.client_mss,
            server_mss: self.server_mss,
            client_wscale: self.client_wscale,
            server_wscale: self.server_wscale,
            client_sack: self.client_sack,
            server_sack: self.server_sack,
            checksum: self.checksum,
            gso: self.gso,
        }
    }
}

#[derive(Debug)]
pub(super) struct Parked {
    ends: Options,
    client: Stream,
    server: Stream,
    session: CompactSession,
    up: CompactUp,
    down: CompactDown,
    ack_to_server: u64,
    ack_to_client: u64,
    client_window: u16,
    server_window: u16,
    info: Option<SessionInfo>,
}

impl Live {
    /// Nothing in flight, held or failed, no timer: all the flow is fits [`Parked`].
    pub(super) fn is_quiet(&self) -> bool {
        matches!(&self.keys, Keys::Records(s) if s.is_compactable())
            && self.rto.is_none()
            && !self.mac_failed
            && self.failed.is_none()
            && self.up.is_quiet()
            && self.down.is_quiet()
    }

    /// The compact form of a quiet flow whose session has one; the flow itself back otherwise.
    pub(super) fn compact(self: Box<Live>) -> Result<Parked, Box<Live>> {
        if !self.is_quiet() {
            return Err(self);
        }
        let Live {
            ends,
            client,
            server,
            keys,
            up,
            down,
            ack_to_server,
            ack_to_client,
            client_window,
            server_window,
            window_told: _,
            rto: _,
            session: info,
            mac_failed: _,
            handshake_alert: _,
            last_packet: _,
            park_after: _,
            failed: _,
        } = *self;
        let Keys::Records(session) = keys else { unreachable!("a quiet flow has its record layer") };
        let Ok(session) = session.compact() else { unreachable!("checked quiet above") };
        let (Ok(up), Ok(down)) = (up.compact(), down.compact()) else { unreachable!("checked quiet above") };
        Ok(Parked {
            ends: Options::of(&ends),
            client,
            server,
            session,
            up,
            down,
            ack_to_server,
            ack_to_client,
            client_window,
            server_window,
            // A new allocation among other parked flows', not among the handshake's.
            info: info.map(|i| SessionInfo { sni: i.sni.as_deref().map(Box::from), ..i }),
        })
    }
}

impl Parked {
    /// The working state again, with what `wake` hands back. `Err` carries a flow without keys
    /// (the session could not be rebuilt: a key derivation failed), which can only be reset.
    pub(super) fn resume(self, wake: &Wake) -> Result<Box<Live>, Box<Live>> {
        let Parked {
            ends,
            client,
            server,
            session,
            up,
            down,
            ack_to_server,
            ack_to_client,
            client_window,
            server_window,
            info,
        } = self;
        let session = session.resume();
        let live = Live {
            ends: ends.with(wake),
            client,
            server,
            keys: Keys::Gone,
            up: up.resume(wake.up),
            down: down.resume(wake.down),
            ack_to_server,
            ack_to_client,
            client_window,
            server_window,
            window_told: None,
            rto: None,
            session: info,
            mac_failed: false,
            handshake_alert: Vec::new(),
            // Set by the packet that wakes the flow, before anything reads it.
            last_packet: Duration::ZERO,
            park_after: wake.park_after,
            failed: None,
        };
        match session {
            Ok(s) => Ok(Box::new(Live { keys: Keys::Records(Box::new(s)), ..live })),
            Err(_) => Err(Box::new(live)),
        }
    }

    pub(super) fn session(&self) -> Option<&SessionInfo> {
        self.info.as_ref()
    }

    pub(super) fn record_seqs(&self) -> (u64, u64) {
        self.session.seqs()
    }

    pub(super) fn client_mss(&self) -> u16 {
        self.ends.client_mss
    }

    pub(super) fn server_mss(&self) -> u16 {
        self.ends.server_mss
    }

    pub(super) fn pairs(&self) -> (Vec<Entry>, Vec<Entry>) {
        (self.up.pairs().entries().copied().collect(), self.down.pairs().entries().copied().collect())
    }

    /// As [`Live::counters`].
    pub(super) fn counters(&self) -> (Counters, Counters) {
        super::counters(self.up.stats(), self.down.stats(), self.up.pairs().end(), self.down.pairs().end())
    }

    /// Bytes the parked flow holds beyond the flow table's own entry: this structure, the
    /// session's secrets or keys, the pair tables' entries and the SNI.
    pub(super) fn state_bytes(&self) -> usize {
        std::mem::size_of::<Parked>()
            + self.session.heap_bytes()
            + self.up.pairs().state_bytes()
            + self.down.pairs().state_bytes()
            + self.info.as_ref().and_then(|i| i.sni.as_ref()).map_or(0, |sni| sni.len())
    }
}

#[cfg(test)]
mod tests {
    /// The compact form is what an idle flow costs beside its flow-table entry: it must stay a
    /// fraction of the working state (896 bytes before its queues' and session's heap).
    #[test]
    fn the_compact_form_is_small() {
        use std::mem::size_of;
        assert!(size_of::<super::Parked>() <= 400, "{}", size_of::<super::Parked>());
        assert!(size_of::<crate::tls_flow::TlsFlow>() <= 16);
        assert!(size_of::<tlsgate_record::session::CompactSession>() <= 64);
    }
}
