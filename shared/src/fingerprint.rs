//! 64-bit fingerprints that stand for ids, result hashes and records in the sets a large
//! scan needs (eight bytes per entry, whatever the text's length). Each owner draws its own
//! random key, so which ids share a fingerprint cannot be worked out in advance. With the fixed
//! key used before, such a pair could be computed offline, and one finding of it would pass for a
//! duplicate of the other. (foldhash is fast, not cryptographic: it defeats precomputed pairs,
//! not an attacker who can watch the hashes.) The parts of a split scan share one key, drawn at
//! random by the plan and handed to them in the work list, so their sets can be compared when
//! they are joined: a pair worked out from that key needs the bucket read and the vendor's data
//! changed within the run. Two records paired so make the asset incomplete, never short; two
//! ids paired so within a part make the part read its pages again for the identity fields of the
//! id counted second, which find it on one record: both keep their ids.

use std::collections::HashSet;
use std::hash::BuildHasher;

/// Fingerprints under a key drawn at random when it is made.
#[derive(Clone)]
pub struct Fingerprints(foldhash::quality::SeedableRandomState);

impl Default for Fingerprints {
    fn default() -> Self {
        Self(foldhash::quality::SeedableRandomState::random())
    }
}

impl Fingerprints {
    /// Fingerprints under `key`: alike in every process that is given the same key.
    pub fn keyed(key: u64) -> Self {
        Self(foldhash::quality::SeedableRandomState::with_seed(
            key,
            foldhash::SharedSeed::global_fixed(),
        ))
    }

    pub fn of(&self, bytes: &[u8]) -> u64 {
        self.0.hash_one(bytes)
    }
}

/// A set of fingerprints; they are random already, so the set hashes them the cheap way.
type FingerprintSet = HashSet<u64, foldhash::fast::RandomState>;

/// Where each run of words with the same leading bits starts in a list sorted by them (one past
/// the last run at the end): a lookup in millions of random words searches about sixteen.
#[derive(Default)]
pub(crate) struct Runs {
    starts: Vec<usize>,
    shift: u32,
}

impl Runs {
    pub(crate) fn of(sorted: &[u64]) -> Self {
        let bits = (usize::BITS - sorted.len().leading_zeros())
            .saturating_sub(4)
            .clamp(1, 22);
        let shift = 64 - bits;
        let mut starts = Vec::with_capacity((1 << bits) + 1);
        let mut at = 0;
        for run in 0..=(1u64 << bits) {
            while at < sorted.len() && sorted[at] >> shift < run {
                at += 1;
            }
            starts.push(at);
        }
        Self { starts, shift }
    }

    /// The positions of the words that share `word`'s run (none before [`Self::of`]).
    pub(crate) fn around(&self, word: u64) -> std::ops::Range<usize> {
        let run = (word >> self.shift) as usize;
        match (self.starts.get(run), self.starts.get(run.wrapping_add(1))) {
            (Some(&start), Some(&end)) => start..end,
            _ => 0..0,
        }
    }

    /// Whether `sorted` (the list these runs were made of) holds `word`.
    pub(crate) fn holds(&self, sorted: &[u64], word: u64) -> bool {
        sorted[self.around(word)].binary_search(&word).is_ok()
    }
}

/// A set of fingerprints for millions of records in about eight bytes each, where a hash set
/// takes nine at best and, rounded to a power of two, up to eighteen: the fingerprints sorted,
/// beside a small hash set of the latest that is merged into them whenever it fills.
#[derive(Default)]
pub struct CompactFingerprintSet {
    sorted: Vec<u64>,
    runs: Runs,
    latest: FingerprintSet,
}

/// The most fingerprints kept in the hash set between merges (about 4.5 MiB of table).
const LATEST_AT_MOST: usize = 1 << 18;

impl CompactFingerprintSet {
    /// Makes room for `count` fingerprints in all.
    pub fn reserve(&mut self, count: usize) {
        self.sorted
            .reserve_exact(count.saturating_sub(self.sorted.len()));
    }

    /// Adds `fingerprint`; `false` when it was in the set already.
    pub fn insert(&mut self, fingerprint: u64) -> bool {
        if self.runs.holds(&self.sorted, fingerprint) || !self.latest.insert(fingerprint) {
            return false;
        }
        if self.latest.len() == LATEST_AT_MOST {
            self.merge();
        }
        true
    }

