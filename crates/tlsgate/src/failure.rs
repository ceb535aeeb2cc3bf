//! Why a subcommand stopped, whose mistake it was, and how that is said: once.

use tlsgate_core::side::Side;
use tlsgate_io::ProxyError;

/// A subcommand's fatal error. Start-up mistakes (the config file, a flag, a certificate or key
/// file, an address in use) are the `config` side's; `internal` is for tlsgate's own failures.
#[derive(Debug)]
pub struct Failure {
    pub side: Side,
    pub message: String,
}

impl Failure {
    pub fn config(message: impl Into<String>) -> Self {
        Failure { side: Side::Config, message: message.into() }
    }

    /// Says it once: in the log when logging is up and shows errors (its format, text or JSON,
    /// is what the operator chose), plainly on stderr otherwise (e.g. the config file did not
    /// load, so there is no logging yet).
    pub fn report(&self) {
        if tracing::dispatcher::has_been_set() && tracing::enabled!(tracing::Level::ERROR) {
            tracing::error!(target: "tlsgate", side = %self.side, "{} error: {}", self.side, self.message);
        } else {
            eprintln!("tlsgate: {} error: {}", self.side, self.message);
        }
    }
}

/// tlsgate's own: signal handlers, temporary files, and the like.
impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure { side: Side::Internal, message }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

impl From<ProxyError> for Failure {
    fn from(e: ProxyError) -> Self {
        Failure { side: e.side, message: e.context }
    }
}
