use super::*;

/// The example in docs/config.md is the one users copy: it must parse and validate.
#[test]
fn documented_example_parses() {
    let doc = include_str!("../../../docs/config.md");
    let full = doc.find("## Full example").expect("full example section");
    let start = full + doc[full..].find("```toml\n").expect("example block") + "```toml\n".len();
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
    assert_eq!(t.listener[0].route[1].alpn, vec!["h2"]);
    assert_eq!(t.listener[0].offered_alpn(), vec!["h2", "http/1.1"]);
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
    assert!(l.certificate[0].ocsp, "stapling from the responder is on by default");
    assert_eq!(l.certificate[0].ocsp_margin, std::time::Duration::from_secs(3600));
}

#[test]
fn ocsp_and_acme_http_port_settings() {
    let with_cert =
        minimal("").replace("key = \"a.key\"", "key = \"a.key\"\nocsp = false\nocsp_margin = \"5m\"");
    let c = Config::from_toml(&with_cert).unwrap();
    let cert = &c.terminate.unwrap().listener[0].certificate[0];
    assert!(!cert.ocsp);
    assert_eq!(cert.ocsp_margin, std::time::Duration::from_secs(300));
    let acme = |port: u16| {
        format!(
            "[[terminate.listener]]\nlisten = \"127.0.0.1:0\"\nacme = {{ directory = \"https://a/dir\", names = [\"a.test\"], http_port = {port} }}\n[[terminate.listener.route]]\nbackends = [\"127.0.0.1:80\"]\n"
        )
    };
    let c = Config::from_toml(&acme(80)).unwrap();
    assert_eq!(c.terminate.unwrap().listener[0].acme.as_ref().unwrap().http_port, Some(80));
    let err = Config::from_toml(&acme(0)).unwrap_err().to_string();
    assert!(err.contains("acme.http_port"), "{err}");
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

/// One listener with `listener_keys` and the given route tables (each with its own backend).
fn alpn_listener(listener_keys: &str, routes: &[&str]) -> Result<Config, ConfigError> {
    let mut text = format!(
        "[[terminate.listener]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n{listener_keys}\n\
         [[terminate.listener.certificate]]\ncert = \"a.pem\"\nkey = \"a.key\"\n"
    );
    for r in routes {
        text.push_str(&format!("[[terminate.listener.route]]\nbackends = [\"127.0.0.1:80\"]\n{r}\n"));
    }
    Config::from_toml(&text)
}

#[test]
fn route_alpn_within_the_listeners_offer() {
    let c =
        alpn_listener("alpn = [\"h2\", \"http/1.1\"]", &["sni = [\"a.test\"]\nalpn = [\"h2\"]", ""]).unwrap();
    let l = &c.terminate.unwrap().listener[0];
    assert_eq!(l.route[0].alpn, vec!["h2"]);
    assert!(l.route[1].alpn.is_empty());
    assert_eq!(l.offered_alpn(), vec!["h2", "http/1.1"]);
    // A nameless route per protocol, and one taking the rest.
    alpn_listener("alpn = [\"h2\", \"http/1.1\"]", &["alpn = [\"h2\"]", "alpn = [\"http/1.1\"]", ""])
        .unwrap();
}

#[test]
fn listener_without_alpn_offers_what_its_routes_name() {
    let c =
        alpn_listener("", &["sni = [\"a.test\"]\nalpn = [\"h2\"]", "alpn = [\"http/1.1\", \"h2\"]"]).unwrap();
    assert_eq!(c.terminate.unwrap().listener[0].offered_alpn(), vec!["h2", "http/1.1"]);
    // A route taking any protocol leaves the offer unknown: the listener must list it.
    let err = alpn_listener("", &["sni = [\"a.test\"]\nalpn = [\"h2\"]", ""]).unwrap_err().to_string();
    assert!(err.starts_with("terminate.listener[0] (web) route[1]:"), "{err}");
    assert!(err.contains("has no `alpn` list"), "{err}");
    // No ALPN anywhere: none offered.
    assert!(alpn_listener("", &[""]).unwrap().terminate.unwrap().listener[0].offered_alpn().is_empty());
}

#[test]
fn route_alpn_that_could_never_match_is_refused() {
    let offer = "alpn = [\"http/1.1\"]";
    let cases: [(&str, &[&str], &str); 5] = [
        (
            offer,
            &["sni = [\"a.test\"]\nalpn = [\"h2\"]", ""],
            "terminate.listener[0] (web) route[0]: alpn \"h2\" is not offered by the listener \
             (its alpn is [\"http/1.1\"]), so this route could never match",
        ),
        (offer, &["alpn = [\"\"]"], "route[0]: ALPN protocol \"\" must be 1 to 255 bytes"),
        (
            "alpn = [\"h2\"]",
            &["alpn = [\"h2\"]", "alpn = [\"h2\"]"],
            "route[1]: alpn \"h2\" without sni is already taken by route[0]",
        ),
        (
            "alpn = [\"h2\"]",
            &["alpn = [\"h2\"]\nhttp_headers = true"],
            "http_headers relays HTTP/1.x, but this route takes \"h2\"",
        ),
        (offer, &["", ""], "more than one default route"),
    ];
    for (keys, routes, want) in cases {
        let err = alpn_listener(keys, routes).unwrap_err().to_string();
        assert!(err.contains(want), "{routes:?}: got {err}");
    }
    let err = alpn_listener(offer, &["sni = [\"a.test\"]\nalpn = \"h2\""]).unwrap_err().to_string();
    assert!(err.contains("invalid type"), "alpn is a list: {err}");
}

#[test]
fn directed_listeners_need_their_control_socket() {
    let directed =
        minimal("").replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:0\"\ndirected = true");
    let err = Config::from_toml(&directed).unwrap_err().to_string();
    assert!(err.contains("directed needs [terminate]'s control socket"), "{err}");
    let with_control = format!("[terminate]\ncontrol = \"/run/c.sock\"\n{directed}");
    let c = Config::from_toml(&with_control).unwrap();
    assert!(c.terminate.unwrap().listener[0].directed);
    let originate = "[originate]\ncontrol = \"/run/c.sock\"\n[[originate.listener]]\nlisten = \"127.0.0.1:0\"\nupstreams = [\"a:1\"]\n";
    let err = Config::from_toml(&format!("{with_control}\n{originate}")).unwrap_err().to_string();
    assert!(err.contains("each needs its own socket"), "{err}");
}

