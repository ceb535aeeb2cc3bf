//! Connecting to a member of a backend pool.

use std::time::Duration;

use tlsgate_config::BackendAddr;
use tlsgate_core::balance::RoundRobin;
use tokio::net::TcpStream;

use crate::ProxyError;

/// A backend pool with its balancing state, shared by every connection of a route.
#[derive(Debug)]
pub struct Pool {
    pub members: Vec<BackendAddr>,
    pub connect_timeout: Duration,
    pub max_attempts: usize,
    rr: RoundRobin,
}

impl Pool {
    pub fn new(members: Vec<BackendAddr>, connect_timeout: Duration, attempts: Option<usize>) -> Self {
        let max_attempts = attempts.unwrap_or(members.len());
        Pool { members, connect_timeout, max_attempts, rr: RoundRobin::new() }
    }

    /// Connects to the next member in round-robin order; a connect that fails or times out moves
    /// on to the following member. Nothing has been sent yet, so each retry is safe.
    pub async fn connect(&self) -> Result<(TcpStream, &BackendAddr), ProxyError> {
        let mut failures = Vec::new();
        for i in self.rr.attempts(self.members.len(), self.max_attempts) {
            let member = &self.members[i];
            match connect_one(member, self.connect_timeout).await {
                Ok(stream) => {
                    if !failures.is_empty() {
                        tracing::warn!(backend = %member, failed = %failures.join("; "), "connected after retry");
                    }
                    return Ok((stream, member));
                }
                Err(e) => {
                    tracing::warn!(backend = %member, error = %e, "backend connect failed");
                    failures.push(format!("{member}: {e}"));
                }
            }
        }
        Err(ProxyError::backend(format!("no backend reachable ({})", failures.join("; "))))
    }
}

async fn connect_one(member: &BackendAddr, timeout: Duration) -> Result<TcpStream, String> {
    let attempt = async {
        let addrs: Vec<_> = tokio::net::lookup_host((member.host.as_str(), member.port))
            .await
            .map_err(|e| format!("resolve: {e}"))?
            .collect();
        let mut last = String::from("name resolved to no address");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(last)
    };
    let stream = tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("connect timed out after {timeout:?}"))??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
