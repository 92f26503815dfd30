//! Reconciliation against the last committed run, per asset: each finding is NEW (first seen),
//! ACTIVE (seen open before), REOPENED (fixed before, back now) or FIXED (sent FIXED: the vendor's
//! status, a triage state or a custom map says so; or absent from a complete pull of its asset:
//! then an explicit closure record is emitted). The
//! ledger is what the connector has reported for one asset, open or fixed; each run writes the next
//! one, and an asset whose pull is not complete carries its ledger forward unchanged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{LazyLock, PoisonError, RwLock};

use compact_str::CompactString;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize};

use super::batch::{LineSink, LineWriter, line_envelope};
use crate::Engine;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Lifecycle {
    New,
    Active,
    Reopened,
    Fixed,
}

impl Lifecycle {
    /// Every status, in the order reports list them.
    pub const ALL: [Self; 4] = [Self::New, Self::Active, Self::Reopened, Self::Fixed];

    /// The status of a finding seen now, reported `closed` (FIXED) or open, given its entry in
    /// the previous ledger.
    pub fn against(previous: Option<&LedgerEntry>, closed: bool) -> Self {
        match previous {
            _ if closed => Self::Fixed,
            None => Self::New,
            Some(entry) if entry.open => Self::Active,
            Some(_) => Self::Reopened,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "NEW",
            Self::Active => "ACTIVE",
            Self::Reopened => "REOPENED",
            Self::Fixed => "FIXED",
        }
    }
}

impl std::fmt::Display for Lifecycle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What was last reported for one finding: enough to classify it next time and to write its
/// closure record if it disappears. Sixteen bytes, held once per distinct entry of an asset (its
/// findings share them): its texts (a severity, a status, a run id) are the same few for every
/// finding of an asset, so each is a [`Text`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub open: bool,
    pub qds: u8,
    pub severity: Text,
    pub status: Text,
    /// The run that first reported it.
    pub first_seen: Text,
    /// The engine that reports it; absent in ledgers written before engines, whose findings are
    /// the connection's SAST or DAST ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Engine>,
}

impl LedgerEntry {
    /// The engine that reports it (`legacy` for an entry written before engines).
    pub fn engine_or(&self, legacy: Engine) -> Engine {
        self.engine.unwrap_or(legacy)
    }
}

/// A text held once per process and named by a number: the severities, statuses and run ids
/// millions of ledger entries repeat. Each distinct text stays for the life of the process; a
/// ledger holds a handful (its severities, its statuses, the runs that first saw its findings).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Text(u32);

#[derive(Default)]
struct Texts {
    numbers: HashMap<&'static str, u32, foldhash::fast::RandomState>,
    texts: Vec<&'static str>,
}

static TEXTS: LazyLock<RwLock<Texts>> = LazyLock::new(RwLock::default);

impl Text {
    pub fn as_str(self) -> &'static str {
        let texts = TEXTS.read().unwrap_or_else(PoisonError::into_inner);
        texts.texts[self.0 as usize]
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        if let Some(&number) = TEXTS
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .numbers
            .get(text)
        {
            return Self(number);
        }
        let mut texts = TEXTS.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(&number) = texts.numbers.get(text) {
            return Self(number);
        }
        let number = u32::try_from(texts.texts.len()).expect("fewer than 2^32 distinct texts");
        let held: &'static str = Box::leak(text.into());
        texts.texts.push(held);
        texts.numbers.insert(held, number);
        Self(number)
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Text {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Text, E> {
                Ok(Text::from(text))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// One asset's reported findings, keyed by `externalFindingId`, with the asset part of its lines
/// (so a deleted project's findings can still be closed).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    pub vendor_item_id: String,
    /// The branch of the scan the findings came from (SAST), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The branch of an engine's scan where it differs from `branch` (an engine whose latest
    /// scan is another than the asset's main scan): `None` (null) for a scan that names none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub engine_branches: BTreeMap<Engine, Option<String>>,
    /// `"externalAssetId":…,"asset":{…},` as the lines carry it.
    pub asset: String,
    /// The asset of an engine's findings where it differs from `asset`: the engines' maps name
    /// different assets (one engine's map changed alone), or an engine keeps its findings where
    /// ETM holds them after the map moved the others (its scan not pulled, its pull without a
    /// record of its own beside records of an unknown type, or the asset left out by the
    /// asset-type filter) until it moves.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub engine_assets: BTreeMap<Engine, String>,
    pub findings: Findings,
}

/// What [`Findings::look_up`] found of an id.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LookUp {
    pub position: Option<usize>,
    pub suffixed: bool,
}

/// A ledger's findings would need more than 4 GiB of ids: far beyond what one function's memory
/// holds, so the asset cannot be reconciled in one piece.
#[derive(Debug, thiserror::Error)]
#[error(
    "the asset's ledger would hold more than 4 GiB of finding ids; it is too large to reconcile in one piece"
)]
pub struct LedgerFull;

/// One asset's findings by `externalFindingId`, packed: the ids end to end in one string, and per
/// finding the 4-byte end of its id and the number of its entry among the distinct ones (2
/// bytes, 4 past 65,536 distinct entries; see [`EntryNumbers`]), and 4 more for its place in
/// `order` when the entries are not stored in id order. A map of owned ids took about 47 bytes a
/// finding beside the ids (tree nodes part full, each id in 24 bytes); this takes 6 to 12, so a
/// 5,000,000-finding asset's ledger fits where the map's did not.
/// Lookups are binary searches in id order; stored, it is a JSON object in id order.
#[derive(Clone, Default)]
pub struct Findings {
    ids: String,
    ends: Vec<u32>,
    /// Per stored position, the number of its entry in `distinct`.
    entries: EntryNumbers,
    distinct: DistinctEntries,
    /// The stored positions in id order, when the stored order is not id order. A position left
    /// out is not a finding (its id was stored again later, and the later entry won).
    order: Option<Vec<u32>>,
    /// Positions from here on were appended out of id order ([`Self::append_unsettled`]): they
    /// are not findings, to lookups or walks, until [`Self::settle`].
    settled: usize,
}

