//! A listener's routes: server name and negotiated protocol to backend pool. The choice itself
//! is [`RouteTable`]'s (most specific name, then protocol; see `tlsgate_core::routing`).

use std::sync::Arc;

use tlsgate_config::ListenerConfig;
use tlsgate_core::names::{BadPattern, NamePattern};
use tlsgate_core::routing::RouteTable;

use crate::backend::Pool;

/// One route's pool, and a label for logs, metrics and the status page.
#[derive(Debug)]
pub struct Route {
    pub label: String,
    pub pool: Arc<Pool>,
    /// HTTP header mode (see `http_headers`) instead of a byte relay.
    pub http_headers: bool,
    pub proxy_protocol: Option<tlsgate_config::ProxyProtocol>,
}

#[derive(Debug)]
pub struct Routes {
    table: RouteTable<Arc<Route>>,
    /// In config order, for the status page.
    pub all: Vec<Arc<Route>>,
}

impl Routes {
    pub fn from_config(listener: &ListenerConfig) -> Result<Self, BadPattern> {
        let mut table = RouteTable::new();
        let mut all = Vec::new();
        for (i, r) in listener.route.iter().enumerate() {
            let names = if r.sni.is_empty() { "default".to_string() } else { r.sni.join(",") };
            let alpn = if r.alpn.is_empty() { String::new() } else { format!(" alpn={}", r.alpn.join(",")) };
            let route = Arc::new(Route {
                label: format!("route[{i}] {names}{alpn}"),
                pool: Pool::start(r),
                http_headers: r.http_headers,
                proxy_protocol: r.proxy_protocol,
            });
            all.push(route.clone());
            let patterns = r.sni.iter().map(|n| NamePattern::parse(n)).collect::<Result<_, _>>()?;
            let protocols = r.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
            table.push(patterns, protocols, route);
        }
        Ok(Routes { table, all })
    }

    /// Whether some route takes this name, for some protocol (asked at the ClientHello).
    pub fn serves(&self, sni: Option<&str>) -> bool {
        self.table.serves(sni)
    }

    /// Whether some route sends a PROXY header to its backend (which needs our own address).
    pub fn any_proxy_protocol(&self) -> bool {
        self.all.iter().any(|r| r.proxy_protocol.is_some())
    }

    /// The route for this name and the protocol the handshake negotiated.
    pub fn lookup(&self, sni: Option<&str>, alpn: Option<&[u8]>) -> Option<&Arc<Route>> {
        self.table.lookup(sni, alpn)
    }
}
