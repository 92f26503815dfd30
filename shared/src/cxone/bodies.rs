//! Buffers for large response bodies, kept for the next one. A results page of 10,000 results is
//! about 15 MB: read into a fresh buffer, each page was mapped anew (malloc maps blocks from
//! `process::MALLOC_MMAP_FROM` up on their own, and unmaps them when freed) and faulted in, 4 KiB
//! at a time: a third of a large project's page faults. A body is handed out as `Bytes` that give
//! its buffer back when the last of them (slices included) is dropped. Buffers are kept only
//! while a pager of the client is reading: none is held once the pulls end (a large project's
//! transform comes next, and the memory budget is its).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;

use crate::buffers::BufferPool;

/// Bodies announced smaller than this, or not announced, are read into buffers of their own,
/// sized to them: malloc serves the small ones from its heap, with nothing to map.
const KEPT_FROM: usize = crate::process::MALLOC_MMAP_FROM as usize;

/// A buffer larger than this (a body far larger than the pages) is not kept: every body after it
/// would hold its room.
const KEPT_UP_TO: usize = 32 * 1024 * 1024;

/// Buffers kept idle at most. Pages in flight hand theirs on as each is stored and the next
/// request is sent, so one or two idle are enough; more would be memory held for nothing once a
/// pull ends.
const IDLE_AT_MOST: usize = 2;

pub(crate) struct BodyBuffers {
    idle: BufferPool,
    /// Pagers reading now; buffers are kept while there is one.
    pagers: AtomicUsize,
}

impl Default for BodyBuffers {
    fn default() -> Self {
        Self {
            idle: BufferPool::new(KEPT_FROM..=KEPT_UP_TO, IDLE_AT_MOST),
            pagers: AtomicUsize::new(0),
        }
    }
}

impl BodyBuffers {
    /// An empty buffer with room for a body of `announced` bytes (its `Content-Length`, 0 when
    /// none): for a large body, one an earlier body gave back, if any.
    pub fn buffer_for(&self, announced: usize) -> Vec<u8> {
        self.idle.take(announced)
    }

    /// `body`, read into [`Self::buffer_for`]`(announced)`, as `Bytes`. A large body's buffer
    /// comes back here when the last of them is dropped; any other loses the room beyond its
    /// bytes (a body grown past what was announced, or with nothing announced).
    pub fn hand_out(self: &Arc<Self>, mut body: Vec<u8>, announced: usize) -> Bytes {
        if announced < KEPT_FROM {
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
        self.pagers.fetch_add(1, Ordering::Relaxed);
    }

    /// A pager is done: when it was the last, the idle buffers go, and so will those given back
    /// later.
    pub fn pull_ended(&self) {
        if self.pagers.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.idle.clear();
        }
    }

    fn give_back(&self, buffer: Vec<u8>) {
        // Asked under the pool's lock: a last pull that ends meanwhile clears after this.
        self.idle
            .give_back_if(buffer, || self.pagers.load(Ordering::Relaxed) > 0);
    }

