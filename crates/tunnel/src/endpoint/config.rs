//! Endpoint settings; every cap that bounds memory lives here.

use std::time::Duration;

/// Which end of the tunnel this is. The roles split the session id space (portal odd, gate
/// even) so both ends can open sessions without colliding; Hello refuses two equal roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Portal,
    Gate,
}

impl Role {
    pub(crate) fn wire(self) -> u8 {
        match self {
            Role::Portal => 0,
            Role::Gate => 1,
        }
    }

    /// The parity of the ids this role allocates (1 = odd).
    pub(crate) fn id_parity(self) -> u16 {
        match self {
            Role::Portal => 1,
            Role::Gate => 0,
        }
    }
}

/// Limits and timers. Memory per session is at most `send_buffer + recv_window +
/// 2 * datagram_queue_bytes` plus fixed overhead; per connection, `max_sessions` sessions, one
/// partial frame (`max_frame_len` + 8) and at most `max_sessions` queued refusals.
#[derive(Debug, Clone)]
pub struct Config {
    pub role: Role,
    /// Largest payload we accept in one record (announced in Hello).
    pub max_frame_len: u32,
    /// Largest data chunk we put in one Send (kept near one TLS record).
    pub max_data_chunk: usize,
    /// Receive window announced per session: what this side buffers for the peer's data.
    pub recv_window: u32,
    /// Bytes the application may queue per session before `write` pushes back.
    pub send_buffer: usize,
    /// Datagrams queued per direction per session, by count and by payload bytes.
    pub datagram_queue_len: usize,
    pub datagram_queue_bytes: usize,
    /// Live sessions (both directions together); further Opens are refused.
    pub max_sessions: usize,
    /// Send a Ping after this long without hearing from the peer.
    pub keepalive_interval: Duration,
    /// Give up on the connection after this long without hearing from the peer.
    pub idle_timeout: Duration,
    /// Reset a session with no traffic and no application activity for this long.
    pub session_idle_timeout: Duration,
}

impl Config {
    pub fn new(role: Role) -> Self {
        Config {
            role,
            max_frame_len: crate::wire::DEFAULT_MAX_FRAME_LEN,
            max_data_chunk: 16 * 1024,
            recv_window: 256 * 1024,
            send_buffer: 256 * 1024,
            datagram_queue_len: 64,
            datagram_queue_bytes: 128 * 1024,
            max_sessions: 1024,
            keepalive_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            session_idle_timeout: Duration::from_secs(300),
        }
    }
}
