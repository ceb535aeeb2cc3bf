//! The binary's allocator: mimalloc, with a heap of its own per thread for the state of the
//! inline engine's parked flows (`tlsgate_inline::parked_memory`).
//!
//! Allocations made inside [`parked_scope`] come from that heap; everything else from the
//! thread's default heap, and any block is freed by mimalloc wherever it came from. Parked
//! flows' compact forms then share pages with each other only, not with the handshakes and
//! record buffers of flows still live, whose pages empty completely once those park and go back
//! to the system at the bridge's next release (`crate::memory::release`). Also used by
//! `crates/inline/benches/idle_flows.rs` (included by path), which measures the difference.

// A global allocator and calls into mimalloc's C interface.
#![allow(unsafe_code)]

use libmimalloc_sys as mi;
use mimalloc::MiMalloc;
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

/// mimalloc's guaranteed alignment: below it the plain (unaligned) calls serve.
const MIN_ALIGN: usize = 16;

/// See the module docs.
#[derive(Debug)]
pub struct Allocator;

thread_local! {
    /// This thread's heap for parked state, made on first use (null until then).
    static HEAP: Cell<*mut mi::mi_heap_t> = const { Cell::new(std::ptr::null_mut()) };
    /// Inside [`parked_scope`] on this thread.
    static PARKED: Cell<bool> = const { Cell::new(false) };
}

/// The heap to allocate from when inside [`parked_scope`]; `None` outside it (or when
/// mimalloc could not make one: the default heap serves then).
fn parked_heap() -> Option<*mut mi::mi_heap_t> {
    if !PARKED.with(Cell::get) {
        return None;
    }
    let heap = HEAP.with(|h| {
        if h.get().is_null() {
            // SAFETY: takes nothing; the heap belongs to this thread, the only one that
            // allocates from it (a thread-local), as mimalloc requires.
            h.set(unsafe { mi::mi_heap_new() });
        }
        h.get()
    });
    (!heap.is_null()).then_some(heap)
}

/// Runs `f` with this thread's allocations served from its parked-state heap (installed as
/// the engine's scope: `tlsgate_inline::parked_memory::install`).
pub fn parked_scope(f: &mut dyn FnMut()) {
    /// Puts the flag back as it was, also when `f` unwinds (the engine catches a flow's panic).
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            PARKED.with(|p| p.set(self.0));
        }
    }
    let _restore = Restore(PARKED.with(|p| p.replace(true)));
    f();
}

/// Gives this thread's parked-state heap's free pages back (after flows woke and left holes
/// that no new parking filled): part of `crate::memory::release`.
pub fn collect_parked() {
    let heap = HEAP.with(Cell::get);
    if !heap.is_null() {
        // SAFETY: the heap is this thread's own, made by `parked_heap`, never deleted.
        unsafe { mi::mi_heap_collect(heap, true) };
    }
}

// SAFETY: every block comes from mimalloc with the layout's size and alignment; mimalloc frees
// and reallocates a block whichever of the thread's heaps (or another thread's) it came from.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        match parked_heap() {
            Some(h) if l.align() <= MIN_ALIGN => mi::mi_heap_malloc(h, l.size()).cast(),
            Some(h) => mi::mi_heap_malloc_aligned(h, l.size(), l.align()).cast(),
            None => MiMalloc.alloc(l),
        }
    }

    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        match parked_heap() {
            Some(h) if l.align() <= MIN_ALIGN => mi::mi_heap_zalloc(h, l.size()).cast(),
            Some(h) => mi::mi_heap_zalloc_aligned(h, l.size(), l.align()).cast(),
            None => MiMalloc.alloc_zeroed(l),
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        MiMalloc.dealloc(p, l)
    }

    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        match parked_heap() {
            Some(h) if l.align() <= MIN_ALIGN => mi::mi_heap_realloc(h, p.cast(), new).cast(),
            Some(h) => mi::mi_heap_realloc_aligned(h, p.cast(), new, l.align()).cast(),
            None => MiMalloc.realloc(p, l, new),
        }
    }
}

// The tests' helpers live inside them: this file is also included by a bench, which builds
// with `cfg(test)` but without the `#[test]` functions, and would find anything else unused.
#[cfg(test)]
mod tests {
    #[test]
    fn the_scope_allocates_from_the_parked_heap_and_anything_frees_anywhere() {
        use super::*;
        extern "C" {
            // mimalloc v3's own check (its Rust binding names only v2's).
            fn mi_heap_contains(heap: *const mi::mi_heap_t, p: *const std::ffi::c_void) -> bool;
        }
        let in_parked_heap = |p: *const u8| {
            let heap = HEAP.with(Cell::get);
            // SAFETY: only compares the address with the heap's pages.
            !heap.is_null() && unsafe { mi_heap_contains(heap, p.cast()) }
        };
        let outside = Box::new([0u8; 100]);
        let mut inside = None;
        parked_scope(&mut || inside = Some(Box::new([1u8; 100])));
        let inside = inside.unwrap();
        assert!(in_parked_heap(inside.as_ptr()), "allocated inside the scope");
        assert!(!in_parked_heap(outside.as_ptr()), "allocated outside the scope");
        // Grown inside the scope: moved into the parked heap.
        let mut v: Vec<u8> = vec![7; 8];
        parked_scope(&mut || v.reserve(4000));
        assert!(in_parked_heap(v.as_ptr()) && v == [7; 8], "reallocated inside the scope, contents kept");
        // A parked block grown outside the scope: the default heap serves again.
        v.reserve(100_000);
        assert!(!in_parked_heap(v.as_ptr()));
        // After a panic inside the scope (the engine catches a flow's): the scope has ended.
        let unwound = std::panic::catch_unwind(|| parked_scope(&mut || panic!("inside the scope")));
        assert!(unwound.is_err());
        assert!(!PARKED.with(Cell::get), "the flag is back after the panic");
        let after = Box::new([0u8; 100]);
        assert!(!in_parked_heap(after.as_ptr()));
        drop((inside, outside, v, after));
    }
}
