use super::*;

fn ip(s: &str, port: u16) -> Target {
    Target::ip(s.parse::<IpAddr>().unwrap(), port)
}

fn name(s: &str, port: u16) -> Target {
    Target::name(s, port).unwrap()
}

#[test]
fn cidr_matching_at_the_edges() {
    let c: Cidr = "10.1.0.0/16".parse().unwrap();
    assert!(c.contains("10.1.255.255".parse().unwrap()));
    assert!(!c.contains("10.2.0.0".parse().unwrap()));
    assert!(!c.contains("::ffff:10.1.0.1".parse().unwrap()), "families do not mix");
    let host: Cidr = "192.0.2.7".parse().unwrap();
    assert!(host.contains("192.0.2.7".parse().unwrap()) && !host.contains("192.0.2.8".parse().unwrap()));
    let all: Cidr = "0.0.0.0/0".parse().unwrap();
    assert!(all.contains("255.255.255.255".parse().unwrap()));
    let v6: Cidr = "2001:db8::/32".parse().unwrap();
    assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()) && !v6.contains("2001:db9::".parse().unwrap()));
    assert_eq!("10.0.0.0/33".parse::<Cidr>().unwrap_err().why, "prefix length too long");
    assert!("10.0.0/8".parse::<Cidr>().is_err());
}

#[test]
fn suffixes_match_on_label_boundaries() {
    let p = Policy::parse("allow tcp corp.example\nallow tcp *.svc.example").unwrap();
    assert!(p.check(Protocol::TCP, &name("corp.example", 1)).is_allowed());
    assert!(p.check(Protocol::TCP, &name("DB.Corp.Example", 1)).is_allowed());
    assert!(!p.check(Protocol::TCP, &name("xcorp.example", 1)).is_allowed());
    assert!(!p.check(Protocol::TCP, &name("corp.example.evil", 1)).is_allowed());
    assert!(p.check(Protocol::TCP, &name("a.svc.example", 1)).is_allowed());
    assert!(!p.check(Protocol::TCP, &name("svc.example", 1)).is_allowed());
}

#[test]
fn ports_protocols_and_first_match_order() {
    let p = Policy::parse(
        "# internal services\n\
         deny any 10.0.0.99\n\
         allow tcp 10.0.0.0/8 22,443,8000-8999\n\
         allow udp 10.0.0.53 53\n",
    )
    .unwrap();
    assert!(p.check(Protocol::TCP, &ip("10.9.9.9", 8500)).is_allowed());
    assert!(p.check(Protocol::TCP, &ip("10.9.9.9", 22)).is_allowed());
    assert!(!p.check(Protocol::TCP, &ip("10.9.9.9", 23)).is_allowed());
    assert!(!p.check(Protocol::UDP, &ip("10.9.9.9", 443)).is_allowed());
    assert!(p.check(Protocol::UDP, &ip("10.0.0.53", 53)).is_allowed());
    assert_eq!(
        p.check(Protocol::TCP, &ip("10.0.0.99", 22)),
        Decision::Deny { reason: "10.0.0.99:22 denied by rule 1".into() }
    );
    assert_eq!(
        p.check(Protocol::TCP, &ip("192.0.2.1", 22)),
        Decision::Deny { reason: "192.0.2.1:22 not allowed".into() }
    );
    // An IPv4-mapped IPv6 address is the IPv4 address.
    assert!(!p.check(Protocol::TCP, &ip("::ffff:10.0.0.99", 22)).is_allowed());
    // A name is never matched by a CIDR rule, even if it would resolve inside it.
    assert!(!p.check(Protocol::TCP, &name("intranet.example", 22)).is_allowed());
}

#[test]
fn resolved_address_is_rechecked_against_deny_rules() {
    let p = Policy::parse("deny any 127.0.0.0/8\ndeny any 169.254.0.0/16\nallow tcp partner.example 443")
        .unwrap();
    let t = name("api.partner.example", 443);
    assert!(p.check(Protocol::TCP, &t).is_allowed());
    assert!(p.check_resolved(Protocol::TCP, &t, "203.0.113.5".parse().unwrap()).is_allowed());
    let d = p.check_resolved(Protocol::TCP, &t, "127.0.0.1".parse().unwrap());
    assert_eq!(
        d.refusal(),
        Some((OpenRc::REFUSED_BY_POLICY, "api.partner.example:443 resolves to 127.0.0.1 denied by rule 1"))
    );
}

#[test]
fn identities_get_their_own_policy_or_the_default() {
    let mut set = PolicySet::default();
    set.identities.insert("alice".into(), Policy::parse("allow any *").unwrap());
    let t = ip("10.0.0.1", 80);
    assert!(set.check("alice", Protocol::TCP, &t).is_allowed());
    assert_eq!(
        set.check("mallory", Protocol::TCP, &t),
        Decision::Deny { reason: "no policy for identity \"mallory\"".into() }
    );
    set.default = Some(Policy::parse("allow tcp 10.0.0.0/8 80").unwrap());
    assert!(set.check("mallory", Protocol::TCP, &t).is_allowed());
    assert!(!set.check("mallory", Protocol::UDP, &t).is_allowed());
}

#[test]
fn bad_rules_are_refused_with_a_reason() {
    for (text, why) in [
        ("permit tcp * 1", "rule must start with allow or deny"),
        ("allow icmp *", "protocol must be tcp, udp or any"),
        ("allow tcp", "missing destination"),
        ("allow tcp * 99999", "bad port"),
        ("allow tcp * 10-5", "port range runs backwards"),
        ("allow tcp bad..name", "bad host suffix"),
        ("allow tcp * 1 extra", "trailing words"),
    ] {
        assert_eq!(Policy::parse(text).unwrap_err().why, why, "{text}");
    }
}
