//! Severities before triage, by result hash: what a SAST finding's severity was before someone
//! triaged it, looked up for each of a scan's results. A scan has millions of results and a
//! handful of severities, so each result takes eight bytes: its hash's fingerprint and its
//! severity's number, packed in one word, sorted once the pages are read. The fingerprint keeps
//! 56 bits: two of a scan's 5,000,000 result hashes share one with a chance of about 2 in 10,000,
//! and then one finding carries the other's severity before triage (nothing else of it changes).

use crate::fingerprint::{Fingerprints, Runs};
use crate::mapping::ledger::Text;

/// The low bits of a packed word hold the severity's number; the high 56, the fingerprint's.
const SEVERITY_BITS: u32 = 8;
const MOST_SEVERITIES: usize = 1 << SEVERITY_BITS;

#[derive(Default)]
pub(crate) struct OriginalSeverities {
    fingerprints: Fingerprints,
    /// The severities' texts, by number.
    severities: Vec<Text>,
    /// Per result hash, `fingerprint << 8 | severity number`; in fingerprint order when settled.
    packed: Vec<u64>,
    settled: bool,
    runs: Runs,
}

impl OriginalSeverities {
    /// Records `severity` for `result_hash`; a hash given twice keeps the later severity. Answers
    /// `false`, recording nothing, for a severity beyond the 256 distinct texts one scan could
    /// have (vendor data gone wrong).
    pub(crate) fn insert(&mut self, result_hash: &str, severity: &str) -> bool {
        // Compared as text first: a text is held for the life of the process once numbered.
        let number = match self.severities.iter().position(|s| s.as_str() == severity) {
            Some(number) => number,
            None if self.severities.len() < MOST_SEVERITIES => {
                self.severities.push(Text::from(severity));
                self.severities.len() - 1
            }
            None => return false,
        };
        let fingerprint = self.fingerprints.of(result_hash.as_bytes()) >> SEVERITY_BITS;
        self.packed
            .push(fingerprint << SEVERITY_BITS | number as u64);
        self.settled = false;
        true
    }

    /// Puts what was inserted in fingerprint order, the later of two severities of a hash kept,
    /// and indexes it; lookups need it done (an insert after it undoes it).
    pub(crate) fn settle(&mut self) {
        if self.settled {
            return;
        }
        // Stable: of one fingerprint's words, the later inserted stays last, and is kept.
        self.packed.sort_by_key(|word| word >> SEVERITY_BITS);
        let mut kept = 0;
        for at in 0..self.packed.len() {
            let word = self.packed[at];
            let superseded = self
                .packed
                .get(at + 1)
                .is_some_and(|next| next >> SEVERITY_BITS == word >> SEVERITY_BITS);
            if !superseded {
                self.packed[kept] = word;
                kept += 1;
            }
        }
        self.packed.truncate(kept);
        self.packed.shrink_to_fit();
        self.runs = Runs::of(&self.packed);
        self.settled = true;
    }

    /// The severity before triage of `result_hash`, once settled ([`Self::settle`]).
    pub(crate) fn get(&self, result_hash: &str) -> Option<&'static str> {
        if !self.settled {
            return None;
        }
        let fingerprint = self.fingerprints.of(result_hash.as_bytes()) >> SEVERITY_BITS;
        let words = &self.packed[self.runs.around(fingerprint << SEVERITY_BITS)];
        let at = words.partition_point(|word| word >> SEVERITY_BITS < fingerprint);
        let word = words
            .get(at)
            .filter(|word| *word >> SEVERITY_BITS == fingerprint)?;
        let number = (word & (MOST_SEVERITIES as u64 - 1)) as usize;
        Some(self.severities[number].as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_before_triage_are_found_by_hash_and_the_later_of_two_wins() {
        let mut original = OriginalSeverities::default();
        assert!(original.insert("h1", "HIGH"));
        original.insert("h2", "LOW");
        original.insert("h3", "HIGH");
        original.insert("h2", "CRITICAL");
        assert_eq!(original.get("h1"), None, "not settled yet");
        original.settle();
        assert_eq!(original.get("h1"), Some("HIGH"));
        assert_eq!(original.get("h3"), Some("HIGH"));
        assert_eq!(original.get("h2"), Some("CRITICAL"));
        assert_eq!(original.get("h4"), None);
        original.insert("h2", "LOW");
        original.settle();
        assert_eq!(original.get("h2"), Some("LOW"));
        assert_eq!(original.get("h1"), Some("HIGH"));
    }

    #[test]
    fn a_large_scan_is_found_through_its_runs_in_eight_bytes_a_result() {
        let severities = ["CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO"];
        let mut original = OriginalSeverities::default();
        for n in 0..200_000 {
            original.insert(&format!("hash-{n}"), severities[n % 5]);
        }
        original.settle();
        assert_eq!(original.packed.capacity(), 200_000);
        for n in (0..200_000).step_by(997) {
            assert_eq!(original.get(&format!("hash-{n}")), Some(severities[n % 5]));
        }
        assert_eq!(original.get("hash-200000"), None);
        let empty = {
            let mut empty = OriginalSeverities::default();
            empty.settle();
            empty
        };
        assert_eq!(empty.get("hash-1"), None);
    }

    #[test]
    fn a_severity_beyond_the_distinct_ones_a_scan_can_have_is_refused() {
        let mut original = OriginalSeverities::default();
        for n in 0..MOST_SEVERITIES {
            assert!(original.insert(&format!("h{n}"), &format!("S{n}")));
        }
        assert!(!original.insert("one-more", "S-extra"));
        assert!(
            original.insert("h-again", "S7"),
            "a known severity still goes in"
        );
        original.settle();
        assert_eq!(original.get("one-more"), None);
        assert_eq!(original.get("h-again"), Some("S7"));
        assert_eq!(original.get("h255"), Some("S255"));
    }
}
