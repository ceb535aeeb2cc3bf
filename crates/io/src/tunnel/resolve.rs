//! Name resolution on the gate's side: the system resolver, or a configured DNS server.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

pub enum Resolver {
    /// getaddrinfo, through tokio's blocking pool (/etc/hosts, nsswitch, resolv.conf).
    System,
    /// Only this DNS server: the gate's own view of names, which the portal side may not share.
    Dns { resolver: Box<TokioResolver>, server: SocketAddr },
}

impl Resolver {
    pub fn new(server: Option<SocketAddr>) -> Result<Self, String> {
        let Some(server) = server else { return Ok(Resolver::System) };
        let mut ns = NameServerConfig::udp_and_tcp(server.ip());
        for c in &mut ns.connections {
            c.port = server.port();
        }
        let resolver = hickory_resolver::Resolver::builder_with_config(
            ResolverConfig::from_parts(None, Vec::new(), vec![ns]),
            TokioRuntimeProvider::default(),
        )
        .build()
        .map_err(|e| format!("resolver {server}: {e}"))?;
        Ok(Resolver::Dns { resolver: Box::new(resolver), server })
    }

    /// The DNS server portals' DNS forwarders reach, if one is configured.
    pub fn dns_server(&self) -> Option<SocketAddr> {
        match self {
            Resolver::System => None,
            Resolver::Dns { server, .. } => Some(*server),
        }
    }

    /// Every address of `name`; an error text fit for an OpenReply otherwise.
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, String> {
        let addrs: Vec<IpAddr> = match self {
            Resolver::System => tokio::net::lookup_host((name, 0))
                .await
                .map_err(|e| format!("cannot resolve {name}: {e}"))?
                .map(|sa| sa.ip())
                .collect(),
            Resolver::Dns { resolver, server } => resolver
                .lookup_ip(name)
                .await
                .map_err(|e| format!("cannot resolve {name} via {server}: {e}"))?
                .iter()
                .collect(),
        };
        if addrs.is_empty() {
            return Err(format!("{name} has no addresses"));
        }
        Ok(addrs)
    }
}
