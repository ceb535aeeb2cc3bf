//! Server-name matching: exact names and `*.` wildcards, as certificates and routes use them.
//!
//! Matching follows RFC 6125 as browsers apply it: a wildcard stands for exactly one left-most
//! label (`*.example.com` matches `a.example.com`, not `example.com` nor `a.b.example.com`), and
//! names compare case-insensitively with any trailing dot ignored.

/// A DNS name pattern: exact, or a wildcard over one left-most label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePattern {
    Exact(String),
    /// Holds the suffix after `*.`, lower-cased.
    Wildcard(String),
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPattern(pub String);

impl std::fmt::Display for BadPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid server name pattern {:?}", self.0)
    }
}

impl std::error::Error for BadPattern {}

impl NamePattern {
    pub fn parse(s: &str) -> Result<Self, BadPattern> {
        let norm = normalize(s);
        let (wild, rest) = match norm.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, norm.clone()),
        };
        let valid = !rest.is_empty()
            && rest.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !valid {
            return Err(BadPattern(s.to_string()));
        }
        Ok(if wild { NamePattern::Wildcard(rest) } else { NamePattern::Exact(rest) })
    }

    /// Whether `name` (as sent in SNI) is covered by this pattern.
    pub fn matches(&self, name: &str) -> bool {
        let name = normalize(name);
        match self {
            NamePattern::Exact(exact) => *exact == name,
            NamePattern::Wildcard(suffix) => match name.split_once('.') {
                Some((first, rest)) => !first.is_empty() && rest == suffix,
                None => false,
            },
        }
    }
}

impl std::fmt::Display for NamePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamePattern::Exact(n) => f.write_str(n),
            NamePattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

fn normalize(s: &str) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}

/// A lookup table from server names to values: exact names win over wildcards, and an optional
/// default answers names nothing matches (and connections without SNI).
#[derive(Debug, Clone)]
pub struct NameTable<T> {
    entries: Vec<(NamePattern, T)>,
    default: Option<T>,
}

impl<T> Default for NameTable<T> {
    fn default() -> Self {
        Self { entries: Vec::new(), default: None }
    }
}

impl<T> NameTable<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, pattern: NamePattern, value: T) {
        self.entries.push((pattern, value));
    }

    pub fn set_default(&mut self, value: T) {
        self.default = Some(value);
    }

    pub fn default_value(&self) -> Option<&T> {
        self.default.as_ref()
    }

    /// The value for `name`: first an exact match, then a wildcard, then the default.
    pub fn lookup(&self, name: Option<&str>) -> Option<&T> {
        let Some(name) = name else {
            return self.default.as_ref();
        };
        let exact = self.entries.iter().find(|(p, _)| matches!(p, NamePattern::Exact(_)) && p.matches(name));
        let wild =
            || self.entries.iter().find(|(p, _)| matches!(p, NamePattern::Wildcard(_)) && p.matches(name));
        exact.or_else(wild).map(|(_, v)| v).or(self.default.as_ref())
    }

    pub fn patterns(&self) -> impl Iterator<Item = &NamePattern> {
        self.entries.iter().map(|(p, _)| p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard() {
        let p = NamePattern::parse("*.Example.com.").unwrap();
        assert!(p.matches("a.example.com"));
        assert!(p.matches("A.EXAMPLE.COM."));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("a.b.example.com"));
        let e = NamePattern::parse("example.com").unwrap();
        assert!(e.matches("EXAMPLE.com"));
        assert!(!e.matches("a.example.com"));
    }

    #[test]
    fn rejects_bad_patterns() {
        for bad in ["", "*.", "a..b", "*", "a.*.b", "exa mple.com", "*.*.a"] {
            assert!(NamePattern::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn table_prefers_exact_then_wildcard_then_default() {
        let mut t = NameTable::new();
        t.insert(NamePattern::parse("*.example.com").unwrap(), "wild");
        t.insert(NamePattern::parse("www.example.com").unwrap(), "exact");
        assert_eq!(t.lookup(Some("www.example.com")), Some(&"exact"));
        assert_eq!(t.lookup(Some("api.example.com")), Some(&"wild"));
        assert_eq!(t.lookup(Some("other.org")), None);
        assert_eq!(t.lookup(None), None);
        t.set_default("default");
        assert_eq!(t.lookup(Some("other.org")), Some(&"default"));
        assert_eq!(t.lookup(None), Some(&"default"));
    }
}
