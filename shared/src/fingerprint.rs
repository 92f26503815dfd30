//! 64-bit fingerprints that stand for ids, result hashes and records in the sets a large
//! scan needs (eight bytes per entry, whatever the text's length). Each owner draws its own
//! random key, so which ids share a fingerprint cannot be worked out in advance. With the fixed
//! key used before, such a pair could be computed offline, and one finding of it would pass for a
//! duplicate of the other. (foldhash is fast, not cryptographic: it defeats precomputed pairs,
//! not an attacker who can watch the hashes.)

use std::collections::HashSet;
use std::hash::BuildHasher;

/// Fingerprints under a key drawn at random when it is made.
#[derive(Clone, Default)]
pub struct Fingerprints(foldhash::quality::RandomState);

impl Fingerprints {
    pub fn of(&self, bytes: &[u8]) -> u64 {
        self.0.hash_one(bytes)
    }
}

/// A set of fingerprints; they are random already, so the set hashes them the cheap way.
pub type FingerprintSet = HashSet<u64, foldhash::fast::RandomState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_fingerprints_alike_and_two_owners_differ() {
        let (a, b) = (Fingerprints::default(), Fingerprints::default());
        assert_eq!(a.of(b"12345"), a.of(b"12345"));
        assert_ne!(a.of(b"12345"), a.of(b"12346"));
        // Keys are drawn per owner: the same id does not fingerprint alike in another set.
        assert_ne!(a.of(b"12345"), b.of(b"12345"));
    }
}
