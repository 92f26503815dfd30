//! What every binary sets up before its first thread: how malloc keeps memory, then the async
//! runtime.

/// The async runtime every binary runs on, built once malloc is tuned ([`tune_malloc`]).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tune_malloc();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// glibc's malloc gives threads that contend up to eight arenas per core, and memory freed in one
/// arena is not reused by another: one 5,000,000-result project's first and next runs peaked at
/// 326 and 280 MiB with the default, and at 260 and 252 MiB with two, for the same CPU time, before
/// large blocks were mapped on their own ([`MALLOC_MMAP_FROM`]). With two, 13 to 17% of the
/// transform's samples were waits on an arena's lock, shared by its reading and mapping threads;
/// with four (and each page freed by a later reading thread, not the mapping one) the transform
/// stage is about a tenth shorter, for 6 to 13 MiB more in one pair of 5,000,000-result runs
/// (docs/performance.md).
pub const MALLOC_ARENAS: i32 = 4;

/// Blocks from this size up are mapped on their own and unmapped when freed. glibc's default
/// starts at 128 KiB and rises to the largest block freed (up to 32 MiB): after the first page of
/// results (15 MB) is freed, pages, page buffers and growing ledgers are carved out of the arenas,
/// whose freed middles are never returned. With 1 MiB, and the transform trimming the heap
/// ([`release_free_memory`]), the same 5,000,000-result runs peaked at 161 and 167 MiB, against
/// 213 to 318 MiB before (docs/performance.md).
pub const MALLOC_MMAP_FROM: i32 = 1024 * 1024;

/// Caps malloc's arenas at [`MALLOC_ARENAS`] and maps blocks from [`MALLOC_MMAP_FROM`] up (glibc
/// only; other allocators answer `true` untouched). Threads started before this keep the arenas
/// they have, so it comes before any thread.
pub fn tune_malloc() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets parameters of the allocator; M_ARENA_MAX takes any positive
        // count, M_MMAP_THRESHOLD any size up to 32 MiB.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) == 1
                && libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_FROM) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        true
    }
}

/// Gives the pages of freed small blocks back to the system (glibc only): a large item's
/// transform frees each page's records and lines, but blocks still in use above them keep the
/// heap from shrinking, and the next page's blocks do not always fit where the last page's were.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; 0 keeps no extra padding.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Lambda gives a function one vCPU's worth of time per 1,769 MB of memory, whatever number of
/// cores its guest sees (AWS Lambda: "Memory and computing power").
const LAMBDA_MB_PER_VCPU: u64 = 1769;

/// How many cores this process can keep busy: on Lambda, the whole vCPUs its memory size buys
/// (a 512 MB function sees two cores and may use a third of one); elsewhere, what the system and
/// its cgroup allow. Work is spread over a second thread only when this is two or more: where it
/// is not, the second thread's extra CPU would only slow the step down.
pub fn cores() -> usize {
    cores_for(
        std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
            .ok()
            .as_deref(),
    )
}

fn cores_for(lambda_memory_mb: Option<&str>) -> usize {
    match lambda_memory_mb.and_then(|mb| mb.trim().parse::<u64>().ok()) {
        Some(mb) => usize::try_from(mb / LAMBDA_MB_PER_VCPU).map_or(1, |cores| cores.max(1)),
        None => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malloc_takes_the_arena_cap_and_the_mapping_size() {
        assert!(tune_malloc());
    }

    #[test]
    fn a_lambda_function_has_the_cores_its_memory_buys_and_elsewhere_the_systems() {
        assert_eq!(cores_for(Some("128")), 1);
        assert_eq!(cores_for(Some("512")), 1);
        assert_eq!(cores_for(Some("3537")), 1);
        assert_eq!(cores_for(Some("3538")), 2);
        assert_eq!(cores_for(Some("10240")), 5);
        let system = std::thread::available_parallelism().unwrap().get();
        assert_eq!(cores_for(None), system);
        assert_eq!(cores_for(Some("not a size")), system);
    }
}