    #[cfg(test)]
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Vec<u8>>> {
        self.idle.idle()
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

    /// A body of `size` bytes, announced, read as `read_body` reads it.
    fn body(buffers: &Arc<BodyBuffers>, size: usize, byte: u8) -> Bytes {
        buffers.hand_out(filled(buffers, size, byte), size)
    }

    fn filled(buffers: &BodyBuffers, size: usize, byte: u8) -> Vec<u8> {
        let mut body = buffers.buffer_for(size);
        assert!(
            body.is_empty(),
            "a buffer taken holds none of the last body"
        );
        body.resize(size, byte);
        body
    }

    #[test]
    fn a_large_body_gives_its_buffer_back_when_its_last_slice_is_dropped() {
        let buffers = reading();
        let bytes = body(&buffers, KEPT_FROM, b'a');
        let slice = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(buffers.idle().len(), 0, "a slice still holds it");
        assert_eq!(&slice[..], &[b'a'; 10]);
        drop(slice);
        assert_eq!(buffers.idle().len(), 1);
    }

    #[test]
    fn the_same_buffer_serves_body_after_body_and_grows_to_the_largest() {
        let buffers = reading();
        // A room no fresh buffer for these bodies would have.
        let odd = KEPT_FROM + 4097;
        let mut first = buffers.buffer_for(odd);
        first.resize(KEPT_FROM, b'a');
        drop(buffers.hand_out(first, KEPT_FROM));
        let second = filled(&buffers, KEPT_FROM, b'b');
        assert_eq!(
            second.capacity(),
            odd,
            "the buffer the first body gave back"
        );
        assert!(second.iter().all(|&b| b == b'b'));
        drop(buffers.hand_out(second, KEPT_FROM));
        // A larger body takes it and grows it to its size exactly; the next keeps that room.
        let larger = filled(&buffers, 2 * KEPT_FROM, b'c');
        assert_eq!(larger.capacity(), 2 * KEPT_FROM);
        assert!(larger.iter().all(|&b| b == b'c'));
        drop(buffers.hand_out(larger, 2 * KEPT_FROM));
        assert_eq!(buffers.buffer_for(KEPT_FROM).capacity(), 2 * KEPT_FROM);
    }

    #[test]
    fn small_and_unannounced_bodies_are_not_kept_and_lose_their_spare_room() {
        let buffers = reading();
        let mut small = buffers.buffer_for(100);
        small.extend_from_slice(b"{}");
        let bytes = buffers.hand_out(small, 100);
        assert_eq!(&bytes[..], b"{}");
        drop(bytes);
        // Nothing announced, grown past the size kept: its own, shrunk to its bytes.
        let mut unannounced = buffers.buffer_for(0);
        unannounced.resize(KEPT_FROM + 1, b'u');
        let bytes = buffers.hand_out(unannounced, 0);
        assert_eq!(bytes.len(), KEPT_FROM + 1);
        drop(bytes);
        assert_eq!(buffers.idle().len(), 0);
    }

    #[test]
    fn at_most_two_buffers_wait_idle_and_none_larger_than_kept() {
        let buffers = reading();
        let bodies: Vec<Bytes> = (0..4).map(|i| body(&buffers, KEPT_FROM, i)).collect();
        drop(bodies);
        assert_eq!(buffers.idle().len(), IDLE_AT_MOST);
        let (a, b) = (buffers.buffer_for(KEPT_FROM), buffers.buffer_for(KEPT_FROM));
        drop((a, b));
        drop(body(&buffers, KEPT_UP_TO + 1, b'x'));
        assert_eq!(buffers.idle().len(), 0, "a buffer over the size kept");
    }

    #[test]
    fn a_body_that_outlives_its_buffers_is_freed_as_any_other() {
        let buffers = reading();
        let bytes = body(&buffers, KEPT_FROM, b'a');
        drop(buffers);
        assert_eq!(bytes.len(), KEPT_FROM);
        drop(bytes);
    }

    #[test]
    fn nothing_is_kept_once_the_last_pull_ends_nor_outside_a_pull() {
        let buffers = reading();
        buffers.pull_started();
        drop(body(&buffers, KEPT_FROM, b'a'));
        let late = body(&buffers, KEPT_FROM, b'b');
        drop(body(&buffers, KEPT_FROM, b'c'));
        assert_eq!(buffers.idle().len(), 1);
        buffers.pull_ended();
        assert_eq!(buffers.idle().len(), 1, "one pull still reads");
        buffers.pull_ended();
        assert_eq!(buffers.idle().len(), 0, "the last pull ended");
        drop(late);
        assert_eq!(buffers.idle().len(), 0, "a body dropped after the pulls");
        drop(body(&buffers, KEPT_FROM, b'd'));
        assert_eq!(buffers.idle().len(), 0, "a body read outside a pull");
    }
}
