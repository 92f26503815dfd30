//! Buffers of a page's size kept for the next page. malloc maps blocks from
//! `process::MALLOC_MMAP_FROM` up on their own and unmaps them when freed, so a fresh buffer of a
//! page's size is faulted in anew, 4 KiB at a time; a buffer kept idle here is not.

use std::ops::RangeInclusive;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Idle buffers, at most `idle_at_most` of them, each with a room within `kept`.
pub(crate) struct BufferPool {
    idle: Mutex<Vec<Vec<u8>>>,
    kept: RangeInclusive<usize>,
    idle_at_most: usize,
}

impl BufferPool {
    pub const fn new(kept: RangeInclusive<usize>, idle_at_most: usize) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            kept,
            idle_at_most,
        }
    }

    /// An empty buffer with room for `room` bytes: an idle one (grown if `room` is larger) when
    /// `room` is at least the smallest size kept, else a fresh one.
    pub fn take(&self, room: usize) -> Vec<u8> {
        let idle = if room >= *self.kept.start() {
            self.idle().pop()
        } else {
            None
        };
        let mut buffer = idle.unwrap_or_default();
        buffer.reserve_exact(room);
        buffer
    }

    /// An empty buffer for bytes of a size not known yet: an idle one if there is one.
    pub fn take_any(&self) -> Vec<u8> {
        self.idle().pop().unwrap_or_default()
    }

    /// Keeps `buffer` for a later [`Self::take`] when its room is a size kept, fewer than
    /// `idle_at_most` wait, and `keep` (asked under the pool's lock) says so; else frees it.
    pub fn give_back_if(&self, mut buffer: Vec<u8>, keep: impl FnOnce() -> bool) {
        let mut idle = self.idle();
        if idle.len() < self.idle_at_most && self.kept.contains(&buffer.capacity()) && keep() {
            buffer.clear();
            idle.push(buffer);
        }
    }

    pub fn give_back(&self, buffer: Vec<u8>) {
        self.give_back_if(buffer, || true);
    }

    /// Frees every idle buffer.
    pub fn clear(&self) {
        self.idle().clear();
    }

    /// A panic elsewhere while it was held leaves the list as it was: still a list of buffers.
    pub(crate) fn idle(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KB: usize = 1024;

    #[test]
    fn a_buffer_given_back_serves_the_next_take_empty_and_with_its_room() {
        let pool = BufferPool::new(KB..=4 * KB, 2);
        let mut first = pool.take(2 * KB + 1);
        first.resize(2 * KB, b'a');
        pool.give_back(first);
        let second = pool.take(KB);
        assert!(second.is_empty(), "none of the last page");
        assert_eq!(second.capacity(), 2 * KB + 1, "the buffer given back");
        pool.give_back(second);
        assert_eq!(
            pool.take_any().capacity(),
            2 * KB + 1,
            "a size not known yet takes it"
        );
        assert_eq!(pool.take_any().capacity(), 0, "none idle: a fresh one");
        pool.give_back(pool.take(KB));
        assert_eq!(
            pool.take(10).capacity(),
            10,
            "a size not kept takes a fresh one"
        );
        assert_eq!(pool.idle().len(), 1, "and leaves the idle one");
    }

    #[test]
    fn only_buffers_of_sizes_kept_wait_and_no_more_than_allowed() {
        let pool = BufferPool::new(KB..=4 * KB, 2);
        pool.give_back(Vec::with_capacity(KB - 1));
        pool.give_back(Vec::with_capacity(4 * KB + 1));
        assert_eq!(pool.idle().len(), 0, "too small, too large");
        for _ in 0..3 {
            pool.give_back(Vec::with_capacity(KB));
        }
        assert_eq!(pool.idle().len(), 2);
        pool.clear();
        assert_eq!(pool.idle().len(), 0);
        pool.give_back_if(Vec::with_capacity(KB), || false);
        assert_eq!(pool.idle().len(), 0, "not when the caller says no");
    }
}
