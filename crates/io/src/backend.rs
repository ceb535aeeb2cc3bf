//! Backend pools: balancing, connecting with timeout and retry, health.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tlsgate_config::{BackendAddr, BalancePolicy, RouteConfig};
use tlsgate_core::balance::{Balancer, MemberView, Policy};
use tlsgate_core::health::{Health, HealthParams, Transition};
use tokio::net::TcpStream;

use crate::ProxyError;

/// One backend of a pool.
#[derive(Debug)]
pub struct Member {
    pub addr: BackendAddr,
    health: Mutex<Health>,
    /// Connections currently relayed to this member.
    active: AtomicU32,
    /// Connections ever relayed to this member.
    pub total: AtomicU64,
}

impl Member {
    pub fn is_healthy(&self) -> bool {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).is_healthy(Instant::now())
    }

    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    fn record(&self, ok: bool, cause: &str) {
        let change = self.health.lock().unwrap_or_else(|e| e.into_inner()).record(ok, Instant::now());
        match change {
            Some(Transition::Down) => {
                tracing::warn!(backend = %self.addr, %cause, "backend marked down")
            }
            Some(Transition::Up) => tracing::info!(backend = %self.addr, %cause, "backend marked up"),
            None => {}
        }
    }
}

/// A connection's hold on a member: counts it as active until dropped.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<Pool>,
    index: usize,
}

