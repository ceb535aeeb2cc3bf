//! A smoltcp host with a queue for a network device, so the simulation hands it packets.

use std::collections::VecDeque;
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

pub const MTU: usize = 1500;

#[derive(Debug, Default)]
struct Queues {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
}

struct Rx(Vec<u8>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

struct Tx<'a>(&'a mut Vec<Vec<u8>>);

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.push(buf);
        r
    }
}

impl Device for Queues {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.pop_front()?;
        Some((Rx(p), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = MTU;
        c
    }
}

pub struct Host {
    pub iface: Interface,
    device: Queues,
    pub sockets: SocketSet<'static>,
}

pub fn instant(t: Duration) -> Instant {
    Instant::from_micros(t.as_micros() as i64)
}

impl Host {
    pub fn new(addr: IpAddress, prefix: u8) -> Host {
        let mut device = Queues::default();
        let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut device, Instant::ZERO);
        iface.update_ip_addrs(|a| a.push(IpCidr::new(addr, prefix)).expect("one address"));
        Host { iface, device, sockets: SocketSet::new(Vec::new()) }
    }

    pub fn deliver(&mut self, packet: Vec<u8>) {
        self.device.rx.push_back(packet);
    }

    /// Processes received packets and timers; returns what the host sends.
    pub fn poll(&mut self, now: Duration) -> Vec<Vec<u8>> {
        self.iface.poll(instant(now), &mut self.device, &mut self.sockets);
        std::mem::take(&mut self.device.tx)
    }

    pub fn poll_at(&mut self, now: Duration) -> Option<Duration> {
        if !self.device.rx.is_empty() {
            return Some(now);
        }
        self.iface
            .poll_at(instant(now), &self.sockets)
            .map(|t| Duration::from_micros(t.total_micros().max(0) as u64))
    }
}
