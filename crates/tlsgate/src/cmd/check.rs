//! `tlsgate check --config FILE`: everything a start would load, loaded by the same code, and
//! nothing bound. Prints a line per section and `config OK`, or every problem found (exit 1).

use std::fmt::Write as _;

use tlsgate_config::{Config, GateConfig, ListenerConfig, PortalConfig};
use tlsgate_io::terminate::listener::ListenerState;
use tlsgate_tls::keys::load_cert_and_key;

use crate::cli::CheckArgs;

pub fn run(args: CheckArgs) -> Result<(), String> {
    let path = args.config.display().to_string();
    let config = match super::load_file(&args.config) {
        Ok(config) => config,
        // One problem: nothing past a file that does not parse can be checked.
        Err(e) => return report(&[e], &[]),
    };
    let mut problems = Vec::new();
    let mut summary = Vec::new();
    let insecure = config.security.allow_insecure_key_permissions;
    if config.terminate.is_none()
        && config.originate.is_none()
        && config.tunnel.is_none()
        && config.inline.is_none()
        && config.connect.is_none()
    {
        problems
            .push(format!("{path}: no [terminate], [originate], [tunnel], [inline] or [connect] section"));
    }
    if let Some(f) = &config.fleet {
        let insecure = config.security.allow_insecure_key_permissions;
        match tlsgate_tls::fleet::FleetKey::load(&f.key_file, insecure) {
            Ok(_) => {
                summary.push(format!("fleet: redis {}, ticket rotation {:?}", f.redis, f.ticket_rotation))
            }
            Err(e) => problems.push(format!("[fleet]: {e}")),
        }
    }
    if let Some(t) = &config.terminate {
        for l in &t.listener {
            problems.extend(terminate_listener(l, &config));
        }
        let certs: usize = t.listener.iter().map(|l| l.certificate.len()).sum();
        summary.push(format!(
            "terminate: {} listener(s) ({}), {certs} certificate(s)",
            t.listener.len(),
            listing(t.listener.iter().map(|l| (l.display_name(), l.listen.to_string())))
        ));
    }
    if let Some(o) = &config.originate {
        for l in &o.listener {
            let tls = tlsgate_tls::client::client_config(l.into(), insecure);
            problems.extend(tls.err().map(|e| format!("originate listener {}: {e}", l.display_name())));
            // The client certificates a directed connection's start_tls may pick, as a start loads them.
            for (name, files) in &l.client_identities {
                let mut settings = tlsgate_tls::client::ClientSettings::from(l);
                (settings.cert, settings.key) = (Some(files.cert.as_path()), Some(files.key.as_path()));
                let tls = tlsgate_tls::client::client_config(settings, insecure);
                problems.extend(tls.err().map(|e| {
                    format!("originate listener {}: client identity {name:?}: {e}", l.display_name())
                }));
            }
        }
        for t in &o.transparent {
            let place = format!("originate transparent listener {}", t.display_name());
            let tls = tlsgate_tls::client::client_config(t.into(), insecure);
            problems.extend(tls.err().map(|e| format!("{place}: {e}")));
            problems.extend(t.policy().err().map(|e| format!("{place}: {e}")));
        }
        summary.push(format!(
            "originate: {} listener(s) ({}), {} transparent listener(s) ({})",
            o.listener.len(),
            listing(o.listener.iter().map(|l| (l.display_name(), l.listen.to_string()))),
            o.transparent.len(),
            listing(o.transparent.iter().map(|t| (t.display_name(), t.listen.to_string())))
        ));
    }
    if let Some(t) = &config.tunnel {
        if let Some(g) = &t.gate {
            problems.extend(gate(g, insecure));
            summary.push(format!("tunnel gate: listen {}, {} reverse forward(s)", g.listen, g.reverse.len()));
        }
        if let Some(p) = &t.portal {
            problems.extend(portal(p, insecure));
            let gates: Vec<String> = p.gate.iter().map(|g| g.to_string()).collect();
            summary.push(format!("tunnel portal: gate {}", gates.join(", ")));
        }
    }
    if let Some(c) = &config.connect {
        // Grants and routes were validated with the config; what is left is the files.
        if let Some(g) = &c.gate {
            if let Err(e) = tlsgate_tls::connect::gate_server_config(g, insecure) {
                problems.push(format!("connect gate: {e}"));
            }
            summary.push(format!("connect gate: listen {}, {} grant(s)", g.listen, g.allow.len()));
        }
        if let Some(p) = &c.portal {
            if let Err(e) = tlsgate_tls::connect::portal_client_config(p, insecure) {
                problems.push(format!("connect portal: {e}"));
            }
            summary.push(format!("connect portal: listen {}, gate {}", p.listen, p.gate));
        }
    }
    if let Some(i) = &config.inline {
        // Each service's certificate and key, every broken one named.
        for s in &i.service {
            let tls = tlsgate_tls::inline::inline_server_config(s, insecure);
            problems.extend(tls.err().map(|e| format!("inline service {}: {e}", s.label())));
        }
        summary.push(format!(
            "inline: {} <-> {}, {} service(s) ({})",
            i.client_iface,
            i.server_iface,
            i.service.len(),
            i.service
                .iter()
                .map(|s| format!("{} {}", s.label(), i.mode_of(s)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(a) = &config.admin {
        summary.push(format!("admin: {}", a.listen));
    }
    match crate::privileges::target(&config) {
        Ok(Some(t)) => summary
            .push(format!("process: user {} (uid {}), group {} (gid {})", t.user, t.uid, t.group, t.gid)),
        Ok(None) => summary.push("process: no user to switch to".into()),
        Err(e) => problems.push(format!("{path}: {e}")),
    }
    report(&problems, &summary)
}

/// The listener as a start builds it; its certificates and client CA checked one by one first,
/// so that every broken file is named, not only the first.
fn terminate_listener(l: &ListenerConfig, config: &Config) -> Vec<String> {
    let name = l.display_name();
    let insecure = config.security.allow_insecure_key_permissions;
    let mut problems: Vec<String> = l
        .certificate
        .iter()
        .filter_map(|c| load_cert_and_key(&c.cert, &c.key, insecure).err())
        .map(|e| format!("terminate listener {name}: {e}"))
        .collect();
    if let Err(e) = tlsgate_tls::client_auth::client_verifier(&l.client_auth) {
        problems.push(format!("terminate listener {name}: client_auth: {e}"));
    }
    if problems.is_empty() {
        if let Err(e) = ListenerState::build(l, &config.security, None) {
            problems.push(format!("terminate {}", e.context));
        }
    }
    problems
}

fn gate(g: &GateConfig, insecure: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = tlsgate_tls::tunnel::gate_server_config(g, insecure) {
        problems.push(format!("tunnel gate: {e}"));
    }
    if let Err(e) = g.policies() {
        problems.push(format!("tunnel gate: {e}"));
    }
    problems
}

fn portal(p: &PortalConfig, insecure: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(e) = tlsgate_tls::tunnel::portal_client_config(p, insecure) {
        problems.push(format!("tunnel portal: {e}"));
    }
    if let Err(e) = p.reverse_policy() {
        problems.push(format!("tunnel portal: {e}"));
    }
    problems
}

fn listing(items: impl Iterator<Item = (String, String)>) -> String {
    let mut out = String::new();
    for (name, addr) in items {
        let sep = if out.is_empty() { "" } else { ", " };
        if name == addr {
            let _ = write!(out, "{sep}{addr}");
        } else {
            let _ = write!(out, "{sep}{name} {addr}");
        }
    }
    out
}

/// Problems on stderr, each once, in the order found; or the summary and `config OK` on stdout.
fn report(problems: &[String], summary: &[String]) -> Result<(), String> {
    if problems.is_empty() {
        for line in summary {
            println!("{line}");
        }
        println!("config OK");
        return Ok(());
    }
    let mut seen = std::collections::HashSet::new();
    for p in problems {
        if seen.insert(p) {
            eprintln!("tlsgate check: {p}");
        }
    }
    Err(format!("config has {} problem(s)", seen.len()))
}
