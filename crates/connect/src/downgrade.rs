//! The downgrade, as both ends carry it out (docs/connect-protocol.md).
//!
//! Opt-in per connection by a request header: a portal sends `Tlsgate-Downgrade: 1` with its
//! CONNECT; a gate that agrees echoes it in its `200` answer. Then, on the outer TLS connection:
//!
//! 1. the gate sends the `200` head and close_notify, and seals nothing more;
//! 2. the portal reads the head and the close_notify, sends its own close_notify, and from the
//!    next byte on writes raw bytes (the browser's own TLS);
//! 3. the gate reads up to the portal's close_notify, opens nothing after it, and hands what it
//!    read past it to the destination first.
//!
//! The head is the only plaintext the portal may send before its close_notify; anything else
//! is a protocol error. Without the header the gate is a plain HTTPS proxy (nested TLS).

/// The request and response header that asks for and agrees to the downgrade.
pub const HEADER: &str = "Tlsgate-Downgrade";
/// Its only value (the protocol's version).
pub const VALUE: &str = "1";

/// Whether a head's headers ask for (or agree to) the downgrade.
pub fn requested(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(n, v)| n.eq_ignore_ascii_case(HEADER) && v.trim() == VALUE)
}