    pub fn len(&self) -> usize {
        self.sorted.len() + self.latest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many fingerprints the sorted list has room for.
    pub fn capacity(&self) -> usize {
        self.sorted.capacity()
    }

    /// Every fingerprint, sorted.
    pub fn into_sorted(mut self) -> Vec<u64> {
        self.merge();
        self.sorted
    }

    /// Moves the latest into the sorted list, merging from the back in place.
    fn merge(&mut self) {
        let mut latest: Vec<u64> = self.latest.drain().collect();
        latest.sort_unstable();
        let old = self.sorted.len();
        if self.sorted.capacity() < old + latest.len() {
            // A quarter more at a time, not double (large blocks grow by remapping pages).
            self.sorted.reserve_exact(latest.len().max(old / 4));
        }
        self.sorted.resize(old + latest.len(), 0);
        let (mut from_old, mut from_latest) = (old, latest.len());
        for to in (0..self.sorted.len()).rev() {
            let take_old = from_latest == 0
                || (from_old > 0 && self.sorted[from_old - 1] > latest[from_latest - 1]);
            self.sorted[to] = if take_old {
                from_old -= 1;
                self.sorted[from_old]
            } else {
                from_latest -= 1;
                latest[from_latest]
            };
        }
        self.runs = Runs::of(&self.sorted);
    }
}

/// Texts held as their fingerprints, under a key of their own, for lookups only: the ids more
/// than one record of an item carries, looked up for every record. Eight bytes a text, where a
/// hash set of the texts took about ninety (562,832 SCA ids: 53 MB). A text not in the set is
/// found in it only if its fingerprint equals one of the set's, under a key drawn at random when
/// the set is made: with n texts, a chance of n in 2^64 a lookup (for 562,832 ids and 5,000,000
/// records, about 1.5 × 10^-7 in a run).
#[derive(Default)]
pub struct TextSet {
    fingerprints: Fingerprints,
    sorted: Vec<u64>,
    runs: Runs,
}

impl TextSet {
    pub fn contains(&self, text: &str) -> bool {
        let fingerprint = self.fingerprints.of(text.as_bytes());
        self.runs.holds(&self.sorted, fingerprint)
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }
}

impl<S: AsRef<str>> FromIterator<S> for TextSet {
    fn from_iter<I: IntoIterator<Item = S>>(texts: I) -> Self {
        let fingerprints = Fingerprints::default();
        let mut sorted: Vec<u64> = texts
            .into_iter()
            .map(|text| fingerprints.of(text.as_ref().as_bytes()))
            .collect();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.shrink_to_fit();
        let runs = Runs::of(&sorted);
        Self {
            fingerprints,
            sorted,
            runs,
        }
    }
}

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
        // Under a key given, alike wherever it is given.
        let (c, d) = (Fingerprints::keyed(7), Fingerprints::keyed(7));
        assert_eq!(c.of(b"12345"), d.of(b"12345"));
        assert_ne!(c.of(b"12345"), Fingerprints::keyed(8).of(b"12345"));
    }

    #[test]
    fn a_compact_set_gives_every_fingerprint_sorted() {
        let mut set = CompactFingerprintSet::default();
        let values: Vec<u64> = (0..(LATEST_AT_MOST as u64 + 10))
            .map(|n| n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        for v in &values {
            set.insert(*v);
        }
        let mut expected = values.clone();
        expected.sort_unstable();
        assert_eq!(set.into_sorted(), expected);
    }

    #[test]
    fn a_compact_set_answers_as_a_hash_set_across_merges() {
        let keys = Fingerprints::default();
        let (mut compact, mut model) =
            (CompactFingerprintSet::default(), FingerprintSet::default());
        compact.reserve(600_000);
        // Past two merges; every tenth record a repeat of one long since merged or still latest.
        for n in 0u64..600_000 {
            let record = if n % 10 == 9 { n / 3 } else { n };
            let fingerprint = keys.of(&record.to_le_bytes());
            assert_eq!(
                compact.insert(fingerprint),
                model.insert(fingerprint),
                "record {n}"
            );
        }
        assert_eq!(compact.len(), model.len());
        assert!(compact.sorted.len() >= 2 * LATEST_AT_MOST, "merged twice");
        assert!(
            compact.sorted.windows(2).all(|w| w[0] < w[1]),
            "sorted, each once"
        );
        assert_eq!(compact.sorted.capacity(), 600_000, "in the room reserved");
        assert!(!compact.insert(keys.of(&0u64.to_le_bytes())));
    }

    #[test]
    fn runs_find_every_word_of_a_sorted_list_and_nothing_before_it_is_built() {
        let mut words: Vec<u64> = (0..5_000u64)
            .map(|n| n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        words.sort_unstable();
        let runs = Runs::of(&words);
        for &word in &words {
            assert!(words[runs.around(word)].contains(&word));
        }
        assert_eq!(Runs::default().around(words[0]), 0..0);
        assert_eq!(
            Runs::default().around(u64::MAX),
            0..0,
            "no run past the last"
        );
        assert_eq!(Runs::of(&[]).around(u64::MAX), 0..0);
    }

    #[test]
    fn a_text_set_finds_its_texts_and_no_other() {
        let texts: Vec<String> = (0..20_000).map(|n| format!("CVE-2024-{n}")).collect();
        let set: TextSet = texts.iter().step_by(2).collect();
        for (n, text) in texts.iter().enumerate() {
            assert_eq!(set.contains(text), n % 2 == 0, "{text}");
        }
        assert!(!set.is_empty());
        let empty: TextSet = std::iter::empty::<&str>().collect();
        assert!(empty.is_empty());
        assert!(!empty.contains("CVE-2024-0"));
        assert!(!TextSet::default().contains(""));
    }
}
