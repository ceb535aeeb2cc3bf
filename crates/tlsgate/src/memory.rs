//! Free memory back to the system, for the inline bridge after it parked idle flows
//! (`tlsgate_io::inline::release`): the binary knows its allocators. mimalloc (Rust's heap)
//! purges freed pages only after a delay and from a later allocator call, which an idle bridge
//! thread never makes; glibc's malloc (aws-lc's AEAD contexts) keeps freed chunks below its top.
//! And transparent huge pages off, for every mode (see [`no_transparent_huge_pages`]).

// Calls into the allocators' C interfaces and one prctl.
#![allow(unsafe_code)]

/// Purges mimalloc's free pages now (`mi_collect(true)`: this thread's heap and the arenas'
/// delayed purges; and this thread's heap of parked flows' state) and trims glibc's heap
/// (`malloc_trim(0)`).
pub fn release() {
    // SAFETY: neither takes a pointer; both only walk their allocator's free lists and are
    // callable from any thread at any time.
    unsafe {
        libmimalloc_sys::mi_collect(true);
        libc::malloc_trim(0);
    }
    crate::allocator::collect_parked();
}

/// No transparent huge pages for this process (`prctl(PR_SET_THP_DISABLE)`; the same as
/// mimalloc's `MIMALLOC_ALLOW_THP=0`). mimalloc asks for huge pages on its arenas, so a fresh
/// 64 KiB socket buffer faulted in a whole 2 MiB page, zeroed by the kernel: with 64 busy tunnel
/// sessions that zeroing (`clear_page_erms` under `do_huge_pmd_anonymous_page`) was 10 % of the
/// tunnel's CPU, and 0.4–0.9 % with 4 KiB pages. The inline bridge too: a 2 MiB page stays
/// resident while any of its 4 KiB is in use, so the pages that idle flows' parking frees did
/// not go back (RSS per parked flow, `crates/inline/benches/idle_flows.rs --flows 3000 --live
/// 3000 --no-parked-heap`: 972 bytes without huge pages against 1563–1574 with). And terminate:
/// its memory grew in 2 MiB steps, so 1000 idle connections read 7.3 or 9.4 KiB each depending
/// on where a step fell, 8.1–8.2 without (`bench/run.sh --quick`, two pairs), with the CPU per
/// handshake, request and GiB no worse. Best effort: a kernel that refuses keeps them.
pub fn no_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag of this process.
    // Called before logging is set up; a failure only leaves the kernel's default.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}
