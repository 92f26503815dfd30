//! What every binary sets up before its first thread: the allocator's arenas, then the async
//! runtime.

/// The async runtime every binary runs on, built once malloc keeps to [`MALLOC_ARENAS`] arenas.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    cap_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// glibc's malloc gives threads that contend up to eight arenas per core, and memory freed in one
/// arena is not reused by another: one 5,000,000-result project's first and next runs peaked at
/// 326 and 280 MiB with the default, and at 260 and 252 MiB with two, for the same CPU time
/// (docs/performance.md). One arena held as little, for more CPU.
pub const MALLOC_ARENAS: i32 = 2;

/// Caps malloc's arenas at [`MALLOC_ARENAS`] (glibc only; other allocators answer `true` untouched).
/// Threads started before this keep the arenas they have, so it comes before any thread.
pub fn cap_malloc_arenas() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets a parameter of the allocator; M_ARENA_MAX takes any
        // positive count.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        true
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn malloc_takes_the_arena_cap() {
        assert!(super::cap_malloc_arenas());
    }
}
