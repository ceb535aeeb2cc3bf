//! The "Examples:" section at the end of each subcommand's `--help`: README.md's usage commands
//! for that mode. tests/help.rs checks that each command is in README.md as written and that the
//! real binary accepts it, so the two cannot drift apart.

pub const TERMINATE: &str = "\
Examples:
  # One address in front of two backends (round-robin, failover when a connect fails)
  tlsgate terminate --listen 127.0.0.1:8443 --cert server.pem --key server.key \\
      --backend 127.0.0.1:8080 --backend 127.0.0.1:8081

  # Mutual TLS, the client's identity for the backend, and an admin listener
  tlsgate terminate --listen 0.0.0.0:8443 --cert server.pem --key server.key --backend 127.0.0.1:8080 \\
      --client-ca clients-ca.pem --crl clients.crl --allow-uri 'spiffe://example.org/ns/prod/*' \\
      --proxy-protocol v2 --admin 127.0.0.1:9900

  # Several listeners, certificates and routes by SNI, balancing, limits (docs/config.md)
  tlsgate check --config tlsgate.toml       # loads every file it names, binds nothing
  tlsgate terminate --config tlsgate.toml";

pub const ORIGINATE: &str = "\
Examples:
  # Plaintext in on 127.0.0.1:5432, verified TLS out to db.example
  tlsgate originate --listen 127.0.0.1:5432 --connect db.example:5432 --ca ca.pem

  # Unmodified programs through iptables REDIRECT, policy per destination (docs/transparent.md)
  tlsgate originate --config mesh.toml     # [[originate.transparent]] rules";

pub const GATE: &str = "\
Examples:
  # Accept portals whose certificates ca.pem issued (docs/tunnel.md)
  tlsgate tunnel gate --listen 0.0.0.0:7443 --cert gate.pem --key gate.key --client-ca ca.pem";

pub const PORTAL: &str = "\
Examples:
  # SOCKS5 on 127.0.0.1:1080 and one TCP forward, both through the gate (docs/tunnel.md)
  tlsgate tunnel portal --gate gate.example:7443 --ca ca.pem --cert portal.pem --key portal.key \\
      --socks 127.0.0.1:1080 --forward tcp:127.0.0.1:15432=db.internal:5432";

pub const TUNNEL: &str = "\
Examples:
  tlsgate tunnel gate --listen 0.0.0.0:7443 --cert gate.pem --key gate.key --client-ca ca.pem
  tlsgate tunnel portal --gate gate.example:7443 --ca ca.pem --cert portal.pem --key portal.key \\
      --socks 127.0.0.1:1080 --forward tcp:127.0.0.1:15432=db.internal:5432";

pub const CONNECT_GATE: &str = "\
Examples:
  # Portals with certificates from ca.pem may reach internal.test:443 (docs/connect.md)
  tlsgate connect gate --listen 0.0.0.0:8443 --cert gate.pem --key gate.key --client-ca ca.pem \\
      --allow '*=internal.test 443 to 10.0.0.0/8'";

pub const CONNECT_PORTAL: &str = "\
Examples:
  # Browsers use 127.0.0.1:3128 (or http://127.0.0.1:3128/proxy.pac) for internal.test
  tlsgate connect portal --gate gate.example:8443 --ca ca.pem --cert portal.pem --key portal.key \\
      --route internal.test";

pub const CONNECT: &str = "\
Examples:
  tlsgate connect gate --listen 0.0.0.0:8443 --cert gate.pem --key gate.key --client-ca ca.pem \\
      --allow '*=internal.test 443 to 10.0.0.0/8'
  tlsgate connect portal --gate gate.example:8443 --ca ca.pem --cert portal.pem --key portal.key \\
      --route internal.test";

pub const INLINE_ABOUT: &str = "Packet-level TLS offload that keeps the client's TCP connection, \
between two interfaces (run), or in a simulated network (simulate)";

pub const INLINE_RUN: &str = "\
Examples:
  # TLS for 10.0.0.2:443 offloaded between eth0 (clients) and eth1 (the server's port 80)
  tlsgate inline run --client-iface eth0 --server-iface eth1 --service 10.0.0.2:443=80 \\
      --cert server.pem --key server.key --admin 127.0.0.1:9900";

pub const SIMULATE: &str = "\
Examples:
  # 200 flows under loss, reordering and duplication, every byte verified (docs/inline-engine.md)
  tlsgate inline simulate --flows 50 --seed 7 --loss 0.03 --reorder 0.05 --duplicate 0.01 \\
      --bytes 262144 --mode buffered";

pub const INLINE: &str = "\
Examples:
  tlsgate inline run --client-iface eth0 --server-iface eth1 --service 10.0.0.2:443=80 \\
      --cert server.pem --key server.key --admin 127.0.0.1:9900
  tlsgate inline simulate --flows 50 --seed 7 --loss 0.03 --reorder 0.05 --duplicate 0.01 \\
      --bytes 262144 --mode buffered";

pub const DEMO: &str = "\
Examples:
  # Throwaway CA, built-in backend and a terminator on 127.0.0.1:8443; prints a curl command
  tlsgate demo";

pub const RUN: &str = "\
Examples:
  # Every mode section of one file in one process, one admin listener (docs/config.md)
  tlsgate run --config tlsgate.toml";

pub const CHECK: &str = "\
Examples:
  # Validate before a start or a reload: exit 0 and `config OK`, or each problem and exit 1
  tlsgate check --config tlsgate.toml       # loads every file it names, binds nothing";

pub const KEYD: &str = "\
Examples:
  # hold server.key in its own process, as user tlsgate-keys, signing for uid tlsgate
  tlsgate --user tlsgate-keys keyd --socket /run/tlsgate/keyd.sock --key web=/etc/tlsgate/server.key --allow-uid tlsgate
  # terminate signs through it and never reads the key
  tlsgate terminate --listen 0.0.0.0:443 --cert server.pem --key keyd:/run/tlsgate/keyd.sock#web --backend 127.0.0.1:8080";

pub const BACKEND: &str = "\
Examples:
  # GET /, POST /echo, POST /sha256 in plaintext, for trying a configuration
  tlsgate backend --listen 127.0.0.1:8080";
