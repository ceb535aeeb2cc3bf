//! A smoltcp IP device whose wire is two packet queues: what the caller hands in, what smoltcp
//! sent. The full proxy feeds it packets from the bridge; the simulator from its link.

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use std::collections::VecDeque;

pub(crate) struct QueueDevice {
    /// Packets for smoltcp to receive, oldest first.
    pub rx: VecDeque<Vec<u8>>,
    /// Packets smoltcp sent, for the caller to take.
    pub tx: Vec<Vec<u8>>,
    pub mtu: usize,
}

impl QueueDevice {
    pub fn new(mtu: usize) -> QueueDevice {
        QueueDevice { rx: VecDeque::new(), tx: Vec::new(), mtu }
    }
}

pub(crate) struct Rx(Vec<u8>);
pub(crate) struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.pop_front()?;
        Some((Rx(p), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = self.mtu;
        c
    }
}
