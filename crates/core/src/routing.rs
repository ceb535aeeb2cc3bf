//! Route choice for terminated connections: by server name (SNI) and by the application
//! protocol the handshake negotiated (ALPN, RFC 7301).
//!
//! A route lists names (none: any name, including no SNI) and protocols (none: any protocol,
//! including none negotiated). Among the routes that match, the most specific wins: first by
//! name (an exact name, then a wildcard, then a route without names), then by protocol (a route
//! naming the negotiated protocol, then one taking any). Routes equally specific are taken in
//! the order they were added.
//!
//! The name is known when the ClientHello arrives, the protocol only once the handshake chose it:
//! [`RouteTable::serves`] answers the first question (is there any route for this name?), and
//! [`RouteTable::lookup`] the final one.

use crate::names::NamePattern;

/// Routes in configuration order.
#[derive(Debug, Clone)]
pub struct RouteTable<T> {
    routes: Vec<Entry<T>>,
}

#[derive(Debug, Clone)]
struct Entry<T> {
    names: Vec<NamePattern>,
    alpn: Vec<Vec<u8>>,
    value: T,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable { routes: Vec::new() }
    }
}

/// How closely a route's names fit a server name; higher is more specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum NameFit {
    AnyName,
    Wildcard,
    Exact,
}

/// How closely a route's protocols fit the negotiated one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum AlpnFit {
    AnyProtocol,
    Named,
}

impl<T> Entry<T> {
    fn name_fit(&self, sni: Option<&str>) -> Option<NameFit> {
        if self.names.is_empty() {
            return Some(NameFit::AnyName);
        }
        let sni = sni?;
        let fits = |exact: bool| {
            self.names.iter().any(|p| matches!(p, NamePattern::Exact(_)) == exact && p.matches(sni))
        };
        if fits(true) {
            Some(NameFit::Exact)
        } else if fits(false) {
            Some(NameFit::Wildcard)
        } else {
            None
        }
    }

    fn alpn_fit(&self, alpn: Option<&[u8]>) -> Option<AlpnFit> {
        if self.alpn.is_empty() {
            return Some(AlpnFit::AnyProtocol);
        }
        let alpn = alpn?;
        self.alpn.iter().any(|p| p == alpn).then_some(AlpnFit::Named)
    }
}