impl Findings {
    /// How many findings (appended ones not yet settled are not counted).
    pub fn len(&self) -> usize {
        self.order.as_ref().map_or(self.settled, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many entries are stored: the findings, and entries an id stored again replaced. Stored
    /// positions are below it.
    pub(crate) fn stored(&self) -> usize {
        self.entries.len()
    }

    /// The stored position of the `rank`-th finding in id order.
    fn at_rank(&self, rank: usize) -> usize {
        self.order
            .as_ref()
            .map_or(rank, |order| order[rank] as usize)
    }

    pub(crate) fn id_at(&self, position: usize) -> &str {
        let start = position
            .checked_sub(1)
            .map_or(0, |before| self.ends[before] as usize);
        &self.ids[start..self.ends[position] as usize]
    }

    /// The rank of the first finding whose id is not below `id`.
    fn rank_of(&self, id: &str) -> usize {
        let (mut low, mut high) = (0, self.len());
        while low < high {
            let middle = low + (high - low) / 2;
            if self.id_at(self.at_rank(middle)) < id {
                low = middle + 1;
            } else {
                high = middle;
            }
        }
        low
    }

    /// Where `id` stands among the findings, in one search: the stored position of its finding,
    /// and whether some finding carries it with an identity suffix (`<id>#…`). The ids after `id`
    /// that continue it with a byte up to `#` come first in order, so the walk stops at the first
    /// longer id that continues it otherwise (`id0`, `id-x`).
    pub(crate) fn look_up(&self, id: &str) -> LookUp {
        let rank = self.rank_of(id);
        let position = (rank < self.len())
            .then(|| self.at_rank(rank))
            .filter(|&position| self.id_at(position) == id);
        let suffixed = (rank + usize::from(position.is_some())..self.len())
            .map(|rank| self.id_at(self.at_rank(rank)))
            .map_while(|key| {
                let next = *key.strip_prefix(id)?.as_bytes().first()?;
                (next <= b'#').then_some(next)
            })
            .any(|next| next == b'#');
        LookUp { position, suffixed }
    }

    /// The one finding stored under `id` with a suffix (`<id>#…`), where there is exactly one:
    /// its id and position.
    pub(crate) fn only_suffixed(&self, id: &str) -> Option<(&str, usize)> {
        // Ids sort by their bytes: those that begin `<id>#` stand together, from its rank.
        let start = format!("{id}#");
        let mut suffixed = (self.rank_of(&start)..self.len())
            .map(|rank| self.at_rank(rank))
            .map(|position| (self.id_at(position), position))
            .take_while(|(key, _)| key.starts_with(&start));
        let only = suffixed.next()?;
        suffixed.next().is_none().then_some(only)
    }

    /// The stored position of `id`'s finding.
    pub(crate) fn position(&self, id: &str) -> Option<usize> {
        let rank = self.rank_of(id);
        (rank < self.len())
            .then(|| self.at_rank(rank))
            .filter(|&position| self.id_at(position) == id)
    }

    pub fn get(&self, id: &str) -> Option<&LedgerEntry> {
        self.position(id).map(|position| self.entry(position))
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.position(id).is_some()
    }

    /// The entry at a stored position ([`Self::position`]).
    pub(crate) fn entry(&self, position: usize) -> &LedgerEntry {
        self.distinct.get(self.entries.get(position))
    }

    /// Rewrites the entry at a stored position.
    pub(crate) fn set_entry(&mut self, position: usize, entry: LedgerEntry) {
        let number = self.distinct.number(entry);
        self.entries.set(position, number);
    }

    /// The findings in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &LedgerEntry)> {
        (0..self.len()).map(|rank| {
            let position = self.at_rank(rank);
            (self.id_at(position), self.entry(position))
        })
    }

    /// The stored positions in id order.
    pub(crate) fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.len()).map(|rank| self.at_rank(rank))
    }

    /// Marks every finding closed.
    pub fn close_every_finding(&mut self) {
        self.distinct.close_every_entry();
    }

    /// Marks closed every open finding of the engines `engines` holds (an entry that names no
    /// engine is `legacy`'s).
    pub fn close_findings_of(&mut self, legacy: Engine, engines: &BTreeSet<Engine>) {
        let closing: Vec<usize> = self
            .positions()
            .filter(|&position| {
                let entry = self.entry(position);
                entry.open && engines.contains(&entry.engine_or(legacy))
            })
            .collect();
        for position in closing {
            let entry = LedgerEntry {
                open: false,
                ..*self.entry(position)
            };
            self.set_entry(position, entry);
        }
    }

    /// Adds a finding, or replaces the entry of one with the same id. Adding in id order is
    /// cheap; adding out of it moves every later position.
    pub fn insert(&mut self, id: &str, entry: LedgerEntry) -> Result<(), LedgerFull> {
        self.settle();
        if let Some(position) = self.position(id) {
            self.set_entry(position, entry);
            return Ok(());
        }
        let rank = self.rank_of(id);
        let last_in_stored_order = self.order.is_none() && rank == self.len();
        let position = self.append_unsettled(id, entry)?;
        self.settled = self.entries.len();
        if !last_in_stored_order {
            let order = self
                .order
                .get_or_insert_with(|| (0..position as u32).collect());
            order.insert(rank, position as u32);
        }
        Ok(())
    }

    /// Stores a finding without placing it in id order: it is not a finding until
    /// [`Self::settle`]. Answers its stored position.
    pub(crate) fn append_unsettled(
        &mut self,
        id: &str,
        entry: LedgerEntry,
    ) -> Result<usize, LedgerFull> {
        let end = u32::try_from(self.ids.len() + id.len()).map_err(|_| LedgerFull)?;
        // Positions, and the count after this one, stay within u32.
        u32::try_from(self.entries.len() + 1).map_err(|_| LedgerFull)?;
        if self.entries.len() == self.entries.capacity() {
            // A quarter more at a time, not double: the last doubling of a large asset's ledger
            // leaves up to half its room unused at the peak. Large blocks grow by remapping
            // pages, not copying, so growing more often costs little.
            let more = self.entries.len() / 4 + 64;
            self.entries.reserve_exact(more);
            self.ends.reserve_exact(more);
        }
        if self.ids.len() + id.len() > self.ids.capacity() {
            self.ids.reserve_exact(self.ids.len() / 4 + id.len() + 1024);
        }
        self.ids.push_str(id);
        self.ends.push(end);
        let number = self.distinct.number(entry);
        self.entries.push(number);
        Ok(self.entries.len() - 1)
    }

    /// Places what was appended in id order; of an id stored twice, the later entry wins.
    /// Answers the ids appended that were stored or appended before (each once).
    pub(crate) fn settle(&mut self) -> Vec<String> {
        let mut replaced = Vec::new();
        if self.settled == self.entries.len() {
            return replaced;
        }
        let mut appended: Vec<u32> = (self.settled as u32..self.entries.len() as u32).collect();
        // Stable: of equal ids, the later stays last, and is the one kept.
        appended.sort_by(|&a, &b| self.id_at(a as usize).cmp(self.id_at(b as usize)));
        appended.dedup_by(|later, earlier| {
            let same = self.id_at(*later as usize) == self.id_at(*earlier as usize);
            if same {
                replaced.push(self.id_at(*earlier as usize).to_string());
                *earlier = *later;
            }
            same
        });
        if self.is_empty() {
            // Nothing settled to merge with (a first pull): the appended are the order.
            return self.place(appended, replaced);
        }
        let mut order = Vec::with_capacity(self.len() + appended.len());
        let mut appended = appended.into_iter().peekable();
        for rank in 0..self.len() {
            let position = self.at_rank(rank);
            let id = self.id_at(position);
            while let Some(&next) = appended.peek() {
                if self.id_at(next as usize) >= id {
                    break;
                }
                order.push(next);
                appended.next();
            }
            // The same id appended again replaces the settled one.
            if appended
                .peek()
                .is_some_and(|&next| self.id_at(next as usize) == id)
            {
                replaced.push(id.to_string());
                continue;
            }
            order.push(position as u32);
        }
        order.extend(appended);
        self.place(order, replaced)
    }

    /// Takes `order` (every finding's stored position, in id order) as settled; answers
    /// `replaced`, sorted, each id once.
    fn place(&mut self, order: Vec<u32>, mut replaced: Vec<String>) -> Vec<String> {
        self.settled = self.entries.len();
        let in_stored_order = order.len() == self.entries.len()
            && order.iter().enumerate().all(|(i, &p)| p as usize == i);
        self.order = (!in_stored_order).then_some(order);
        replaced.sort_unstable();
        replaced.dedup();
        replaced
    }

    /// Adds every finding of `other`; of an id in both, `other`'s entry wins.
    pub fn extend(&mut self, other: &Findings) -> Result<(), LedgerFull> {
        for (id, entry) in other.iter() {
            self.append_unsettled(id, *entry)?;
        }
        self.settle();
        Ok(())
    }
}

