//! The service manager's notifications (sd_notify(3)) for `Type=notify` units: READY=1 once every
//! listener is bound, RELOADING=1 and READY=1 around a reload, STOPPING=1 on the way out, and
//! WATCHDOG=1 at half of WATCHDOG_USEC. Without NOTIFY_SOCKET in the environment each is a no-op.

use std::sync::Once;

use sd_notify::NotifyState;

/// Every listener is bound (at start, and again after a reload, applied or refused).
pub fn ready() {
    send(&[NotifyState::Ready]);
    static WATCHDOG: Once = Once::new();
    WATCHDOG.call_once(start_watchdog);
}

/// A reload begins. systemd wants the monotonic clock with it, to tell this reload from a
/// later one.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => tracing::warn!(error = %e, "service manager notification: cannot read the monotonic clock"),
    }
}

/// Shutting down: systemd should not count the exit as a crash or restart us meanwhile.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Pings from a runtime task, so the pings stop when the runtime does.
fn start_watchdog() {
    let Some(period) = sd_notify::watchdog_enabled() else { return };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(period / 2);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "service manager notification failed");
    }
}