impl Lease {
    pub fn member(&self) -> &Member {
        &self.pool.members[self.index]
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.member().active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A backend pool with its balancing and health state, shared by every connection of a route.
#[derive(Debug)]
pub struct Pool {
    pub members: Vec<Member>,
    pub connect_timeout: Duration,
    max_attempts: usize,
    balancer: Balancer,
}

impl Pool {
    /// Builds the pool and, when configured, starts its active health checks (they stop by
    /// themselves once the pool is dropped, e.g. replaced by a reload).
    pub fn start(route: &RouteConfig) -> Arc<Pool> {
        let h = &route.health;
        let params = HealthParams {
            rise: h.rise,
            fall: h.fall,
            eject_time: h.eject_time,
            active_checks: h.interval.is_some(),
        };
        let policy = match route.balance {
            BalancePolicy::RoundRobin => Policy::RoundRobin,
            BalancePolicy::LeastConnections => Policy::LeastConnections,
            BalancePolicy::SourceHash => Policy::SourceHash,
        };
        let pool = Arc::new(Pool {
            members: route
                .backends
                .iter()
                .map(|addr| Member {
                    addr: addr.clone(),
                    health: Mutex::new(Health::new(params)),
                    active: AtomicU32::new(0),
                    total: AtomicU64::new(0),
                })
                .collect(),
            connect_timeout: route.connect_timeout,
            max_attempts: route.connect_attempts.unwrap_or(route.backends.len()),
            balancer: Balancer::new(policy),
        });
        if let Some(interval) = h.interval {
            tokio::spawn(check_loop(Arc::downgrade(&pool), interval, h.timeout));
        }
        pool
    }

    pub fn policy(&self) -> Policy {
        self.balancer.policy()
    }

    /// Connects to a healthy member chosen by the policy; a connect that fails or times out
    /// counts against that member and moves on to the next. Nothing has been sent yet, so each
    /// retry is safe.
    pub async fn connect(self: &Arc<Self>, client: IpAddr) -> Result<(TcpStream, Lease), ProxyError> {
        self.connect_sending(client, &[]).await.map(|(stream, lease, _)| (stream, lease))
    }

    /// As [`Pool::connect`], sending `first` (what goes to the backend before anything else: a
    /// PROXY header, the client's first request) as soon as the connection is up; returns how
    /// many of its bytes went, the rest being the caller's to write. An attempt that fails has
    /// sent nothing (see [`connect_addr`]), so each retry is still safe.
    pub async fn connect_sending(
        self: &Arc<Self>,
        client: IpAddr,
        first: &[u8],
    ) -> Result<(TcpStream, Lease, usize), ProxyError> {
        let views: Vec<MemberView> =
            self.members.iter().map(|m| MemberView { healthy: m.is_healthy(), active: m.active() }).collect();
        let order = self.balancer.attempts(&views, client, self.max_attempts);
        if order.is_empty() {
            return Err(ProxyError::backend(format!(
                "no healthy backend in pool ({} members, all down)",
                self.members.len()
            )));
        }
        let mut failures = Vec::new();
        for i in order {
            let member = &self.members[i];
            match connect_one_sending(&member.addr, self.connect_timeout, first).await {
                Ok((stream, sent)) => {
                    member.record(true, "connect succeeded");
                    if !failures.is_empty() {
                        tracing::warn!(backend = %member.addr, failed = %failures.join("; "), "connected after retry");
                    }
                    member.active.fetch_add(1, Ordering::Relaxed);
                    member.total.fetch_add(1, Ordering::Relaxed);
                    return Ok((stream, Lease { pool: self.clone(), index: i }, sent));
                }
                Err(e) => {
                    tracing::warn!(backend = %member.addr, error = %e, "backend connect failed");
                    member.record(false, &e);
                    failures.push(format!("{}: {e}", member.addr));
                }
            }
        }
        Err(ProxyError::backend(format!("no backend reachable ({})", failures.join("; "))))
    }
}

/// Active TCP checks of every member, until the pool is gone.
async fn check_loop(pool: Weak<Pool>, interval: Duration, timeout: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        for m in &pool.members {
            match connect_one(&m.addr, timeout).await {
                Ok(_) => m.record(true, "health check passed"),
                Err(e) => m.record(false, &format!("health check: {e}")),
            }
        }
    }
}

pub(crate) async fn connect_one(member: &BackendAddr, timeout: Duration) -> Result<TcpStream, String> {
    connect_one_sending(member, timeout, &[]).await.map(|(stream, _)| stream)
}

/// [`connect_one`], sending `first` once connected; returns the bytes of it that went.
pub(crate) async fn connect_one_sending(
    member: &BackendAddr,
    timeout: Duration,
    first: &[u8],
) -> Result<(TcpStream, usize), String> {
    let attempt = async {
        let addrs: Vec<_> = tokio::net::lookup_host((member.host.as_str(), member.port))
            .await
            .map_err(|e| format!("resolve: {e}"))?
            .collect();
        let mut last = String::from("name resolved to no address");
        for addr in addrs {
            match connect_addr(addr, first).await {
                Ok(connected) => return Ok(connected),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        Err(last)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("connect timed out after {timeout:?}"))?
}

/// Connects to `addr` (TCP_NODELAY set) and sends `first` at once when the connection is
/// already up as `connect` returns, which it is for a backend on this host: the kernel runs
/// loopback's whole three-way handshake inside the call. tokio learns a new socket's
/// writability only from its next `epoll_wait`, so waiting for that cost each such connection a
/// turn of the event loop and a `getsockopt` before its first byte could go. A send straight on
/// the socket finds out instead: it takes the bytes, or fails as the connect did (refused), or
/// finds the handshake still under way (EAGAIN), and then the usual wait for writability follows
/// with nothing sent. So a failed attempt has sent nothing.
async fn connect_addr(addr: SocketAddr, first: &[u8]) -> io::Result<(TcpStream, usize)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking().cloexec(), Some(Protocol::TCP))?;
    let _ = socket.set_tcp_nodelay(true);
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let mut sent = 0;
    if !first.is_empty() {
        match socket.send_with_flags(first, libc::MSG_NOSIGNAL) {
            Ok(n) => sent = n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    let stream = TcpStream::from_std(socket.into())?;
    if sent == 0 {
        stream.writable().await?;
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
    }
    Ok((stream, sent))
}

#[cfg(test)]
#[path = "backend_tests.rs"]
mod tests;