impl<T> RouteTable<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route for `names` (empty: any) and `alpn` protocols (empty: any), after the others.
    pub fn push(&mut self, names: Vec<NamePattern>, alpn: Vec<Vec<u8>>, value: T) {
        self.routes.push(Entry { names, alpn, value });
    }

    /// Whether some route takes `sni` for some protocol: when none does, the client can be
    /// refused at its ClientHello.
    pub fn serves(&self, sni: Option<&str>) -> bool {
        self.routes.iter().any(|r| r.name_fit(sni).is_some())
    }

    /// The route for `sni` and the negotiated protocol `alpn` (`None`: none negotiated).
    pub fn lookup(&self, sni: Option<&str>, alpn: Option<&[u8]>) -> Option<&T> {
        let mut best: Option<((NameFit, AlpnFit), &T)> = None;
        for r in &self.routes {
            let (Some(name), Some(proto)) = (r.name_fit(sni), r.alpn_fit(alpn)) else { continue };
            // Strictly better only: an equally specific earlier route keeps its place.
            if best.as_ref().is_none_or(|(fit, _)| (name, proto) > *fit) {
                best = Some(((name, proto), &r.value));
            }
        }
        best.map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<NamePattern> {
        list.iter().map(|n| NamePattern::parse(n).unwrap()).collect()
    }

    fn alpn(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    /// One name, h2 to one pool, everything else to the default.
    fn h2_split() -> RouteTable<&'static str> {
        let mut t = RouteTable::new();
        t.push(names(&["app.test"]), alpn(&["h2"]), "app-h2");
        t.push(Vec::new(), Vec::new(), "default");
        t
    }

    #[test]
    fn negotiated_protocol_selects_among_routes_of_one_name() {
        let t = h2_split();
        assert_eq!(t.lookup(Some("app.test"), Some(b"h2")), Some(&"app-h2"));
        assert_eq!(t.lookup(Some("app.test"), Some(b"http/1.1")), Some(&"default"));
        assert_eq!(t.lookup(Some("app.test"), None), Some(&"default"), "no ALPN: only routes taking any");
        assert_eq!(t.lookup(Some("other.test"), Some(b"h2")), Some(&"default"));
        assert_eq!(t.lookup(None, Some(b"h2")), Some(&"default"));
    }

    #[test]
    fn a_route_naming_the_protocol_beats_one_taking_any_whatever_the_order() {
        let mut t = RouteTable::new();
        t.push(names(&["app.test"]), Vec::new(), "app-any");
        t.push(names(&["app.test"]), alpn(&["h2", "h3"]), "app-h2");
        assert_eq!(t.lookup(Some("app.test"), Some(b"h2")), Some(&"app-h2"));
        assert_eq!(t.lookup(Some("app.test"), Some(b"h3")), Some(&"app-h2"));
        assert_eq!(t.lookup(Some("app.test"), Some(b"http/1.1")), Some(&"app-any"));
        assert_eq!(t.lookup(Some("app.test"), None), Some(&"app-any"));
    }

    #[test]
    fn the_name_is_weighed_before_the_protocol() {
        let mut t = RouteTable::new();
        t.push(names(&["*.example.test"]), alpn(&["h2"]), "wild-h2");
        t.push(names(&["www.example.test"]), Vec::new(), "www-any");
        t.push(Vec::new(), alpn(&["h2"]), "default-h2");
        // The exact name wins though the wildcard route names the protocol.
        assert_eq!(t.lookup(Some("www.example.test"), Some(b"h2")), Some(&"www-any"));
        assert_eq!(t.lookup(Some("api.example.test"), Some(b"h2")), Some(&"wild-h2"));
        // A wildcard route that does not take the protocol falls through to the default.
        assert_eq!(t.lookup(Some("api.example.test"), Some(b"http/1.1")), None);
        assert_eq!(t.lookup(Some("other.test"), Some(b"h2")), Some(&"default-h2"));
        assert_eq!(t.lookup(Some("other.test"), Some(b"http/1.1")), None);
    }

    #[test]
    fn equally_specific_routes_keep_configuration_order() {
        let mut t = RouteTable::new();
        t.push(names(&["app.test"]), alpn(&["h2"]), "first");
        t.push(names(&["app.test"]), alpn(&["h2"]), "second");
        assert_eq!(t.lookup(Some("app.test"), Some(b"h2")), Some(&"first"));
    }

    #[test]
    fn serves_looks_at_names_only() {
        let mut t = RouteTable::new();
        t.push(names(&["app.test"]), alpn(&["h2"]), "app-h2");
        assert!(t.serves(Some("APP.test.")));
        assert!(!t.serves(Some("other.test")));
        assert!(!t.serves(None));
        // Served by name, but not for this protocol: decided only after the handshake.
        assert_eq!(t.lookup(Some("app.test"), Some(b"http/1.1")), None);
        t.push(Vec::new(), alpn(&["h2"]), "default-h2");
        assert!(t.serves(None));
        assert!(t.serves(Some("other.test")));
    }

    #[test]
    fn sni_only_tables_choose_as_before() {
        let mut t = RouteTable::new();
        t.push(names(&["*.example.com"]), Vec::new(), "wild");
        t.push(names(&["www.example.com"]), Vec::new(), "exact");
        assert_eq!(t.lookup(Some("www.example.com"), None), Some(&"exact"));
        assert_eq!(t.lookup(Some("api.example.com"), Some(b"h2")), Some(&"wild"));
        assert_eq!(t.lookup(Some("other.org"), None), None);
        assert_eq!(t.lookup(None, None), None);
        t.push(Vec::new(), Vec::new(), "default");
        assert_eq!(t.lookup(Some("other.org"), None), Some(&"default"));
        assert_eq!(t.lookup(None, Some(b"http/1.1")), Some(&"default"));
    }
}
