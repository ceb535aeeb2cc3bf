//! The portal's routes: host patterns whose CONNECTs go through the gate, and the PAC file
//! (proxy auto-config) that sends a browser's requests for them to the portal.

use tlsgate_core::names::NamePattern;
use tlsgate_tunnel::addr::Host;

/// One route: `*` (every host), `name`, `*.name` (one label under it) or `.name` (the name and
/// every name under it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Any,
    Exact(NamePattern),
    Suffix(String),
}

impl Route {
    pub fn parse(s: &str) -> Result<Route, String> {
        let s = s.trim().trim_end_matches('.').to_ascii_lowercase();
        if s == "*" {
            return Ok(Route::Any);
        }
        if let Some(rest) = s.strip_prefix('.') {
            NamePattern::parse(rest).map_err(|e| e.to_string())?;
            return Ok(Route::Suffix(rest.to_string()));
        }
        Ok(Route::Exact(NamePattern::parse(&s).map_err(|e| e.to_string())?))
    }

    pub fn matches(&self, host: &Host) -> bool {
        let name = match host {
            Host::Name(n) => n.trim_end_matches('.').to_ascii_lowercase(),
            Host::Ip(ip) => return matches!(self, Route::Any) || self.exact_text() == Some(ip.to_string()),
        };
        match self {
            Route::Any => true,
            Route::Exact(p) => p.matches(&name),
            Route::Suffix(s) => name == *s || name.strip_suffix(s.as_str()).is_some_and(|h| h.ends_with('.')),
        }
    }

    fn exact_text(&self) -> Option<String> {
        match self {
            Route::Exact(NamePattern::Exact(n)) => Some(n.clone()),
            _ => None,
        }
    }

    /// The PAC condition for this route.
    fn pac(&self) -> String {
        match self {
            Route::Any => "true".into(),
            Route::Exact(NamePattern::Exact(n)) => format!("host == \"{n}\""),
            // One label under the suffix, as in certificates.
            Route::Exact(NamePattern::Wildcard(s)) => {
                format!(
                    "(dnsDomainIs(host, \".{s}\") && host.split(\".\").length == {})",
                    s.split('.').count() + 1
                )
            }
            Route::Suffix(s) => format!("(host == \"{s}\" || dnsDomainIs(host, \".{s}\"))"),
        }
    }
}

/// The routes of a portal.
#[derive(Clone, Debug, Default)]
pub struct Routes(pub Vec<Route>);

impl Routes {
    pub fn parse(list: &[String]) -> Result<Routes, String> {
        list.iter()
            .map(|r| Route::parse(r).map_err(|e| format!("route {r:?}: {e}")))
            .collect::<Result<_, _>>()
            .map(Routes)
    }

    pub fn matches(&self, host: &Host) -> bool {
        self.0.iter().any(|r| r.matches(host))
    }

    /// A PAC file (`FindProxyForURL`) sending routed hosts to `proxy` (`127.0.0.1:3128`); others
    /// go `DIRECT` when the portal lets them, else to the portal too (which refuses them, so the
    /// browser shows an error instead of bypassing the policy).
    pub fn pac(&self, proxy: &str, direct: bool) -> String {
        let cond = if self.0.is_empty() {
            "false".to_string()
        } else {
            self.0.iter().map(Route::pac).collect::<Vec<_>>().join(" ||\n        ")
        };
        let other = if direct { "DIRECT" } else { "PROXY {proxy}" }.replace("{proxy}", proxy);
        format!(
            "function FindProxyForURL(url, host) {{\n    host = host.toLowerCase();\n    if ({cond})\n        return \"PROXY {proxy}\";\n    return \"{other}\";\n}}\n"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> Host {
        Host::Name(n.into())
    }

    #[test]
    fn routes_match_names_as_written() {
        let r = Routes::parse(&["internal.test".into(), "*.apps.test".into(), ".corp.test".into()]).unwrap();
        for yes in ["internal.test", "INTERNAL.test.", "a.apps.test", "corp.test", "x.y.corp.test"] {
            assert!(r.matches(&name(yes)), "{yes}");
        }
        for no in ["x.internal.test", "apps.test", "a.b.apps.test", "xcorp.test", "example.com"] {
            assert!(!r.matches(&name(no)), "{no}");
        }
        assert!(!r.matches(&Host::Ip([127, 0, 0, 1].into())));
        assert!(Routes::parse(&["*".into()]).unwrap().matches(&Host::Ip([127, 0, 0, 1].into())));
        assert!(Routes::parse(&["bad name".into()]).is_err());
    }

    #[test]
    fn the_pac_file_names_every_route() {
        let r = Routes::parse(&["internal.test".into(), ".corp.test".into()]).unwrap();
        let pac = r.pac("127.0.0.1:3128", true);
        assert!(pac.contains("host == \"internal.test\""), "{pac}");
        assert!(pac.contains("dnsDomainIs(host, \".corp.test\")"), "{pac}");
        assert!(pac.contains("return \"DIRECT\""), "{pac}");
        assert!(r.pac("127.0.0.1:3128", false).contains("return \"PROXY 127.0.0.1:3128\";\n}"));
    }
}
