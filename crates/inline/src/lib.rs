//! The inline engine: TLS offload inside the packets of one end-to-end TCP connection.
//!
//! Sans-IO: the engine takes IP packets with a timestamp and returns packets to emit plus its next
//! timer; it owns no socket and reads no clock. docs/inline-engine.md describes the design and what
//! is built so far. The record layer itself (framing, sealing and opening with the extracted keys)
//! is the crate `tlsgate-record`, shared with terminate. Each module has one job:
//!
//! - [`seq`]: 32-bit TCP sequence numbers compared and advanced across the 2^32 wrap.
//! - [`seq_map`]: the table of sequence pairs at record boundaries, translating offsets both ways.
//! - [`handshake`]: the rustls server handshake on the client's records (the only rustls driver).
//! - [`sni`]: the server name read from the ClientHello, for the session table.
//! - [`health`]: passive health of balanced pools' members, judged from their flows' SYNs.
//! - [`hold`]: the bounded hold queue putting out-of-order segments back in order.
//! - [`upstream`]: the client → server record path (buffered or cut-through release), ACKs
//!   translated back.
//! - [`cut`]: one client record opened in cut-through release: what may leave before its tag.
//! - [`downstream`]: the server → client record path: one record per segment, stored records
//!   resent for retransmissions, the client's window respected.
//! - [`packet`]: the packet edge: IPv4/IPv6 + TCP read with smoltcp, in-place rewrites.
//! - [`table_hash`]: the keyed fast hasher of the flow and MAC tables.
//! - [`tables`]: the session, connection and queue-state tables as plain data.
//! - [`tls_flow`]: a flow's TLS data path from the SYN-ACK on: segments to offsets and back.
//! - [`parked_memory`]: the allocator scope parked flows' state is made in (a heap of its own).
//! - [`sim`]: the deterministic simulator (smoltcp TCP on both ends, rustls clients, impaired link).
//! - [`bridge`]: the L2 layer around the engine: Ethernet frames, ARP, MACs learned per side,
//!   partial checksums completed; the AF_PACKET driver and the simulator both drive it.
//! - [`proxy`]: the full-proxy fallback: flows the end-to-end path cannot serve terminated on
//!   both sides (smoltcp TCP, the same handshake driver and session machine), decided at the SYN;
//!   its smoltcp device over two packet queues (`queue_device`) is the simulator's too.
//! - [`flow`]: one flow's state; [`engine`]: the flow table and the packet dispatch.
//! - [`timers`]: when the engine next has work without a packet: a heap of the flows' own
//!   timers and a bound on their expiries, so no call visits every flow.

pub mod bridge;
pub mod cut;
pub mod downstream;
pub mod engine;
pub mod flow;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod health;
pub mod hold;
pub mod packet;
pub mod parked_memory;
pub mod proxy;
mod queue_device;
pub mod sacked;
pub mod seq;
pub mod seq_map;
pub mod sim;
pub mod sni;
pub mod table_hash;
pub mod tables;
pub mod timers;
pub mod tls_flow;
pub mod upstream;
