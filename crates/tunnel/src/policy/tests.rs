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
    assert!(p.check_resolved(Protocol::TCP, &t, "203.0.113.5".parse().unwrap(), false).is_allowed());
    let d = p.check_resolved(Protocol::TCP, &t, "127.0.0.1".parse().unwrap(), false);
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
        (
            "allow tcp 10.0.0.0/8 22 to 10.0.0.0/8",
            "`to` limits what a name resolves to: not for an address rule",
        ),
        ("allow tcp corp.example 22 to", "`to` needs addresses"),
        ("allow tcp corp.example 22 to 10.0.0.0/33", "prefix length too long"),
        ("allow tcp corp.example 22 to 10.0.0.0/8 extra", "trailing words"),
    ] {
        assert_eq!(Policy::parse(text).unwrap_err().why, why, "{text}");
    }
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The unspecified address in every spelling the gate may meet (as an address, and as names
/// getaddrinfo turns into 0.0.0.0), loopback of both families and link-local: past a loopback
/// deny, past `allow any *`, TCP and UDP alike.
#[test]
fn unspecified_loopback_and_link_local_need_a_rule_naming_them() {
    let p = Policy::parse("deny any 127.0.0.0/8\nallow any *").unwrap();
    for proto in [Protocol::TCP, Protocol::UDP] {
        for a in
            ["0.0.0.0", "0.1.2.3", "::", "127.0.0.1", "::1", "::ffff:127.0.0.1", "169.254.169.254", "fe80::1"]
        {
            let d = p.check(proto, &ip(a, 9900));
            assert!(!d.is_allowed(), "{a} {proto:?}: {d:?}");
            assert!(!p.check_resolved(proto, &ip(a, 9900), addr(a), false).is_allowed(), "{a}");
        }
        // "0" and "0x0" are names to the policy; they resolve to 0.0.0.0 and are refused there.
        for n in ["0", "0x0", "localhost", "rebind.example"] {
            let t = name(n, 9900);
            assert!(p.check(proto, &t).is_allowed(), "{n}: the name itself is allowed by *");
            for a in ["0.0.0.0", "127.0.0.1", "::1", "169.254.169.254"] {
                let d = p.check_resolved(proto, &t, addr(a), false);
                assert!(!d.is_allowed(), "{n} -> {a}: {d:?}");
            }
        }
    }
    let d = p.check(Protocol::TCP, &ip("::1", 22));
    assert_eq!(
        d,
        Decision::Deny { reason: "[::1]:22 is a loopback address: only a rule naming it allows it".into() }
    );
    // 0.0.0.0/0 does not name them either; a rule that does, wherever it stands, does.
    let p =
        Policy::parse("allow tcp 0.0.0.0/0\nallow tcp ::/0\nallow tcp 127.0.0.1 8080\nallow tcp ::1 8080")
            .unwrap();
    assert!(!p.check(Protocol::TCP, &ip("127.0.0.1", 9900)).is_allowed());
    assert!(!p.check(Protocol::TCP, &ip("0.0.0.0", 8080)).is_allowed());
    assert!(p.check(Protocol::TCP, &ip("127.0.0.1", 8080)).is_allowed());
    assert!(p.check(Protocol::TCP, &ip("::1", 8080)).is_allowed());
    assert!(p.check(Protocol::TCP, &ip("192.0.2.1", 9900)).is_allowed(), "ordinary addresses as before");
}

#[test]
fn the_gates_own_addresses_need_a_rule_naming_them() {
    let p = Policy::parse("allow tcp 10.0.0.0/8\nallow tcp 10.0.0.7 443").unwrap();
    let own = addr("10.0.0.5");
    assert!(p.check_resolved(Protocol::TCP, &ip("10.0.0.5", 9900), own, false).is_allowed(), "not own");
    let d = p.check_resolved(Protocol::TCP, &ip("10.0.0.5", 9900), own, true);
    assert_eq!(
        d,
        Decision::Deny {
            reason: "10.0.0.5:9900 is one of the gate's own addresses: only a rule naming it allows it"
                .into()
        }
    );
    assert!(p.check_resolved(Protocol::TCP, &ip("10.0.0.7", 443), addr("10.0.0.7"), true).is_allowed());
}

/// DNS rebinding: a name rule constrains what its names may resolve to.
#[test]
fn a_name_rule_says_where_its_names_may_resolve() {
    let p = Policy::parse("allow tcp allowed.test 8080").unwrap();
    let t = name("allowed.test", 8080);
    assert!(p.check_resolved(Protocol::TCP, &t, addr("203.0.113.9"), false).is_allowed());
    for a in
        ["127.0.0.1", "::1", "0.0.0.0", "10.1.2.3", "192.168.1.1", "172.16.0.1", "fd00::1", "169.254.169.254"]
    {
        assert!(!p.check_resolved(Protocol::TCP, &t, addr(a), false).is_allowed(), "{a}");
    }
    assert_eq!(
        p.check_resolved(Protocol::TCP, &t, addr("127.0.0.1"), false).refusal().unwrap().1,
        "allowed.test:8080 resolves to 127.0.0.1, a loopback address: a name reaches it only with `to` in \
         its rule or a rule naming the address"
    );
    // `to` lists the addresses; an address rule naming one lets names reach it too.
    let p = Policy::parse(
        "deny any 10.9.0.0/16\n\
         allow tcp db.corp.example 5432 to 10.0.0.0/8\n\
         allow tcp 192.168.7.0/24\n\
         allow tcp web.corp.example\n\
         allow tcp dev.example to 127.0.0.1",
    )
    .unwrap();
    let db = name("db.corp.example", 5432);
    assert!(p.check_resolved(Protocol::TCP, &db, addr("10.1.2.3"), false).is_allowed());
    assert!(!p.check_resolved(Protocol::TCP, &db, addr("10.9.0.1"), false).is_allowed(), "deny still first");
    assert!(!p.check_resolved(Protocol::TCP, &db, addr("203.0.113.1"), false).is_allowed(), "outside `to`");
    assert!(!p.check_resolved(Protocol::TCP, &db, addr("127.0.0.1"), false).is_allowed());
    let web = name("web.corp.example", 80);
    assert!(p.check_resolved(Protocol::TCP, &web, addr("192.168.7.4"), false).is_allowed());
    assert!(!p.check_resolved(Protocol::TCP, &web, addr("192.168.8.4"), false).is_allowed());
    let dev = name("dev.example", 3000);
    assert!(p.check_resolved(Protocol::TCP, &dev, addr("127.0.0.1"), false).is_allowed());
    assert!(!p.check_resolved(Protocol::TCP, &dev, addr("127.0.0.2"), false).is_allowed());
}

#[test]
fn a_gate_without_rules_is_unrestricted() {
    let p = Policy::unrestricted();
    assert!(p.check(Protocol::TCP, &ip("127.0.0.1", 1)).is_allowed());
    assert!(p.check_resolved(Protocol::UDP, &name("localhost", 1), addr("::1"), true).is_allowed());
}

#[test]
fn an_ipv4_only_loopback_deny_is_warned_about() {
    let warned = |text: &str| Policy::parse(text).unwrap().warnings();
    assert_eq!(warned("deny any 127.0.0.0/8\nallow any *").len(), 1);
    assert!(warned("deny any 127.0.0.0/8\ndeny any ::1\nallow any *").is_empty());
    assert!(warned("allow tcp 10.0.0.0/8").is_empty());
}
