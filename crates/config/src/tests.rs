use super::*;

/// The example in docs/config.md is the one users copy: it must parse and validate.
#[test]
fn documented_example_parses() {
    let doc = include_str!("../../../docs/config.md");
    let start = doc.find("```toml\n").expect("example block") + "```toml\n".len();
    let end = start + doc[start..].find("```").expect("end of example");
    let config = Config::from_toml(&doc[start..end]).expect("example validates");
    let o = config.originate.expect("originate section");
    assert_eq!(o.listener[0].starttls, Some(StartTls::Postgres));
    let t = config.terminate.expect("terminate section");
    assert_eq!(t.listener.len(), 3);
    assert_eq!(t.listener[2].starttls, Some(StartTls::Smtp));
    assert_eq!(t.listener[2].starttls_host.as_deref(), Some("mx.example.com"));
    assert_eq!(t.listener[0].starttls, None);
    assert_eq!(t.listener[0].route[0].backends[1].to_string(), "10.0.0.12:8080");
    assert_eq!(t.listener[1].tls_versions, vec![TlsVersion::Tls13]);
    assert_eq!(config.log.format, LogFormat::Text);
    let tunnel = config.tunnel.expect("tunnel section");
    let gate = tunnel.gate.expect("gate");
    assert_eq!(gate.reverse[0].target.to_string(), "127.0.0.1:22");
    let (by_id, default, open) = gate.policies().unwrap();
    assert!(!open && default.rules.len() == 2 && by_id.len() == 1);
    let portal = tunnel.portal.expect("portal");
    assert_eq!(portal.forward.len(), 2);
    assert_eq!(portal.limits.max_sessions, 256);
    assert_eq!(portal.limits.session_window, 256 * 1024, "unset limits keep their defaults");
}

fn minimal(extra_route: &str) -> String {
    format!(
        r#"
[[terminate.listener]]
listen = "127.0.0.1:0"
[[terminate.listener.certificate]]
cert = "a.pem"
key = "a.key"
[[terminate.listener.route]]
backends = ["127.0.0.1:80"]
{extra_route}
"#
    )
}

#[test]
fn minimal_config_gets_defaults() {
    let c = Config::from_toml(&minimal("")).unwrap();
    let l = &c.terminate.unwrap().listener[0];
    assert_eq!(l.handshake_timeout, std::time::Duration::from_secs(10));
    assert_eq!(l.tls_versions, vec![TlsVersion::Tls12, TlsVersion::Tls13]);
    assert!(!l.certificate[0].default);
}

#[test]
fn rejects_what_would_misbehave() {
    let cases = [
        ("[[terminate.listener.route]]\nbackends = [\"x:1\"]", "more than one default route"),
        ("[[terminate.listener.route]]\nsni = [\"a\"]\nbackends = []", "no backends"),
        ("[[terminate.listener.route]]\nsni = [\"*.*.a\"]\nbackends = [\"x:1\"]", "invalid server name"),
        ("[[terminate.listener.route]]\nsni = [\"a\"]\nbackends = [\"nohost\"]", "not host:port"),
        ("[[terminate.listener.route]]\nsni = [\"a\"]\nbakends = [\"x:1\"]", "unknown field"),
    ];
    for (extra, want) in cases {
        let err = Config::from_toml(&minimal(extra)).unwrap_err().to_string();
        assert!(err.contains(want), "{extra:?}: got {err}");
    }
}

/// `starttls` and `starttls_host` on a terminate listener (`listener_keys` go before its tables).
fn with_starttls(listener_keys: &str, extra_route: &str) -> Result<Config, ConfigError> {
    let text = minimal(extra_route).replace(
        "[[terminate.listener.certificate]]",
        &format!("{listener_keys}\n[[terminate.listener.certificate]]"),
    );
    Config::from_toml(&text)
}

#[test]
fn starttls_keys() {
    let c = with_starttls("starttls = \"ldap\"", "").unwrap();
    assert_eq!(c.terminate.unwrap().listener[0].starttls, Some(StartTls::Ldap));
    let cases = [
        ("starttls = \"smtps\"", "", "unknown STARTTLS protocol \"smtps\""),
        ("starttls_host = \"mx\"", "", "starttls_host without starttls"),
        ("starttls = \"imap\"\nstarttls_host = \"two words\"", "", "printable ASCII"),
        ("starttls = \"smtp\"", "http_headers = true", "no route can have http_headers"),
    ];
    for (keys, route, want) in cases {
        let err = with_starttls(keys, route).unwrap_err().to_string();
        assert!(err.contains(want), "{keys:?}: got {err}");
    }
    let originate = r#"
[[originate.listener]]
listen = "127.0.0.1:0"
upstreams = ["db:5432"]
starttls = "postgres"
starttls_host = "gate"
"#;
    let c = Config::from_toml(originate).unwrap();
    assert_eq!(c.originate.unwrap().listener[0].starttls, Some(StartTls::Postgres));
    let err = Config::from_toml(&originate.replace("\"postgres\"", "\"mysql\"")).unwrap_err();
    assert!(err.to_string().contains("unknown STARTTLS protocol"), "{err}");
}

#[test]
fn backend_addresses() {
    let b: BackendAddr = "[::1]:8080".parse().unwrap();
    assert_eq!((b.host.as_str(), b.port), ("::1", 8080));
    assert_eq!(b.to_string(), "[::1]:8080");
    let b: BackendAddr = "db.internal:5432".parse().unwrap();
    assert_eq!(b.host, "db.internal");
    assert!("db.internal:99999".parse::<BackendAddr>().is_err());
    assert!(":80".parse::<BackendAddr>().is_err());
}