/// Per stored position, the number of its finding's entry among the distinct ones: two bytes
/// each while there are at most 65,536 distinct entries (an asset's findings share a few
/// hundred), four from then on.
#[derive(Clone)]
enum EntryNumbers {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

impl Default for EntryNumbers {
    fn default() -> Self {
        Self::Narrow(Vec::new())
    }
}

impl EntryNumbers {
    fn len(&self) -> usize {
        match self {
            Self::Narrow(numbers) => numbers.len(),
            Self::Wide(numbers) => numbers.len(),
        }
    }

    fn capacity(&self) -> usize {
        match self {
            Self::Narrow(numbers) => numbers.capacity(),
            Self::Wide(numbers) => numbers.capacity(),
        }
    }

    fn reserve_exact(&mut self, more: usize) {
        match self {
            Self::Narrow(numbers) => numbers.reserve_exact(more),
            Self::Wide(numbers) => numbers.reserve_exact(more),
        }
    }

    fn get(&self, position: usize) -> u32 {
        match self {
            Self::Narrow(numbers) => u32::from(numbers[position]),
            Self::Wide(numbers) => numbers[position],
        }
    }

    /// The numbers, four bytes each from now on if `number` needs them.
    fn wide_enough(&mut self, number: u32) -> &mut Self {
        if let Self::Narrow(numbers) = self
            && u16::try_from(number).is_err()
        {
            let mut wide = Vec::with_capacity(numbers.capacity());
            wide.extend(numbers.iter().map(|&n| u32::from(n)));
            *self = Self::Wide(wide);
        }
        self
    }

    fn set(&mut self, position: usize, number: u32) {
        match self.wide_enough(number) {
            Self::Narrow(numbers) => numbers[position] = number as u16,
            Self::Wide(numbers) => numbers[position] = number,
        }
    }

    fn push(&mut self, number: u32) {
        match self.wide_enough(number) {
            Self::Narrow(numbers) => numbers.push(number as u16),
            Self::Wide(numbers) => numbers.push(number),
        }
    }
}

/// The distinct entries of one asset's findings, each numbered once: millions of findings share
/// a few severities, statuses, scores, engines and first runs.
#[derive(Clone, Default)]
struct DistinctEntries {
    entries: Vec<LedgerEntry>,
    numbers: HashMap<LedgerEntry, u32, foldhash::fast::RandomState>,
}

impl DistinctEntries {
    fn get(&self, number: u32) -> &LedgerEntry {
        &self.entries[number as usize]
    }

    /// The number of `entry`, numbering it if it is new.
    fn number(&mut self, entry: LedgerEntry) -> u32 {
        *self.numbers.entry(entry).or_insert_with(|| {
            self.entries.push(entry);
            u32::try_from(self.entries.len() - 1)
                .expect("fewer than 2^32 distinct entries: each is a score and a few texts")
        })
    }

    /// Closes every entry. Two that differed only in being open become one; both numbers stay
    /// valid, and new findings get the first.
    fn close_every_entry(&mut self) {
        self.numbers.clear();
        for (number, entry) in self.entries.iter_mut().enumerate() {
            entry.open = false;
            self.numbers.entry(*entry).or_insert(number as u32);
        }
    }
}

impl std::ops::Index<&str> for Findings {
    type Output = LedgerEntry;

