//! Free memory back to the system, for the inline bridge after it parked idle flows
//! (`tlsgate_io::inline::release`): the binary knows its allocators. mimalloc (Rust's heap)
//! purges freed pages only after a delay and from a later allocator call, which an idle bridge
//! thread never makes; glibc's malloc (aws-lc's AEAD contexts) keeps freed chunks below its top.

// Two calls into the allocators' C interfaces.
#![allow(unsafe_code)]

/// Purges mimalloc's free pages now (`mi_collect(true)`: this thread's heap and the arenas'
/// delayed purges) and trims glibc's heap (`malloc_trim(0)`).
pub fn release() {
    // SAFETY: neither takes a pointer; both only walk their allocator's free lists and are
    // callable from any thread at any time.
    unsafe {
        libmimalloc_sys::mi_collect(true);
        libc::malloc_trim(0);
    }
}