#[test]
fn directed_originate_names_its_client_identities_and_paths_are_the_config_files() {
    let section = |extra: &str| {
        format!(
            "[originate]\ncontrol = \"run/c.sock\"\n[[originate.listener]]\nlisten = \"127.0.0.1:0\"\n\
             upstreams = [\"a:1\"]\n{extra}\n[originate.listener.client_identities]\n\
             alpha = {{ cert = \"a.pem\", key = \"a.key\" }}\n"
        )
    };
    let err = Config::from_toml(&section("")).unwrap_err().to_string();
    assert!(err.contains("client_identities are for directed listeners"), "{err}");
    let text = section("directed = true");
    Config::from_toml(&text).unwrap();
    let bad = text.replace("alpha =", "\"a b\" =");
    assert!(Config::from_toml(&bad).unwrap_err().to_string().contains("client identity name \"a b\""));

    let dir = std::env::temp_dir().join(format!("tlsgate-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gate.toml");
    std::fs::write(&file, &text).unwrap();
    let o = Config::load(&file).unwrap().originate.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(o.control.unwrap(), dir.join("run/c.sock"));
    let alpha = &o.listener[0].client_identities["alpha"];
    assert_eq!((alpha.cert.clone(), alpha.key.clone()), (dir.join("a.pem"), dir.join("a.key")));
}