    fn index(&self, id: &str) -> &LedgerEntry {
        self.get(id)
            .unwrap_or_else(|| panic!("no finding {id:?} in the ledger"))
    }
}

impl PartialEq for Findings {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Findings {}

impl std::fmt::Debug for Findings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Findings {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.settled != self.entries.len() {
            // A bug, never a ledger stored without the findings of its last pull.
            return Err(serde::ser::Error::custom(
                "the ledger has findings appended and not yet settled",
            ));
        }
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (id, entry) in self.iter() {
            map.serialize_entry(id, entry)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Findings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Findings;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of findings by id")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Findings, A::Error> {
                let mut reading = Reading::default();
                while let Some((id, entry)) = map.next_entry::<CompactString, LedgerEntry>()? {
                    reading.push(&id, entry).map_err(serde::de::Error::custom)?;
                }
                Ok(reading.finish())
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// Findings as a stored ledger's map gives them. Stored ledgers are in id order, so each is
/// settled as it comes; one that is not (edited by hand) is put in id order at the end.
struct Reading {
    findings: Findings,
    in_order: bool,
}

impl Default for Reading {
    fn default() -> Self {
        Self {
            findings: Findings::default(),
            in_order: true,
        }
    }
}

impl Reading {
    fn push(&mut self, id: &str, entry: LedgerEntry) -> Result<(), LedgerFull> {
        let findings = &mut self.findings;
        let position = findings.append_unsettled(id, entry)?;
        self.in_order &= position == 0 || findings.id_at(position - 1) < id;
        if self.in_order {
            findings.settled = findings.entries.len();
        }
        Ok(())
    }

    fn finish(mut self) -> Findings {
        self.findings.settle();
        self.findings
    }
}

/// A stored ledger read straight into one part per engine, as the transform reconciles it: the
/// ledger of an asset every engine reports on is never held whole beside its parts.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerByEngine {
    vendor_item_id: String,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    engine_branches: BTreeMap<Engine, Option<String>>,
    asset: String,
    #[serde(default)]
    engine_assets: BTreeMap<Engine, String>,
    findings: FindingsByEngine,
}

/// A ledger's findings by the engine each entry names (`None`: written before engines).
struct FindingsByEngine(BTreeMap<Option<Engine>, Findings>);

impl<'de> Deserialize<'de> for FindingsByEngine {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FindingsByEngine;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of findings by id")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<FindingsByEngine, A::Error> {
                let mut parts: BTreeMap<Option<Engine>, Reading> = BTreeMap::new();
                while let Some((id, entry)) = map.next_entry::<CompactString, LedgerEntry>()? {
                    parts
                        .entry(entry.engine)
                        .or_default()
                        .push(&id, entry)
                        .map_err(serde::de::Error::custom)?;
                }
                Ok(FindingsByEngine(
                    parts
                        .into_iter()
                        .map(|(engine, reading)| (engine, reading.finish()))
                        .collect(),
                ))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

impl LedgerByEngine {
    /// One ledger per engine (entries written before engines belong to `legacy`); each keeps its
    /// engine's asset and branch.
    pub fn into_parts(self, legacy: Engine) -> Result<BTreeMap<Engine, Ledger>, LedgerFull> {
        let mut parts: BTreeMap<Engine, Ledger> = BTreeMap::new();
        for (engine, findings) in self.findings.0 {
            let engine = engine.unwrap_or(legacy);
            match parts.get_mut(&engine) {
                // Entries of the legacy engine written before and after engines: rare, copied.
                Some(part) => part.findings.extend(&findings)?,
                None => {
                    let branch = match self.engine_branches.get(&engine) {
                        Some(branch) => branch.as_ref(),
                        None => self.branch.as_ref(),
                    };
                    let asset = self.engine_assets.get(&engine).unwrap_or(&self.asset);
                    let part = Ledger {
                        vendor_item_id: self.vendor_item_id.clone(),
                        branch: branch.cloned(),
                        asset: asset.clone(),
                        findings,
                        ..Ledger::default()
                    };
                    parts.insert(engine, part);
                }
            }
        }
        Ok(parts)
    }
}

/// An asset's next ledger from its engines' parts, merged in id order only as it is written:
/// the same JSON as one ledger holding them all, without a second copy of their findings.
#[derive(Default)]
pub struct LedgerParts {
    /// The first part's item, asset and branch: the ledger's.
    head: Option<Ledger>,
    engine_branches: BTreeMap<Engine, Option<String>>,
    engine_assets: BTreeMap<Engine, String>,
    /// Every part's findings; where two hold an id, the later one's entry is written.
    findings: Vec<Findings>,
}

impl LedgerParts {
    /// Adds `engine`'s part; its branch and asset are recorded as the engine's where they
    /// differ from the first part's.
    pub fn absorb(&mut self, engine: Engine, mut part: Ledger) {
        let findings = std::mem::take(&mut part.findings);
        match &self.head {
            None => self.head = Some(part),
            Some(head) => {
                // A scan that names no branch beside one that does is recorded too (null), or
                // the engine would read the first part's branch back.
                if part.branch != head.branch {
                    self.engine_branches.insert(engine, part.branch);
                }
                if part.asset != head.asset {
                    self.engine_assets.insert(engine, part.asset);
                }
            }
        }
        self.findings.push(findings);
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_none()
    }
}

impl Serialize for LedgerParts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let empty = Ledger::default();
        let head = self.head.as_ref().unwrap_or(&empty);
        let mut ledger = serializer.serialize_struct("Ledger", 6)?;
        ledger.serialize_field("vendorItemId", &head.vendor_item_id)?;
        match &head.branch {
            Some(branch) => ledger.serialize_field("branch", branch)?,
            None => ledger.skip_field("branch")?,
        }
        if self.engine_branches.is_empty() {
            ledger.skip_field("engineBranches")?;
        } else {
            ledger.serialize_field("engineBranches", &self.engine_branches)?;
        }
        ledger.serialize_field("asset", &head.asset)?;
        if self.engine_assets.is_empty() {
            ledger.skip_field("engineAssets")?;
        } else {
            ledger.serialize_field("engineAssets", &self.engine_assets)?;
        }
        ledger.serialize_field("findings", &MergedFindings(&self.findings))?;
        ledger.end()
    }
}

/// Several findings' maps written as one, in id order.
struct MergedFindings<'f>(&'f [Findings]);

impl Serialize for MergedFindings<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.0.iter().any(|f| f.settled != f.entries.len()) {
            return Err(serde::ser::Error::custom(
                "the ledger has findings appended and not yet settled",
            ));
        }
        let mut walks: Vec<_> = self.0.iter().map(|f| f.iter().peekable()).collect();
        let mut map = serializer.serialize_map(None)?;
        loop {
            // The least id at the head of any walk; of equal ids, the last part's entry.
            let mut least: Option<(usize, &str)> = None;
            for (part, walk) in walks.iter_mut().enumerate() {
                if let Some(&(id, _)) = walk.peek()
                    && least.is_none_or(|(_, least)| id <= least)
                {
                    least = Some((part, id));
                }
            }
            let Some((part, id)) = least else { break };
            for walk in &mut walks[..part] {
                walk.next_if(|(other, _)| *other == id);
            }
            let (id, entry) = walks[part].next().expect("peeked");
            map.serialize_entry(id, entry)?;
        }
        map.end()
    }
}

impl Ledger {
    /// Whether some finding of this ledger carries `id` with an identity suffix (`<id>#…`). The
    /// keys after `id` that continue it with a byte up to `#` come first in order, so the walk
    /// stops at the first longer key that continues it otherwise (`id0`, `id-x`), without
    /// building a prefix.
    pub fn has_suffixed(&self, id: &str) -> bool {
        self.findings.look_up(id).suffixed
    }

    pub fn open_findings(&self) -> u64 {
        self.findings.iter().filter(|(_, e)| e.open).count() as u64
    }

    /// A closure record for a finding that was open and is absent now, written into `out` (the
    /// line that carries it): no record is built apart from its line, as millions may close at
    /// once.
    pub fn write_closure(id: &str, entry: &LedgerEntry, reason: &str, out: &mut Vec<u8>) {
        // The keys in the order closures have always been written.
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Closure<'a> {
            closed_reason: &'a str,
            external_finding_id: &'a str,
            finding_status: &'static str,
            lifecycle_status: &'static str,
            qds: u8,
            vendor_severity: &'a str,
            vendor_status: &'a str,
        }
        let closure = Closure {
            closed_reason: reason,
            external_finding_id: id,
            finding_status: "FIXED",
            lifecycle_status: "FIXED",
            qds: entry.qds,
            vendor_severity: entry.severity.as_str(),
            vendor_status: entry.status.as_str(),
        };
        serde_json::to_writer(out, &closure).expect("writing to memory cannot fail");
    }
}

/// The open findings of a stored ledger, counted as it is read, without building it: a ledger
/// carried forward unchanged is copied as it is stored. Also whose they are.
#[derive(Debug, Deserialize)]
#[serde(from = "StoredOpenFindings")]
pub struct OpenFindings {
    pub count: u64,
    /// The engines of the open findings (`None`: entries written before engines).
    pub engines: BTreeSet<Option<Engine>>,
    pub vendor_item_id: String,
    pub branch: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredOpenFindings {
    #[serde(rename = "findings", deserialize_with = "count_open")]
    open: (u64, BTreeSet<Option<Engine>>),
    #[serde(default)]
    vendor_item_id: String,
    #[serde(default)]
    branch: Option<String>,
}

impl From<StoredOpenFindings> for OpenFindings {
    fn from(stored: StoredOpenFindings) -> Self {
        let (count, engines) = stored.open;
        Self {
            count,
            engines,
            vendor_item_id: stored.vendor_item_id,
            branch: stored.branch,
        }
    }
}

impl OpenFindings {
    /// Whether findings of any of `engines` are open (`legacy` for entries written before
    /// engines).
    pub fn open_of_any(&self, engines: &BTreeSet<Engine>, legacy: Engine) -> bool {
        (self.engines.iter()).any(|engine| engines.contains(&engine.unwrap_or(legacy)))
    }
}

fn count_open<'de, D: serde::Deserializer<'de>>(
    findings: D,
) -> Result<(u64, BTreeSet<Option<Engine>>), D::Error> {
    #[derive(Deserialize)]
    struct Openness {
        open: bool,
        #[serde(default)]
        engine: Option<Engine>,
    }
    struct Counter;
    impl<'de> serde::de::Visitor<'de> for Counter {
        type Value = (u64, BTreeSet<Option<Engine>>);
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of findings by id")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let (mut open, mut engines) = (0, BTreeSet::new());
            while let Some((_, entry)) = map.next_entry::<serde::de::IgnoredAny, Openness>()? {
                if entry.open {
                    open += 1;
                    engines.insert(entry.engine);
                }
            }
            Ok((open, engines))
        }
    }
    findings.deserialize_map(Counter)
}

