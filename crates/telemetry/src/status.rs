//! The status page: listeners, routes, backend health, live connections and the inline engine's
//! tables, as HTML.

use crate::conns::ConnSnapshot;

/// What the running modes report about their configuration and backends.
pub trait StatusSource: Send + Sync {
    fn listeners(&self) -> Vec<ListenerStatus>;

    /// The inline engine's tables and counters, when it runs.
    fn inline(&self) -> Option<crate::inline::InlineView> {
        None
    }
}

#[derive(Debug, Clone)]
pub struct ListenerStatus {
    pub name: String,
    pub addr: String,
    pub routes: Vec<RouteStatus>,
}

#[derive(Debug, Clone)]
pub struct RouteStatus {
    pub label: String,
    pub balance: String,
    pub backends: Vec<BackendStatus>,
}

#[derive(Debug, Clone)]
pub struct BackendStatus {
    pub addr: String,
    pub up: bool,
    pub active: u32,
    pub total: u64,
}

/// The whole page. Every value is escaped: SNI and certificate names come from clients.
pub fn render(
    listeners: &[ListenerStatus],
    conns: &[ConnSnapshot],
    inline: Option<&crate::inline::InlineView>,
) -> String {
    let mut h = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>tlsgate status</title>\
         <style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1.5em}\
         td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}.down{color:#b00}.up{color:#070}</style>\
         </head><body><h1>tlsgate status</h1>",
    );
    h.push_str("<h2>Listeners and routes</h2><table id=\"routes\"><tr><th>listener</th><th>address</th><th>route</th><th>balance</th><th>backend</th><th>health</th><th>open</th><th>total</th></tr>");
    for l in listeners {
        for r in &l.routes {
            for b in &r.backends {
                let (class, word) = if b.up { ("up", "up") } else { ("down", "down") };
                h.push_str(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{word}</td><td>{}</td><td>{}</td></tr>",
                    esc(&l.name), esc(&l.addr), esc(&r.label), esc(&r.balance), esc(&b.addr), b.active, b.total
                ));
            }
        }
    }
    h.push_str("</table>");
    h.push_str(&format!("<h2>Live connections ({})</h2>", conns.len()));
    h.push_str("<table id=\"connections\"><tr><th>listener</th><th>client</th><th>SNI</th><th>version</th><th>suite</th><th>identity</th><th>record layer</th><th>backend</th><th>state</th><th>bytes up</th><th>bytes down</th><th>age (s)</th></tr>");
    for c in conns {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.listener), c.client, esc(&c.sni), esc(&c.version), esc(&c.suite), esc(&c.identity), esc(&c.record_layer), esc(&c.backend), esc(&c.state), c.up, c.down, c.age_secs
        ));
    }
    h.push_str("</table>");
    if let Some(v) = inline {
        h.push_str(&crate::inline::html(v));
    }
    if let Some(v) = crate::fleet::view() {
        h.push_str(&crate::fleet::html(&v));
    }
    h.push_str("</body></html>\n");
    h
}

pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_supplied_text_is_escaped() {
        let conns = [ConnSnapshot {
            listener: "l".into(),
            client: "127.0.0.1:5".parse().unwrap(),
            sni: "<script>alert(1)</script>".into(),
            version: String::new(),
            suite: String::new(),
            identity: "CN=\"x\" & y".into(),
            record_layer: String::new(),
            backend: String::new(),
            state: String::new(),
            age_secs: 0,
            up: 0,
            down: 0,
        }];
        let page = render(&[], &conns, None);
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;script&gt;") && page.contains("CN=&quot;x&quot; &amp; y"));
    }
}
