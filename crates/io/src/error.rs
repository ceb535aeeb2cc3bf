use tlsgate_core::side::Side;

/// A failure on one proxied connection, with the side that caused it.
#[derive(Debug, thiserror::Error)]
#[error("{side}: {context}")]
pub struct ProxyError {
    pub side: Side,
    pub context: String,
}

impl ProxyError {
    pub fn client(context: impl Into<String>) -> Self {
        Self { side: Side::Client, context: context.into() }
    }
    pub fn backend(context: impl Into<String>) -> Self {
        Self { side: Side::Backend, context: context.into() }
    }
    pub fn internal(context: impl Into<String>) -> Self {
        Self { side: Side::Internal, context: context.into() }
    }
    pub fn config(context: impl Into<String>) -> Self {
        Self { side: Side::Config, context: context.into() }
    }
}
