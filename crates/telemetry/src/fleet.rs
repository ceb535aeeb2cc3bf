//! The fleet's shared session state as /status shows it: whether Redis answers, which ticket key
//! period the process issues with, and whether that key is the fleet's or only its own.

use std::sync::{Mutex, OnceLock};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetView {
    /// The Redis URL without its password.
    pub redis: String,
    pub reachable: bool,
    /// The last error talking to Redis (empty while it answers).
    pub last_error: String,
    /// The ticket key period issued with, and whether that key came from (or reached) Redis.
    pub issuing_period: u64,
    pub issuing_shared: bool,
    /// Ticket key periods held (decryption accepts the issuing one and its neighbours).
    pub periods_held: Vec<u64>,
}

fn slot() -> &'static Mutex<Option<FleetView>> {
    static SLOT: OnceLock<Mutex<Option<FleetView>>> = OnceLock::new();
    SLOT.get_or_init(|| Mutex::new(None))
}

/// Publishes the fleet's state (the fleet task calls this on every change).
pub fn publish(view: FleetView) {
    *slot().lock().unwrap_or_else(|e| e.into_inner()) = Some(view);
}

/// The fleet's state, when this process is part of one.
pub fn view() -> Option<FleetView> {
    slot().lock().unwrap_or_else(|e| e.into_inner()).clone()
}

pub(crate) fn json(v: &FleetView) -> serde_json::Value {
    serde_json::json!({
        "redis": v.redis,
        "reachable": v.reachable,
        "last_error": v.last_error,
        "issuing_period": v.issuing_period,
        "issuing_shared": v.issuing_shared,
        "periods_held": v.periods_held,
    })
}

pub(crate) fn html(v: &FleetView) -> String {
    let (class, word) = if v.reachable {
        ("up", "reachable")
    } else {
        ("down", "unreachable: issuing with the last keys held")
    };
    let held: Vec<String> = v.periods_held.iter().map(|p| p.to_string()).collect();
    format!(
        "<h2>Fleet</h2><table id=\"fleet\"><tr><th>redis</th><th>state</th><th>last error</th><th>issuing period</th><th>shared</th><th>periods held</th></tr>\
         <tr><td>{}</td><td class=\"{class}\">{word}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        crate::status::esc(&v.redis),
        crate::status::esc(&v.last_error),
        v.issuing_period,
        if v.issuing_shared { "yes" } else { "no (this instance only)" },
        held.join(", ")
    )
}