/// The `externalAssetId` of an asset as lines carry it (`"externalAssetId":…,"asset":{…},`);
/// `None` for none, or for text that does not read.
pub fn external_asset_id(asset: &str) -> Option<String> {
    let fragment = asset.trim().trim_end_matches(',');
    let object: serde_json::Value = serde_json::from_str(&format!("{{{fragment}}}")).ok()?;
    match &object["externalAssetId"] {
        serde_json::Value::String(id) => Some(id.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// What [`close_all`] closed of one engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Closed {
    pub findings: u64,
    pub lines: u64,
}

impl Closed {
    /// Adds each engine's of `from` into `into`.
    pub fn add_by_engine(into: &mut BTreeMap<Engine, Closed>, from: BTreeMap<Engine, Closed>) {
        for (engine, closed) in from {
            let all = into.entry(engine).or_default();
            all.findings += closed.findings;
            all.lines += closed.lines;
        }
    }
}

/// Closure records for every open finding of `ledger` (an asset whose project or environment was
/// deleted), or only of the engines `only` holds, handed to `out` line by line as the lines fill,
/// one engine after another: an asset of millions of findings has more closure lines than memory
/// holds. Returns what was closed of each engine; the ledger is left with those closed once all
/// are handed over.
pub fn close_all(
    ledger: &mut Ledger,
    context: &super::TransformContext,
    legacy: Engine,
    only: Option<&BTreeSet<Engine>>,
    reason: &str,
    max_findings_per_line: usize,
    out: &mut LineSink,
) -> std::io::Result<BTreeMap<Engine, Closed>> {
    let engines: BTreeSet<Engine> = ledger
        .findings
        .iter()
        .filter(|(_, e)| e.open)
        .map(|(_, e)| e.engine_or(legacy))
        .filter(|engine| only.is_none_or(|only| only.contains(engine)))
        .collect();
    let mut closed = BTreeMap::new();
    for engine in engines {
        let of_this: &mut Closed = closed.entry(engine).or_default();
        let asset = ledger.engine_assets.get(&engine).unwrap_or(&ledger.asset);
        let mut lines = LineWriter::new(
            line_envelope(context, engine, &ledger.vendor_item_id),
            asset.as_bytes().to_vec(),
            0,
            max_findings_per_line,
        );
        let of_engine = ledger
            .findings
            .iter()
            .filter(|(_, e)| e.open && e.engine_or(legacy) == engine);
        for (id, entry) in of_engine {
            lines.finding(|line| Ledger::write_closure(id, entry, reason, line));
            of_this.lines += lines.hand_over(false, out)?;
            of_this.findings += 1;
        }
        of_this.lines += lines.hand_over(true, out)?;
    }
    match only {
        None => ledger.findings.close_every_finding(),
        Some(engines) => ledger.findings.close_findings_of(legacy, engines),
    }
    Ok(closed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_suffixed_id_is_found_among_ids_that_start_alike() {
        let mut ledger = Ledger::default();
        for id in ["10", "10!", "100", "10-x", "10#a1b2", "2#ff", "1"] {
            ledger.findings.insert(id, entry(true)).unwrap();
        }
        assert!(ledger.has_suffixed("10"));
        assert!(ledger.has_suffixed("2"));
        assert!(!ledger.has_suffixed("1"), "`10#…` is not `1#…`");
        assert!(!ledger.has_suffixed("100"));
        assert!(!ledger.has_suffixed("3"));
    }

    fn entry(open: bool) -> LedgerEntry {
        LedgerEntry {
            open,
            qds: 70,
            severity: "HIGH".into(),
            status: "NEW".into(),
            first_seen: "r1".into(),
            engine: None,
        }
    }

    /// A deleted asset's open findings are closed line by line, one engine after another, each
    /// once; a sink that fails leaves the ledger as it was, to be closed by the next attempt.
    #[test]
    fn close_all_hands_over_each_engines_closures_as_lines_fill() {
        let mut ledger = Ledger::default();
        for n in 0..5 {
            ledger
                .findings
                .insert(&format!("s{n}"), entry(true))
                .unwrap();
        }
        let sca = LedgerEntry {
            engine: Some(Engine::Sca),
            ..entry(true)
        };
        for id in ["c0", "c1", "c2"] {
            ledger.findings.insert(id, sca).unwrap();
        }
        ledger.findings.insert("fixed", entry(false)).unwrap();
        let context = crate::mapping::TransformContext {
            connection_id: "c".into(),
            run_id: "r2".into(),
            connector_kind: crate::ConnectorKind::Sast,
            produced_at: "2026-12-04T00:00:00Z".into(),
        };
        let close = |ledger: &mut Ledger, out: &mut LineSink| {
            close_all(ledger, &context, Engine::Sast, None, "gone", 2, out)
        };

        let mut taken = 0;
        let mut refusing_the_third = |_: &[u8]| {
            taken += 1;
            match taken {
                3 => Err(std::io::Error::other("disk full")),
                _ => Ok(()),
            }
        };
        let refused = close(&mut ledger, &mut refusing_the_third).unwrap_err();
        assert_eq!(refused.to_string(), "disk full");
        assert_eq!(
            ledger.open_findings(),
            8,
            "nothing closed in the ledger when a line was refused, though two were handed over"
        );

        let mut lines: Vec<serde_json::Value> = Vec::new();
        let closed = close(&mut ledger, &mut |line| {
            lines.push(serde_json::from_slice(line).unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(closed.values().map(|c| c.findings).sum::<u64>(), 8);
        assert_eq!(
            closed.values().map(|c| c.lines).sum::<u64>(),
            lines.len() as u64
        );
        assert_eq!(ledger.open_findings(), 0);
        let summary: Vec<(String, u64, Vec<String>)> = lines
            .iter()
            .map(|line| {
                let ids = line["findingGroup"]["findings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| {
                        assert_eq!(f["findingStatus"], "FIXED");
                        f["externalFindingId"].as_str().unwrap().to_string()
                    })
                    .collect();
                (
                    line["engine"].as_str().unwrap().to_string(),
                    line["part"].as_u64().unwrap(),
                    ids,
                )
            })
            .collect();
        let line = |engine: &str, part: u64, ids: &[&str]| {
            (
                engine.to_string(),
                part,
                ids.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            summary,
            [
                line("sast", 0, &["s0", "s1"]),
                line("sast", 1, &["s2", "s3"]),
                line("sast", 2, &["s4"]),
                line("sca", 0, &["c0", "c1"]),
                line("sca", 1, &["c2"]),
            ]
        );
    }

    /// Closing only some engines (a branch of a listed project that lost its last scan of the
    /// engines the connection delivers): their open findings close, with closures; another
    /// engine's stay open in the ledger, entries stored out of id order included.
    #[test]
    fn close_all_of_some_engines_leaves_the_others_open() {
        let mut ledger = Ledger::default();
        let kics = LedgerEntry {
            engine: Some(Engine::Kics),
            ..entry(true)
        };
        for (id, entry) in [("s2", entry(true)), ("k1", kics), ("s1", entry(true))] {
            ledger.findings.insert(id, entry).unwrap();
        }
        ledger.findings.insert("k0", kics).unwrap();
        let context = crate::mapping::TransformContext {
            connection_id: "c".into(),
            run_id: "r2".into(),
            connector_kind: crate::ConnectorKind::Sast,
            produced_at: "2026-12-04T00:00:00Z".into(),
        };
        let sast_only = BTreeSet::from([Engine::Sast]);
        let mut closed_ids = Vec::new();
        let closed = close_all(
            &mut ledger,
            &context,
            Engine::Sast,
            Some(&sast_only),
            "gone",
            10,
            &mut |line| {
                let line: serde_json::Value = serde_json::from_slice(line).unwrap();
                let findings = line["findingGroup"]["findings"].as_array().unwrap();
                closed_ids.extend(findings.iter().map(|f| f["externalFindingId"].to_string()));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(closed.keys().collect::<Vec<_>>(), [&Engine::Sast]);
        assert_eq!(closed_ids, [r#""s1""#, r#""s2""#]);
        let open: Vec<&str> = ledger
            .findings
            .iter()
            .filter(|(_, e)| e.open)
            .map(|(id, _)| id)
            .collect();
        assert_eq!(open, ["k0", "k1"], "the KICS findings stay open");
        assert!(!ledger.findings["s1"].open && !ledger.findings["s2"].open);
    }

    #[test]
    fn findings_are_classified_against_the_previous_ledger() {
        let mut previous = Ledger::default();
        previous.findings.insert("open", entry(true)).unwrap();
        previous.findings.insert("closed", entry(false)).unwrap();
        let classify = |id: &str, fixed: bool| Lifecycle::against(previous.findings.get(id), fixed);
        assert_eq!(classify("brand-new", false), Lifecycle::New);
        assert_eq!(classify("open", false), Lifecycle::Active);
        assert_eq!(classify("closed", false), Lifecycle::Reopened);
        assert_eq!(classify("open", true), Lifecycle::Fixed);
        assert_eq!(previous.open_findings(), 1);
        let mut line = b"[".to_vec();
        Ledger::write_closure("open", &entry(true), "gone", &mut line);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "[{\"closedReason\":\"gone\",\"externalFindingId\":\"open\",\"findingStatus\":\"FIXED\",\
             \"lifecycleStatus\":\"FIXED\",\"qds\":70,\"vendorSeverity\":\"HIGH\",\"vendorStatus\":\"NEW\"}",
            "written after what the line held, its keys in the order closures always had"
        );
    }

    #[test]
    fn entries_hold_their_texts_in_sixteen_bytes_and_store_them_as_strings() {
        assert_eq!(std::mem::size_of::<LedgerEntry>(), 16);
        let (a, b) = (
            Text::from("TO_VERIFY"),
            Text::from(String::from("TO_VERIFY").as_str()),
        );
        assert_eq!(a, b);
        assert_ne!(a, Text::from("CONFIRMED"));
        assert_eq!(a.as_str(), "TO_VERIFY");
        let stored = serde_json::to_value(entry(true)).unwrap();
        assert_eq!(
            stored,
            serde_json::json!({"open": true, "qds": 70, "severity": "HIGH", "status": "NEW", "firstSeen": "r1"})
        );
        let read: LedgerEntry = serde_json::from_value(stored).unwrap();
        assert_eq!(read, entry(true));
        let error = serde_json::from_str::<LedgerEntry>(
            r#"{"open":true,"qds":1,"severity":3,"status":"NEW","firstSeen":"r1"}"#,
        )
        .unwrap_err();
        assert!(error.to_string().contains("expected a string"), "{error}");
    }

    #[test]
    fn open_findings_are_counted_from_the_stored_text() {
        let mut ledger = Ledger::default();
        ledger
            .findings
            .insert("a \"quoted\" id", entry(true))
            .unwrap();
        ledger.findings.insert("b", entry(false)).unwrap();
        let kics = LedgerEntry {
            engine: Some(Engine::Kics),
            ..entry(true)
        };
        ledger.findings.insert("c", kics).unwrap();
        let sca_closed = LedgerEntry {
            engine: Some(Engine::Sca),
            ..entry(false)
        };
        ledger.findings.insert("d", sca_closed).unwrap();
        let text = serde_json::to_vec(&ledger).unwrap();
        let counted: OpenFindings = serde_json::from_slice(&text).unwrap();
        assert_eq!(counted.count, ledger.open_findings());
        assert_eq!(counted.count, 2);
        assert_eq!(counted.engines, BTreeSet::from([None, Some(Engine::Kics)]));
        let of = |engines: &[Engine]| engines.iter().copied().collect::<BTreeSet<_>>();
        assert!(counted.open_of_any(&of(&[Engine::Sast]), Engine::Sast));
        assert!(!counted.open_of_any(&of(&[Engine::Sca]), Engine::Sast));
        assert!(counted.open_of_any(&of(&[Engine::Sca, Engine::Kics]), Engine::Sast));
        let broken = br#"{"vendorItemId":"p","asset":"","findings":{"a":{"qds":1}}}"#;
        let error = serde_json::from_slice::<OpenFindings>(broken).unwrap_err();
        assert!(
            error.to_string().contains("missing field `open`"),
            "{error}"
        );
    }

    /// What a ledger's findings must behave as: a map by id, in id order, the later entry
    /// winning. Operations are drawn over few ids, so replacing and reordering are common.
    #[derive(Clone, Debug)]
    enum Change {
        Insert(String, u8),
        Append(String, u8),
        /// Closes one settled finding, as a pull that did not see it does.
        Close(String),
        Settle,
        Extend(Vec<(String, u8)>),
        CloseEvery,
    }

    fn changes() -> impl proptest::strategy::Strategy<Value = Vec<Change>> {
        use proptest::prelude::*;
        let id = "[a-d#]{0,3}";
        // Few scores, so findings share entries and an entry comes back after it was closed.
        let qds = 0u8..3;
        let change = prop_oneof![
            (id, qds.clone()).prop_map(|(i, q)| Change::Insert(i, q)),
            (id, qds.clone()).prop_map(|(i, q)| Change::Append(i, q)),
            id.prop_map(Change::Close),
            Just(Change::Settle),
            proptest::collection::vec((id, qds), 0..6).prop_map(Change::Extend),
            Just(Change::CloseEvery),
        ];
        proptest::collection::vec(change, 0..40)
    }

    fn with_qds(qds: u8) -> LedgerEntry {
        LedgerEntry { qds, ..entry(true) }
    }

    proptest::proptest! {
        #[test]
        fn packed_findings_behave_as_a_map_in_id_order(changes in changes()) {
            let mut findings = Findings::default();
            // Each id's qds and whether it is open.
            let mut model: BTreeMap<String, (u8, bool)> = BTreeMap::new();
            let mut pending: Vec<(String, (u8, bool))> = Vec::new();
            for change in changes {
                match change {
                    Change::Append(id, qds) => {
                        findings.append_unsettled(&id, with_qds(qds)).unwrap();
                        pending.push((id, (qds, true)));
                    }
                    Change::Settle => {
                        findings.settle();
                        model.extend(pending.drain(..));
                    }
                    // Inserting and extending work on settled findings.
                    Change::Insert(id, qds) => {
                        findings.settle();
                        model.extend(pending.drain(..));
                        findings.insert(&id, with_qds(qds)).unwrap();
                        model.insert(id, (qds, true));
                    }
                    Change::Extend(other) => {
                        findings.settle();
                        model.extend(pending.drain(..));
                        let mut part = Findings::default();
                        for (id, qds) in &other {
                            part.insert(id, with_qds(*qds)).unwrap();
                        }
                        findings.extend(&part).unwrap();
                        model.extend(other.into_iter().map(|(id, qds)| (id, (qds, true))));
                    }
                    Change::Close(id) => {
                        findings.settle();
                        model.extend(pending.drain(..));
                        if let Some(position) = findings.position(&id) {
                            let entry = *findings.entry(position);
                            findings.set_entry(position, LedgerEntry { open: false, ..entry });
                        }
                        if let Some((_, open)) = model.get_mut(&id) {
                            *open = false;
                        }
                    }
                    Change::CloseEvery => {
                        findings.settle();
                        model.extend(pending.drain(..));
                        findings.close_every_finding();
                        model.values_mut().for_each(|(_, open)| *open = false);
                    }
                }
                // Appended findings are not found until settled.
                let found: Vec<(String, (u8, bool))> =
                    findings.iter().map(|(id, e)| (id.to_string(), (e.qds, e.open))).collect();
                let expected: Vec<(String, (u8, bool))> = model.clone().into_iter().collect();
                proptest::prop_assert_eq!(&found, &expected);
                for (id, held) in &model {
                    proptest::prop_assert_eq!(findings.get(id).map(|e| (e.qds, e.open)), Some(*held));
                }
                for (id, _) in pending.iter().filter(|(id, _)| !model.contains_key(id)) {
                    proptest::prop_assert!(!findings.contains_key(id));
                }
                let ledger = Ledger {
                    findings: findings.clone(),
                    ..Ledger::default()
                };
                for id in ["", "a", "ab", "b#", "c", "d"] {
                    let suffixed = model
                        .keys()
                        .any(|k| k.strip_prefix(id).is_some_and(|rest| rest.starts_with('#')));
                    proptest::prop_assert_eq!(ledger.has_suffixed(id), suffixed, "{}", id);
                }
            }
            findings.settle();
            model.extend(pending.drain(..));
            let stored = serde_json::to_string(&findings).unwrap();
            let as_map: BTreeMap<String, LedgerEntry> = serde_json::from_str(&stored).unwrap();
            proptest::prop_assert_eq!(
                as_map.into_iter().map(|(id, e)| (id, (e.qds, e.open))).collect::<Vec<_>>(),
                model.clone().into_iter().collect::<Vec<_>>()
            );
            let read: Findings = serde_json::from_str(&stored).unwrap();
            proptest::prop_assert_eq!(read, findings);
        }
    }

    #[test]
    fn a_stored_ledger_out_of_id_order_or_with_an_id_twice_is_read_in_order_and_the_later_wins() {
        let stored = r#"{"b":{"open":true,"qds":1,"severity":"HIGH","status":"NEW","firstSeen":"r1"},
            "a":{"open":true,"qds":2,"severity":"HIGH","status":"NEW","firstSeen":"r1"},
            "b":{"open":false,"qds":3,"severity":"LOW","status":"NEW","firstSeen":"r2"}}"#;
        let read: Findings = serde_json::from_str(stored).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(
            read.iter().map(|(id, _)| id).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!((read["b"].qds, read["b"].open), (3, false));
        assert_eq!(
            serde_json::to_string(&read).unwrap(),
            r#"{"a":{"open":true,"qds":2,"severity":"HIGH","status":"NEW","firstSeen":"r1"},"b":{"open":false,"qds":3,"severity":"LOW","status":"NEW","firstSeen":"r2"}}"#
        );
        let error = serde_json::from_str::<Findings>(r#"["a"]"#).unwrap_err();
        assert!(
            error.to_string().contains("a map of findings by id"),
            "{error}"
        );
    }

    #[test]
    fn a_stored_ledger_reads_into_parts_by_engine_each_in_its_branch_and_writes_back_the_same() {
        let of = |engine| LedgerEntry {
            engine,
            ..entry(true)
        };
        let mut ledger = Ledger {
            vendor_item_id: "p1".into(),
            branch: Some("main".into()),
            engine_branches: BTreeMap::from([
                (Engine::Sca, Some("release".to_string())),
                (Engine::Kics, None),
            ]),
            asset: r#""externalAssetId":"p1","#.into(),
            engine_assets: BTreeMap::from([(Engine::Sca, r#""externalAssetId":"p0","#.into())]),
            ..Ledger::default()
        };
        // "a" was written before engines: the legacy engine's, beside "c".
        for (id, engine) in [
            ("a", None),
            ("b", Some(Engine::Sca)),
            ("c", Some(Engine::Sast)),
            ("d", Some(Engine::Sca)),
            ("e", Some(Engine::Kics)),
        ] {
            ledger.findings.insert(id, of(engine)).unwrap();
        }
        let stored = serde_json::to_vec(&ledger).unwrap();
        let parts = serde_json::from_slice::<LedgerByEngine>(&stored)
            .unwrap()
            .into_parts(Engine::Sast)
            .unwrap();
        let ids = |engine| {
            parts[&engine]
                .findings
                .iter()
                .map(|(id, _)| id.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            (ids(Engine::Sast), ids(Engine::Sca)),
            (
                vec!["a".to_string(), "c".into()],
                vec!["b".to_string(), "d".into()]
            )
        );
        assert_eq!(parts[&Engine::Sca].branch.as_deref(), Some("release"));
        assert_eq!(parts[&Engine::Sast].branch.as_deref(), Some("main"));
        assert_eq!(
            parts[&Engine::Kics].branch,
            None,
            "a scan that named no branch, beside others that did"
        );
        assert_eq!(
            parts[&Engine::Sca].asset,
            ledger.engine_assets[&Engine::Sca]
        );
        assert_eq!(parts[&Engine::Sast].asset, ledger.asset);

        let mut joined = LedgerParts::default();
        for (engine, part) in parts {
            joined.absorb(engine, part);
        }
        assert_eq!(
            serde_json::to_vec(&joined).unwrap(),
            stored,
            "byte for byte"
        );
        assert!(
            serde_json::from_slice::<LedgerByEngine>(&stored[..stored.len() - 2]).is_err(),
            "a cut-off ledger is refused"
        );
        let none = LedgerByEngine {
            vendor_item_id: String::new(),
            branch: None,
            engine_branches: BTreeMap::new(),
            asset: String::new(),
            engine_assets: BTreeMap::new(),
            findings: FindingsByEngine(BTreeMap::new()),
        };
        assert!(none.into_parts(Engine::Sast).unwrap().is_empty());
        assert!(LedgerParts::default().is_empty());
    }

    proptest::proptest! {
        /// Parts written as one ledger: every id once, in id order, the last part's entry where
        /// parts share an id, and each later part's branch and asset where they differ from the
        /// first's.
        #[test]
        fn parts_written_as_one_ledger_match_one_ledger_built_from_them(
            parts in proptest::collection::vec(
                (
                    proptest::sample::select(vec![Engine::Sast, Engine::Sca, Engine::Kics]),
                    proptest::option::of(proptest::sample::select(vec!["main", "dev"])),
                    proptest::sample::select(vec!["a", "b"]),
                    proptest::collection::btree_map("[a-d]{1,3}(#[0-9a-f]{2})?", 0u8..100, 0..12),
                ),
                0..5,
            )
        ) {
            let mut joined = LedgerParts::default();
            let mut model = Ledger::default();
            for (number, (engine, branch, asset, findings)) in parts.iter().enumerate() {
                let mut part = Ledger {
                    vendor_item_id: "p1".into(),
                    branch: branch.map(str::to_string),
                    asset: asset.to_string(),
                    ..Ledger::default()
                };
                for (id, qds) in findings {
                    let entry = LedgerEntry { qds: *qds, engine: Some(*engine), ..entry(true) };
                    part.findings.insert(id, entry).unwrap();
                    model.findings.insert(id, entry).unwrap();
                }
                if number == 0 {
                    (model.vendor_item_id, model.branch, model.asset) =
                        ("p1".into(), part.branch.clone(), asset.to_string());
                } else {
                    if part.branch != model.branch {
                        model.engine_branches.insert(*engine, part.branch.clone());
                    }
                    if *asset != model.asset {
                        model.engine_assets.insert(*engine, asset.to_string());
                    }
                }
                joined.absorb(*engine, part);
            }
            let written = serde_json::to_vec(&joined).unwrap();
            proptest::prop_assert_eq!(
                String::from_utf8(written).unwrap(),
                serde_json::to_string(&model).unwrap()
            );
        }
    }

    #[test]
    fn findings_added_in_id_order_keep_no_order_beside_them_and_unsettled_ones_are_never_stored() {
        let mut findings = Findings::default();
        for id in ["a", "b", "c"] {
            findings.insert(id, entry(true)).unwrap();
        }
        assert!(
            findings.order.is_none(),
            "stored in id order: no order kept"
        );
        findings.insert("0", entry(true)).unwrap();
        assert_eq!(findings.order.as_deref(), Some(&[3, 0, 1, 2][..]));

        findings.append_unsettled("d", entry(false)).unwrap();
        let error = serde_json::to_string(&findings).unwrap_err();
        assert!(error.to_string().contains("not yet settled"), "{error}");
        findings.settle();
        assert!(serde_json::to_string(&findings).unwrap().contains("\"d\""));
    }

    #[test]
    fn settling_names_each_id_appended_when_it_was_stored_or_appended_before() {
        let mut findings = Findings::default();
        for id in ["a", "b"] {
            findings.insert(id, entry(true)).unwrap();
        }
        for id in ["c", "b", "c", "d", "c"] {
            findings.append_unsettled(id, entry(false)).unwrap();
        }
        assert_eq!(findings.settle(), ["b", "c"]);
        assert_eq!(findings.len(), 4);
        assert!(!findings["b"].open, "the later entry wins");
        findings.append_unsettled("e", entry(true)).unwrap();
        assert!(findings.settle().is_empty());
    }

    #[test]
    fn findings_that_share_an_entry_hold_it_once_and_open_again_one_by_one_once_all_are_closed() {
        let mut findings = Findings::default();
        for n in 0..30_000u32 {
            let entry = LedgerEntry {
                qds: (n % 3) as u8,
                ..entry(n % 2 == 0)
            };
            findings
                .append_unsettled(&format!("{n:08}"), entry)
                .unwrap();
        }
        findings.settle();
        assert_eq!(findings.distinct.entries.len(), 6, "3 scores, open or not");

        findings.close_every_finding();
        assert!(findings.iter().all(|(_, e)| !e.open));
        assert_eq!(findings["00000004"].qds, 1, "scores kept");
        // An entry held open before all were closed: numbered anew, not taken for a closed one.
        let reopened = LedgerEntry {
            qds: 0,
            ..entry(true)
        };
        findings.insert("00000003", reopened).unwrap();
        assert_eq!(findings["00000003"], reopened);
        assert!(!findings["00000000"].open, "its former sharers stay closed");
        findings.insert("00000004", entry(true)).unwrap();
        findings
            .insert(
                "new",
                LedgerEntry {
                    qds: 2,
                    ..entry(false)
                },
            )
            .unwrap();
        assert!(findings["00000004"].open);
        assert_eq!(findings["00000004"].qds, 70);
        assert!(!findings["00000005"].open, "the others stay closed");
        assert_eq!(
            findings["new"],
            LedgerEntry {
                qds: 2,
                ..entry(false)
            }
        );
    }

    /// Entry numbers take two bytes a finding until an asset's findings have 65,536 distinct
    /// entries, and four from then on, every finding keeping its entry across the change.
    #[test]
    fn entry_numbers_widen_past_65536_distinct_entries_and_keep_every_entry() {
        let distinct = |n: u32| LedgerEntry {
            qds: (n % 256) as u8,
            status: Text::from(format!("STATUS-{}", n / 256).as_str()),
            ..entry(true)
        };
        let mut findings = Findings::default();
        // Stored out of id order, so the order is a list of its own.
        for n in (0..60_000u32).rev() {
            findings
                .append_unsettled(&format!("{n:08}"), distinct(n))
                .unwrap();
        }
        findings.settle();
        assert!(matches!(findings.entries, EntryNumbers::Narrow(_)));
        for n in 60_000..70_000u32 {
            findings.insert(&format!("{n:08}"), distinct(n)).unwrap();
        }
        assert!(matches!(findings.entries, EntryNumbers::Wide(_)));
        // Rewritten after widening: a finding takes an entry numbered past 65,535.
        findings.insert("00000007", distinct(69_999)).unwrap();
        assert_eq!(findings.len(), 70_000);
        for (id, entry) in findings.iter() {
            let n: u32 = id.parse().unwrap();
            let expected = if n == 7 {
                distinct(69_999)
            } else {
                distinct(n)
            };
            assert_eq!(*entry, expected, "finding {id}");
        }
    }

    /// Appending grows the packed parts a quarter at a time: doubling would leave up to half of
    /// a large ledger's room unused at its peak.
    #[test]
    fn appending_leaves_at_most_a_quarter_of_the_room_unused() {
        let mut findings = Findings::default();
        for n in 0..150_000u32 {
            findings
                .append_unsettled(&format!("{n:08}"), entry(true))
                .unwrap();
            assert!(findings.entries.capacity() <= findings.entries.len() * 5 / 4 + 64);
        }
        assert!(findings.ends.capacity() <= findings.ends.len() * 5 / 4 + 64);
        assert!(findings.ids.capacity() <= findings.ids.len() * 5 / 4 + 1024 + 8);
    }
}
