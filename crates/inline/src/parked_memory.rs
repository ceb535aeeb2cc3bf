//! Where a parked flow's memory comes from.
//!
//! A flow is parked long after its handshake, while other flows are still in theirs: the
//! allocator would put its compact form in the free blocks of pages the handshakes use, and
//! one parked flow then keeps a whole page resident after everything else on it was freed. So
//! the engine makes what a parked flow keeps (its compact form, its flow-table entry, the SNI,
//! the secrets) inside [`parked`], and a binary that can (its allocator has separate heaps)
//! installs a scope ([`install`]) that serves those allocations from a heap of their own:
//! parked flows then fill their own pages densely, and the pages of finished handshakes empty
//! completely and can go back to the system. Without a scope installed [`parked`] just runs.

use std::sync::OnceLock;

/// Runs the closure given with allocations served from the parked flows' heap.
pub type Scope = fn(&mut dyn FnMut());

static SCOPE: OnceLock<Scope> = OnceLock::new();

/// Installs the allocator's scope for parked state, once per process (a later call is
/// ignored: the allocator is the process's).
pub fn install(scope: Scope) {
    let _ = SCOPE.set(scope);
}

/// Runs `f` in the installed scope: what it allocates and keeps is a parked flow's.
pub(crate) fn parked<T>(f: impl FnOnce() -> T) -> T {
    let Some(scope) = SCOPE.get() else { return f() };
    let (mut f, mut out) = (Some(f), None);
    scope(&mut || out = f.take().map(|f| f()));
    out.expect("the parked-memory scope runs its closure once")
}
