//! A listener's routes: server name to backend pool.

use std::sync::Arc;

use tlsgate_config::ListenerConfig;
use tlsgate_core::names::{BadPattern, NamePattern, NameTable};

use crate::backend::Pool;

/// One route's pool, and a label for logs.
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
    table: NameTable<Arc<Route>>,
    /// In config order, for the status page.
    pub all: Vec<Arc<Route>>,
}

impl Routes {
    pub fn from_config(listener: &ListenerConfig) -> Result<Self, BadPattern> {
        let mut table = NameTable::new();
        let mut all = Vec::new();
        for (i, r) in listener.route.iter().enumerate() {
            let label = if r.sni.is_empty() { "default".to_string() } else { r.sni.join(",") };
            let route = Arc::new(Route {
                label: format!("route[{i}] {label}"),
                pool: Pool::start(r),
                http_headers: r.http_headers,
                proxy_protocol: r.proxy_protocol,
            });
            all.push(route.clone());
            if r.sni.is_empty() {
                table.set_default(route);
            } else {
                for n in &r.sni {
                    let pattern = NamePattern::parse(n)?;
                    table.insert(pattern, route.clone());
                }
            }
        }
        Ok(Routes { table, all })
    }

    pub fn lookup(&self, sni: Option<&str>) -> Option<&Arc<Route>> {
        self.table.lookup(sni)
    }
}
