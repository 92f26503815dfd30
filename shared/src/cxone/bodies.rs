//! Buffers for large response bodies, kept for the next one. A results page of 10,000 results is
//! about 15 MB: read into a fresh buffer, each page was mapped anew (malloc maps blocks from
//! `process::MALLOC_MMAP_FROM` up on their own, and unmaps them when freed) and faulted in, 4 KiB
//! at a time: a third of a large project's page faults. A body is handed out as `Bytes` that give
//! its buffer back when the last of them (slices included) is dropped. Buffers are kept only
//! while a pager of the client is reading: none is held once the pulls end (a large project's
//! transform comes next, and the memory budget is its).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use bytes::Bytes;

/// Bodies announced smaller than this are read into buffers of their own, sized to them: malloc
/// serves those from its heap, with nothing to map.
const KEPT_FROM: usize = crate::process::MALLOC_MMAP_FROM as usize;

/// Buffers kept idle at most. Pages in flight hand theirs on as each is stored and the next
/// request is sent, so one or two idle are enough; more would be memory held for nothing once a
/// pull ends.
const IDLE_AT_MOST: usize = 2;

#[derive(Default)]
pub(crate) struct BodyBuffers {
    idle: Mutex<Vec<Vec<u8>>>,
    /// Pagers reading now; buffers are kept while there is one.
    pulls: AtomicUsize,
}

impl BodyBuffers {
    /// An empty buffer with room for `announced` bytes: for a large body, one an earlier body
    /// gave back, if any.
    pub fn take(&self, announced: usize) -> Vec<u8> {
        let kept = if announced >= KEPT_FROM {
            self.idle().pop()
        } else {
            None
        };
        let mut buffer = kept.unwrap_or_default();
        buffer.reserve(announced);
        buffer
    }

    /// `body` as `Bytes`. A large body's buffer comes back here when the last of them is
    /// dropped; a small one loses the room beyond its bytes (a body grown past what was
    /// announced, or with nothing announced).
    pub fn hand_out(self: &Arc<Self>, mut body: Vec<u8>) -> Bytes {
        if body.capacity() < KEPT_FROM {
            body.shrink_to_fit();
            return Bytes::from(body);
        }
        Bytes::from_owner(Lent {
            body,
            home: Arc::downgrade(self),
        })
    }

    /// A pager starts reading: buffers given back are kept for the bodies to come.
    pub fn pull_started(&self) {
        self.pulls.fetch_add(1, Ordering::Relaxed);
    }

    /// A pager is done: when it was the last, the idle buffers go, and so will those given back
    /// later.
    pub fn pull_ended(&self) {
        if self.pulls.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.idle().clear();
        }
    }

    fn give_back(&self, mut buffer: Vec<u8>) {
        // Checked under the lock: a last pull that ends meanwhile clears after this.
        let mut idle = self.idle();
        if self.pulls.load(Ordering::Relaxed) > 0 && idle.len() < IDLE_AT_MOST {
            buffer.clear();
            idle.push(buffer);
        }
    }

    /// A panic elsewhere while it was held leaves the list as it was: still a list of buffers.
    fn idle(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A large body's buffer, lent to the `Bytes` that hold it. A body that outlives its client's
/// buffers is freed as any other.
struct Lent {
    body: Vec<u8>,
    home: Weak<BodyBuffers>,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(home) = self.home.upgrade() {
            home.give_back(std::mem::take(&mut self.body));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buffers of a client with one pager reading.
    fn reading() -> Arc<BodyBuffers> {
        let buffers = Arc::new(BodyBuffers::default());
        buffers.pull_started();
        buffers
    }

    fn filled(buffers: &BodyBuffers, announced: usize, byte: u8) -> Vec<u8> {
        let mut body = buffers.take(announced);
        assert!(
            body.is_empty(),
            "a buffer taken holds none of the last body"
        );
        body.resize(announced, byte);
        body
    }

    #[test]
    fn a_large_body_gives_its_buffer_back_when_its_last_slice_is_dropped() {
        let buffers = reading();
        let bytes = buffers.hand_out(filled(&buffers, KEPT_FROM, b'a'));
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(buffers.idle().len(), 0, "a slice still holds it");
        assert_eq!(&slice[..], &[b'a'; 10]);
        drop(slice);
        assert_eq!(buffers.idle().len(), 1);
        // A larger body takes it and grows it; the smaller one after takes it as it is.
        let larger = filled(&buffers, 2 * KEPT_FROM, b'b');
        assert!(larger.iter().all(|&b| b == b'b'));
        assert_eq!(buffers.idle().len(), 0, "taken again");
        let at = larger.as_ptr();
        drop(buffers.hand_out(larger));
        let smaller = buffers.take(KEPT_FROM);
        assert_eq!(smaller.as_ptr(), at);
        assert!(smaller.capacity() >= 2 * KEPT_FROM, "its room kept");
    }

    #[test]
    fn the_same_buffer_serves_body_after_body() {
        let buffers = reading();
        let first = filled(&buffers, KEPT_FROM, b'a');
        let at = first.as_ptr();
        drop(buffers.hand_out(first));
        let second = filled(&buffers, KEPT_FROM, b'b');
        assert_eq!(second.as_ptr(), at, "the buffer the first body gave back");
        assert!(second.iter().all(|&b| b == b'b'));
    }

    #[test]
    fn small_bodies_are_not_kept_and_lose_their_spare_room() {
        let buffers = reading();
        let mut body = buffers.take(100);
        body.extend_from_slice(b"{}");
        let bytes = buffers.hand_out(body);
        assert_eq!(&bytes[..], b"{}");
        drop(bytes);
        assert_eq!(buffers.idle().len(), 0);
    }

    #[test]
    fn at_most_two_buffers_wait_idle() {
        let buffers = reading();
        let bodies: Vec<Bytes> = (0..4)
            .map(|i| buffers.hand_out(filled(&buffers, KEPT_FROM, i)))
            .collect();
        drop(bodies);
        assert_eq!(buffers.idle().len(), IDLE_AT_MOST);
    }

    #[test]
    fn a_body_that_outlives_its_buffers_is_freed_as_any_other() {
        let buffers = reading();
        let bytes = buffers.hand_out(filled(&buffers, KEPT_FROM, b'a'));
        drop(buffers);
        assert_eq!(bytes.len(), KEPT_FROM);
        drop(bytes);
    }

    #[test]
    fn nothing_is_kept_once_the_last_pull_ends_nor_outside_a_pull() {
        let buffers = reading();
        buffers.pull_started();
        drop(buffers.hand_out(filled(&buffers, KEPT_FROM, b'a')));
        let late = buffers.hand_out(filled(&buffers, KEPT_FROM, b'b'));
        drop(buffers.hand_out(filled(&buffers, KEPT_FROM, b'c')));
        assert_eq!(buffers.idle().len(), 1);
        buffers.pull_ended();
        assert_eq!(buffers.idle().len(), 1, "one pull still reads");
        buffers.pull_ended();
        assert_eq!(buffers.idle().len(), 0, "the last pull ended");
        drop(late);
        assert_eq!(buffers.idle().len(), 0, "a body dropped after the pulls");
        drop(buffers.hand_out(filled(&buffers, KEPT_FROM, b'd')));
        assert_eq!(buffers.idle().len(), 0, "a body read outside a pull");
    }
}
