//! Helpers for tlsgate's integration tests, which run the real binary against real peers.
//!
//! - [`process`]: a child process whose log lines can be awaited;
//! - [`pki`]: a throwaway CA with certificates written to a temporary directory;
//! - [`nginx`]: a private nginx instance on a free loopback port or inside a network namespace;
//! - [`netns`]: network namespaces joined by veth pairs;
//! - [`inline_net`]: client — gate — switch — server namespaces for a bump in the wire;
//! - [`capture`] and [`pcap`]: tcpdump on an interface, and what it captured read back;
//! - [`postgres`]: a private PostgreSQL server, plaintext or TLS-only, and `psql`;
//! - [`dns`]: a private dnsmasq answering names only it knows;
//! - [`data`]: random files and their SHA-256;
//! - [`docs`]: the fenced code blocks of README.md and docs/, for running them as written;
//! - [`impair`]: an L2 hop adding seeded loss, reordering and duplication (no netem here);
//! - [`window_clamp`]: the same hop making chosen client connections advertise a tiny window;
//! - [`demo`]: the curl command `tlsgate demo` prints, run as printed.

pub mod browser;
pub mod capture;
pub mod clients;
pub mod data;
pub mod demo;
pub mod dns;
pub mod docs;
pub mod hello;
pub mod impair;
pub mod inline_net;
pub mod memory;
pub mod net;
pub mod netns;
pub mod nginx;
pub mod pcap;
pub mod pki;
pub mod postgres;
pub mod process;
pub mod tls_client;
pub mod window_clamp;
