//! Paging every list the connector reads, and proving it complete: an item is complete only when
//! the unique records fetched equal the server's total and that total held still while paging.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::client::{CxOneClient, ListPage, parse_list_page};
use super::error::VendorError;
use super::models::{DastEnvironment, DastScan, LastScan, Project, ScanRecord, same_id};
use super::transport::spawn_counted;
use crate::fingerprint::{CompactFingerprintSet, Fingerprints};
use url::Url;

/// The DAST scans list's count: `totalScans` as the live API answers (pysdk), `totalCount` as its
/// documentation names it; the first present is read.
const DAST_SCANS_TOTAL: &[&str] = &["totalScans", "totalCount"];

/// How complete a paged list is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Completeness {
    /// The total the server reported on the first page.
    pub expected: u64,
    /// Distinct records received.
    pub unique: u64,
    /// Records received more than once (dropped from the pages handed over).
    pub duplicates: u64,
    pub pages: u32,
    /// Every different total the server reported after the first.
    pub totals_seen: Vec<u64>,
    /// The page (counted from 1) that held only records already received, where paging stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stalled_at_page: Option<u32>,
    /// The page (counted from 1) after which paging stopped short of the total: more pages than
    /// the total needs at the largest page the server sent (see
    /// [`Seen::past_expected_pages`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_after_page: Option<u32>,
}

impl Completeness {
    pub fn is_complete(&self) -> bool {
        self.problem().is_none()
    }

    /// Why the list cannot be trusted as complete, in plain words.
    pub fn problem(&self) -> Option<String> {
        if let Some(changed) = self.totals_seen.first() {
            return Some(format!(
                "the total changed during paging (first {}, then {changed}); the data moved while it was read",
                self.expected
            ));
        }
        if self.unique != self.expected {
            let received = format!(
                "received {} distinct records but the server reported {}",
                self.unique, self.expected
            );
            return Some(match (self.stalled_at_page, self.stopped_after_page) {
                (Some(page), _) => format!(
                    "{received}: page {page} held only records already received, so the server is not moving through the list (it ignores the offset or page asked for), and paging stopped there; the next run pulls it again"
                ),
                (None, Some(page)) => format!(
                    "{received}: paging stopped after page {page}, more than three pages past what the total needs at the largest page the server sent, so the server is not paging as it began (its pages shrank, or it repeats records); the next run pulls it again"
                ),
                (None, None) => received,
            });
        }
        None
    }

    /// The signs that a list read only in part moved while it was paged: its total changed, or a
    /// record came twice (those after a record created meanwhile come one place later). A list
    /// read only as far as it needs (DAST scans, newest first, to the first completed one) is
    /// short of its total by design: that is not one.
    fn moved_while_paged(&self) -> Option<String> {
        if let Some(changed) = self.totals_seen.first() {
            return Some(format!(
                "the total changed during paging (first {}, then {changed}); the data moved while it was read",
                self.expected
            ));
        }
        (self.duplicates > 0).then(|| {
            format!(
                "{} record(s) came again on a later page; the data moved while it was read",
                self.duplicates
            )
        })
    }

    /// Whether a page held only records already received (see [`Seen::admit_within`]): the
    /// server is not moving through the list (it ignores where a page should start) and would
    /// answer so up to any total it claims. Every pager stops there.
    fn stalled(&self) -> bool {
        self.stalled_at_page.is_some()
    }

    fn observe_total(&mut self, total: u64) {
        if self.pages == 0 {
            self.expected = total;
        } else if total != self.expected && !self.totals_seen.contains(&total) {
            self.totals_seen.push(total);
        }
        self.pages += 1;
    }
}

/// The most records a pager makes room for ahead of receiving them.
const RESERVED_RECORDS_CAP: u64 = 10_000_000;

/// Remembers which records were seen (by a hash of their bytes: a record served twice is
/// byte-identical) and filters repeats out of a page. The hash is keyed at random per pager (per
/// split scan for its parts, see `fingerprint`), so records cannot be crafted to collide ahead of
/// time; were two distinct records ever to share a hash, one would be missing from the count and
/// the item reported incomplete, never silently short.
#[derive(Default)]
struct Seen {
    keys: Fingerprints,
    hashes: CompactFingerprintSet,
    /// The most records one page admitted held.
    largest_page: u64,
}

impl Seen {
    fn fingerprint(&self, record: &[u8]) -> u64 {
        self.keys.of(record)
    }

    /// Room for the total the first page reports, eight bytes a record, made once. Capped: a
    /// total that lies claims at most the room for the cap (80 MB, what a 10,000,000-record scan
    /// needs anyway).
    fn make_room(&mut self, expected: u64) {
        self.hashes
            .reserve(expected.min(RESERVED_RECORDS_CAP) as usize);
    }

    fn insert(&mut self, record: &[u8]) -> bool {
        let fingerprint = self.fingerprint(record);
        self.hashes.insert(fingerprint)
    }

    /// The page's records that are new, in order; counts both kinds into `completeness`, and
    /// notes there a page of records that are all repeats ([`Completeness::stalled`]).
    fn admit<'p>(&mut self, page: &'p ListPage, completeness: &mut Completeness) -> Vec<&'p [u8]> {
        let room = completeness.expected;
        self.admit_within(page, completeness, room)
    }

    /// [`Self::admit`], making room on the first page for `room` records (a part of a split
    /// scan receives fewer than the scan's total).
    fn admit_within<'p>(
        &mut self,
        page: &'p ListPage,
        completeness: &mut Completeness,
        room: u64,
    ) -> Vec<&'p [u8]> {
        if completeness.pages == 1 {
            self.make_room(room);
        }
        let mut fresh = Vec::with_capacity(page.records.len());
        for range in &page.records {
            let record = page.record(range);
            if self.insert(record) {
                fresh.push(record);
            } else {
                completeness.duplicates += 1;
            }
        }
        completeness.unique = self.hashes.len() as u64;
        self.largest_page = self.largest_page.max(page.records.len() as u64);
        if !page.records.is_empty() && fresh.is_empty() {
            completeness
                .stalled_at_page
                .get_or_insert(completeness.pages);
        }
        fresh
    }

    /// More pages in `completeness` than its total needs at the largest page admitted, and three
    /// to spare: a server whose pages shrank after the first, or that keeps repeating records.
    /// Noted there, as the page paging stops after.
    fn past_expected_pages(&self, completeness: &mut Completeness) -> bool {
        let needed = completeness.expected.div_ceil(self.largest_page.max(1));
        let past = u64::from(completeness.pages) > needed + 3;
        if past {
            completeness
                .stopped_after_page
                .get_or_insert(completeness.pages);
        }
        past
    }
}

/// One page of records handed over for storage and transform: a JSON object with the records
/// under `list_key` and the totals, repeats already removed.
#[derive(Clone, Debug)]
pub struct RawPage {
    /// 0-based page number in the order fetched.
    pub number: u32,
    pub body: Bytes,
    pub records: usize,
    pub total: u64,
}

/// The page as received when it holds no repeats, else rebuilt from the new records only.
fn handed_over(
    page: &ListPage,
    fresh: &[&[u8]],
    list_key: &str,
    total_key: &str,
    number: u32,
) -> RawPage {
    let body = if fresh.len() == page.records.len() {
        page.body.clone()
    } else {
        let mut body = Vec::with_capacity(page.body.len());
        body.extend_from_slice(format!("{{\"{list_key}\":[").as_bytes());
        for (i, record) in fresh.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(record);
        }
        body.extend_from_slice(format!("],\"{total_key}\":{}}}", page.total).as_bytes());
        Bytes::from(body)
    };
    RawPage {
        number,
        body,
        records: fresh.len(),
        total: page.total,
    }
}

/// Projects (or environments) with what could not be read and the completeness verdict.
#[derive(Debug)]
pub struct Listing<T> {
    pub items: Vec<T>,
    /// Each item's record as the vendor sent it (same order as `items`).
    pub raw: Vec<String>,
    /// Records that are not a valid item, with the reason (for the run's rejected list).
    pub malformed: Vec<String>,
    pub completeness: Completeness,
}

/// A pager handing over one raw page at a time, and its completeness verdict at the end.
pub trait PageSource: Send {
    fn next_page(&mut self) -> impl Future<Output = Result<Option<RawPage>, VendorError>> + Send;
    fn completeness(&self) -> &Completeness;
}

impl PageSource for ResultsPager {
    fn next_page(&mut self) -> impl Future<Output = Result<Option<RawPage>, VendorError>> + Send {
        ResultsPager::next_page(self)
    }
    fn completeness(&self) -> &Completeness {
        ResultsPager::completeness(self)
    }
}

impl PageSource for DastResultsPager {
    fn next_page(&mut self) -> impl Future<Output = Result<Option<RawPage>, VendorError>> + Send {
        DastResultsPager::next_page(self)
    }
    fn completeness(&self) -> &Completeness {
        DastResultsPager::completeness(self)
    }
}

/// The bytes of pages a client's pagers hold ahead of the ones being handed over, together: with
/// pages of 10,000 results (about 15 MB) a lone pager requests six ahead, so a collect of 512 MB
/// keeps its room. Each pager requests one page ahead whatever its size.
const AHEAD_BYTES: usize = 96 << 20;

/// How many pages a pager requests ahead of the one it hands over (they are the requests it has
/// in flight): its share of the client's concurrency cap and of [`AHEAD_BYTES`] (each divided
/// among the client's pagers, the bytes counted in pages the size of its largest so far), at
/// least one. Alone (a collect function's one item at a time, or the last item of a local run) a
/// pager takes the whole cap; among many, both are shared: four parts of a split scan collected
/// at once in one process held two pages of 15 MB ahead each, 110 MB of bodies at the peak.
pub(crate) fn pages_ahead(cap: usize, readers: usize, page_bytes: usize) -> usize {
    let readers = readers.max(1);
    let share = cap / readers;
    let room = AHEAD_BYTES / readers / page_bytes.max(1);
    share.min(room).max(1)
}

/// Requests started ahead of their turn, oldest first, each with the URL it fetches. Pages are
/// still handed over in order, so repeats, totals and completeness are judged as before. A pager
/// counts among its client's readers, and keeps its large bodies' buffers for the next
/// (`bodies`), from when it is made until it is dropped.
struct ReadAhead {
    client: CxOneClient,
    endpoint: &'static str,
    requests: VecDeque<(Url, tokio::task::JoinHandle<Result<ListPage, VendorError>>)>,
    /// The largest page received so far, in bytes.
    page_bytes: usize,
    /// Off once the pull is about to stop: what is requested ahead would be dropped.
    on: bool,
}

impl ReadAhead {
    fn new(client: &CxOneClient, endpoint: &'static str) -> Self {
        client.inner.readers.fetch_add(1, Ordering::Relaxed);
        client.inner.transport.bodies.pull_started();
        Self {
            client: client.clone(),
            endpoint,
            requests: VecDeque::new(),
            page_bytes: 0,
            on: true,
        }
    }

    /// The pages to request ahead now.
    fn depth(&self) -> usize {
        let inner = &self.client.inner;
        pages_ahead(
            inner.config.concurrency,
            inner.readers.load(Ordering::Relaxed),
            self.page_bytes,
        )
    }

    /// The page at `url`: the answer of the request started ahead for it, or fetched now when
    /// none was (the plan changed, as when the total moved: what was started is dropped).
    async fn take(&mut self, url: Url) -> Result<ListPage, VendorError> {
        let page = if self
            .requests
            .front()
            .is_some_and(|(ahead, _)| *ahead == url)
        {
            let (_, request) = self.requests.pop_front().expect("checked above");
            request.await.map_err(|e| VendorError::Stopped {
                endpoint: self.endpoint,
                detail: e.to_string(),
            })??
        } else {
            self.clear();
            self.client
                .get_list(self.endpoint, &url, "results", &["totalCount"])
                .await?
        };
        self.page_bytes = self.page_bytes.max(page.body.len());
        Ok(page)
    }

    /// Starts requests for `upcoming` (the next pages, in order) until [`Self::depth`] are in
    /// flight.
    fn fill(&mut self, upcoming: impl Iterator<Item = Url>) {
        if !self.on {
            return;
        }
        let wanted = self.depth().saturating_sub(self.requests.len());
        for url in upcoming.skip(self.requests.len()).take(wanted) {
            let (client, request_url, endpoint) = (self.client.clone(), url.clone(), self.endpoint);
            let request = spawn_counted(async move {
                client
                    .get_list(endpoint, &request_url, "results", &["totalCount"])
                    .await
            });
            self.requests.push_back((url, request));
        }
    }

    fn clear(&mut self) {
        for (_, request) in self.requests.drain(..) {
            request.abort();
        }
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.clear();
        self.client.inner.readers.fetch_sub(1, Ordering::Relaxed);
        self.client.inner.transport.bodies.pull_ended();
    }
}

/// The pages of a scan one part of a split pull reads: from `first` on, `count` of them (`None`:
/// to the scan's end), with the offset's meaning the plan probed and the key every part of the
/// scan fingerprints its records under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanRange {
    pub first: u32,
    pub count: Option<u32>,
    pub semantics: OffsetSemantics,
    pub fingerprint_key: u64,
}

/// How `/api/results` turned out to read `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OffsetSemantics {
    /// Not needed: everything came in the first page.
    Unneeded,
    PageIndex,
    ItemCount,
}

/// Pages one scan's `/api/results`, detecting whether the server reads `offset` as a page index
/// or as an item count: the second request asks for `offset=1`; a page index answers with new
/// records only, an item count with records already seen and one new (a page of nothing new
/// stalls the pull: see [`Completeness::stalled`]).
pub struct ResultsPager {
    client: CxOneClient,
    scan_id: String,
    limit: u64,
    /// A split scan's part reads only these pages; `None`: the whole scan.
    range: Option<ScanRange>,
    semantics: Option<OffsetSemantics>,
    /// Item mode: the index of the next record to ask for.
    position: u64,
    /// Records per page as the server actually sends them (it may cap `limit` silently).
    served: u64,
    completeness: Completeness,
    seen: Seen,
    done: bool,
    ahead: ReadAhead,
}

/// Where a results pager stands after the pages it has handed over: what an attempt that stops
/// midway leaves for the next one, which resumes with [`CxOneClient::resume_results`]. The records seen
/// are not in it: they are the pages already stored, read again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultsProgress {
    /// Records asked for per page: offsets are only good for the same.
    pub limit: u64,
    pub semantics: Option<OffsetSemantics>,
    pub position: u64,
    pub served: u64,
    pub completeness: Completeness,
    pub done: bool,
}

impl ResultsPager {
    pub fn semantics(&self) -> Option<OffsetSemantics> {
        self.semantics
    }

    /// The records the pages of `range` hold at the scan's total.
    fn range_records(&self, range: ScanRange) -> u64 {
        let total = self.completeness.expected;
        let start = u64::from(range.first) * self.limit;
        let end = range.count.map_or(total, |count| {
            ((u64::from(range.first) + u64::from(count)) * self.limit).min(total)
        });
        end.saturating_sub(start)
    }

    /// Whether the pages read reach the scan's end by its reported total (a part only where it
    /// runs to the end, as the last does). Before a request, it is the page after a full last page
    /// (see `past_the_end` in [`Self::next_page`]): the only one asked for once they do.
    fn past_the_reported_end(&self) -> bool {
        let c = &self.completeness;
        c.pages > 0
            && match self.range {
                None => c.unique >= c.expected,
                Some(range) => {
                    range.count.is_none()
                        && (u64::from(range.first) + u64::from(c.pages)) * self.limit >= c.expected
                }
            }
    }

    /// The records to make room for: the scan's total, or what a part's pages hold of it.
    fn room(&self) -> u64 {
        match self.range {
            Some(range) => self.range_records(range),
            None => self.completeness.expected,
        }
    }

    fn first_page(&self) -> u32 {
        self.range.map_or(0, |r| r.first)
    }

    /// Why what this pager received cannot be trusted as complete: the whole scan's verdict, or,
    /// for a part of a split scan, whether it holds every record of its pages (the union of the
    /// parts is proven when they are joined).
    pub fn problem(&self) -> Option<String> {
        let Some(range) = self.range else {
            return self.completeness.problem();
        };
        let c = &self.completeness;
        if let Some(changed) = c.totals_seen.first() {
            return Some(format!(
                "the total changed during paging (first {}, then {changed}); the data moved while it was read",
                c.expected
            ));
        }
        let holds = self.range_records(range);
        if c.unique == holds {
            return None;
        }
        if self.served < self.limit && holds > self.served {
            return Some(format!(
                "the server sent {} results a page where `limit` asked {}: it caps the page size, and a split scan's parts need full pages; set `vendor.results_page_size` to {} or less",
                self.served, self.limit, self.served
            ));
        }
        Some(format!(
            "received {} distinct records where its pages hold {holds} of the scan's {} (at {} a page)",
            c.unique, c.expected, self.limit
        ))
    }

    /// Where the pager stands: enough, with the pages handed over, to resume it.
    pub fn progress(&self) -> ResultsProgress {
        ResultsProgress {
            limit: self.limit,
            semantics: self.semantics,
            position: self.position,
            served: self.served,
            completeness: self.completeness.clone(),
            done: self.done,
        }
    }

    /// Takes back a page this pager's `progress` counts as handed over (as stored: repeats
    /// already removed), so a record served again later is still known as a repeat.
    pub fn remember(&mut self, body: Bytes) -> Result<(), String> {
        let page = parse_list_page(body, "results", &["totalCount"])?;
        if page.total != self.completeness.expected {
            return Err(format!(
                "its total is {}, where the progress has {}",
                page.total, self.completeness.expected
            ));
        }
        for range in &page.records {
            self.seen.insert(page.record(range));
        }
        Ok(())
    }

    /// Whether the pages remembered hold exactly the distinct records `progress` counted: if
    /// not, they are not the pages it was written after, and the pull starts over.
    pub fn remembers_all(&self) -> bool {
        self.seen.hashes.len() as u64 == self.completeness.unique
    }

    /// Requests no more pages ahead: the pull is about to stop, and what is started ahead would
    /// be dropped.
    pub fn stop_reading_ahead(&mut self) {
        self.ahead.on = false;
    }

    pub fn completeness(&self) -> &Completeness {
        &self.completeness
    }

    /// The fingerprint of every distinct record handed over, sorted (for a part of a split scan,
    /// under the key its parts share).
    pub fn into_fingerprints(self) -> Vec<u64> {
        self.seen.hashes.into_sorted()
    }

    fn page_url(&self, offset: u64) -> Url {
        self.client.api_url(
            "/api/results",
            &[
                ("scan-id", self.scan_id.clone()),
                ("limit", self.limit.to_string()),
                ("offset", offset.to_string()),
            ],
        )
    }

    /// The pages still to come if the total holds and every page is full, once the offset's
    /// meaning is known: none beyond the last the total calls for, so no request is wasted.
    fn upcoming(&self, count: usize) -> Vec<Url> {
        let first = u64::from(self.first_page());
        let (next, served) = (
            first + u64::from(self.completeness.pages),
            self.served.max(1),
        );
        let mut last = self.completeness.expected.div_ceil(served);
        if let Some(pages) = self.range.and_then(|r| r.count) {
            last = last.min(first + u64::from(pages));
        }
        let offsets: Vec<u64> = match self.semantics {
            Some(OffsetSemantics::PageIndex) => (next..last).collect(),
            Some(OffsetSemantics::ItemCount) => (0..last.saturating_sub(next))
                .map(|k| self.position + k * served)
                .collect(),
            _ => Vec::new(),
        };
        offsets
            .into_iter()
            .take(count)
            .map(|offset| self.page_url(offset))
            .collect()
    }

    pub async fn next_page(&mut self) -> Result<Option<RawPage>, VendorError> {
        if self.done {
            return Ok(None);
        }
        let number = self.completeness.pages;
        let offset = match (number, self.semantics) {
            (0, None) => 0,
            (1, None) => 1,
            (_, Some(OffsetSemantics::ItemCount)) => self.position,
            _ => u64::from(self.first_page()) + u64::from(number),
        };
        let url = self.page_url(offset);
        let beyond = self.past_the_reported_end();
        let Some(page) = unless_refused_past_the_end(self.ahead.take(url).await, beyond)? else {
            self.done = true;
            self.semantics.get_or_insert(OffsetSemantics::Unneeded);
            return Ok(None);
        };
        of_the_scan_asked("results", &page, &self.scan_id, number)?;
        self.completeness.observe_total(page.total);
        let room = self.room();
        let fresh = self.seen.admit_within(&page, &mut self.completeness, room);
        if number == 1 && self.semantics.is_none() {
            self.semantics = Some(if fresh.len() < page.records.len() {
                OffsetSemantics::ItemCount
            } else {
                OffsetSemantics::PageIndex
            });
        }
        let received = page.records.len() as u64;
        self.position = offset + received;
        self.served = self.served.max(received);
        let short = received < self.served;
        let whole = match self.range {
            None => self.completeness.unique >= self.completeness.expected,
            // A range ends with its last page, at the scan's end, or at a page short of `limit`
            // (where the range does not end there, its part is found short).
            Some(range) => {
                let pages_read = number + 1;
                let end_of_scan = (u64::from(range.first) + u64::from(pages_read)) * self.limit
                    >= self.completeness.expected;
                range.count.is_some_and(|count| pages_read >= count)
                    || end_of_scan
                    || received < self.limit
            }
        };
        // The pages read, this one counted, reach the scan's end by its reported total.
        let at_the_end = self.past_the_reported_end();
        // A full page at the end by the reported total: the page after it is asked for too. A
        // server that reports fewer results than it holds would otherwise have the rest never
        // asked for, and their findings closed as absent; records there are more than the total
        // (incomplete), none and the pull is whole. One request, only where the last page is full.
        let full = full_page(received, self.limit, self.served, number);
        let past_the_end = full && at_the_end && self.completeness.unique == room;
        if (whole && !past_the_end) || received == 0 || short || self.completeness.stalled() {
            self.done = true;
        }
        if number == 0 && self.done && self.range.is_none() {
            self.semantics = Some(OffsetSemantics::Unneeded);
        }
        if !self.done && self.seen.past_expected_pages(&mut self.completeness) {
            self.done = true;
        }
        if !self.done {
            let upcoming = self.upcoming(self.ahead.depth());
            self.ahead.fill(upcoming.into_iter());
        }
        Ok(Some(handed_over(
            &page,
            &fresh,
            "results",
            "totalCount",
            number,
        )))
    }
}

/// Pages one scan's SAST results as they were before triage (`/api/sast-results` with
/// `apply-predicates=false`), only the result hash, severity and scan of each
/// (`include-nodes=false`, `visible-columns`), by item offset.
pub struct OriginalSeverityPager {
    client: CxOneClient,
    scan_id: String,
    limit: u64,
    offset: u64,
    /// Records per page as the server actually sends them.
    served: u64,
    completeness: Completeness,
    seen: Seen,
    done: bool,
    ahead: ReadAhead,
}

impl OriginalSeverityPager {
    pub fn completeness(&self) -> &Completeness {
        &self.completeness
    }

    fn page_url(&self, offset: u64) -> Url {
        self.client.api_url(
            "/api/sast-results",
            &[
                ("scan-id", self.scan_id.clone()),
                ("apply-predicates", "false".into()),
                ("include-nodes", "false".into()),
                ("visible-columns", "result-hash".into()),
                ("visible-columns", "severity".into()),
                // Each row names its scan: an answer about another scan is refused.
                ("visible-columns", "scan-id".into()),
                ("limit", self.limit.to_string()),
                ("offset", offset.to_string()),
            ],
        )
    }

    pub async fn next_page(&mut self) -> Result<Option<RawPage>, VendorError> {
        if self.done {
            return Ok(None);
        }
        let number = self.completeness.pages;
        let url = self.page_url(self.offset);
        // Past the reported total, the page after a full last one (see `past_the_end` below).
        let beyond = number > 0 && self.offset >= self.completeness.expected;
        let Some(page) = unless_refused_past_the_end(self.ahead.take(url).await, beyond)? else {
            self.done = true;
            return Ok(None);
        };
        of_the_scan_asked("sast-results", &page, &self.scan_id, number)?;
        self.completeness.observe_total(page.total);
        let fresh = self.seen.admit(&page, &mut self.completeness);
        let received = page.records.len() as u64;
        self.offset += received;
        self.served = self.served.max(received);
        // A full page at the end by the reported total: the page after it is asked for too (see
        // `ResultsPager::next_page`).
        let full = full_page(received, self.limit, self.served, number);
        let past_the_end = full && self.completeness.unique == self.completeness.expected;
        if page.records.is_empty()
            || (self.offset >= page.total && !past_the_end)
            || self.completeness.stalled()
            || self.seen.past_expected_pages(&mut self.completeness)
        {
            self.done = true;
        } else {
            // Item offsets: the pages to come if every page is full, up to the total.
            let (total, served) = (self.completeness.expected, self.served);
            let upcoming = (0..)
                .map(|k| self.offset + k * served)
                .take_while(|&offset| offset < total)
                .take(self.ahead.depth())
                .map(|offset| self.page_url(offset))
                .collect::<Vec<_>>();
            self.ahead.fill(upcoming.into_iter());
        }
        Ok(Some(handed_over(
            &page,
            &fresh,
            "results",
            "totalCount",
            number,
        )))
    }
}

impl PageSource for OriginalSeverityPager {
    fn next_page(&mut self) -> impl Future<Output = Result<Option<RawPage>, VendorError>> + Send {
        OriginalSeverityPager::next_page(self)
    }
    fn completeness(&self) -> &Completeness {
        OriginalSeverityPager::completeness(self)
    }
}

/// Pages one DAST scan's results (`page` from 1, `per_page` ≤ 100).
pub struct DastResultsPager {
    client: CxOneClient,
    scan_id: String,
    /// The environment the scan is of: each result names it.
    environment_id: String,
    per_page: u64,
    /// Records per page as the server actually sends them (it may cap `per_page` silently).
    served: u64,
    completeness: Completeness,
    seen: Seen,
    done: bool,
}

impl DastResultsPager {
    pub fn completeness(&self) -> &Completeness {
        &self.completeness
    }

    fn url(&self, number: u32) -> Result<Url, VendorError> {
        self.client.dast_results_url(
            &self.scan_id,
            &[
                ("page", (u64::from(number) + 1).to_string()),
                ("per_page", self.per_page.to_string()),
            ],
        )
    }

    pub async fn next_page(&mut self) -> Result<Option<RawPage>, VendorError> {
        if self.done {
            return Ok(None);
        }
        let number = self.completeness.pages;
        let url = self.url(number)?;
        // Past the reported total, the page after a full last one (see `past_the_end` below).
        let beyond = number > 0 && self.completeness.unique >= self.completeness.expected;
        let answer = self
            .client
            .get_list("dast-results", &url, "results", &["total"])
            .await;
        let Some(page) = unless_refused_past_the_end(answer, beyond)? else {
            self.done = true;
            return Ok(None);
        };
        self.completeness.observe_total(page.total);
        let fresh = self.seen.admit(&page, &mut self.completeness);
        if let Some(other) = fresh
            .iter()
            .find_map(|record| names_another_environment(record, &self.environment_id))
        {
            return Err(VendorError::Malformed {
                endpoint: "dast-results",
                detail: format!(
                    "page {} of scan {}'s results holds a result of environment {other}, where the scan is of environment {}: the server answered about another scan; nothing of the scan is taken, and the environment is pulled again next run",
                    number + 1,
                    self.scan_id,
                    self.environment_id
                ),
            });
        }
        let last_page = page
            .pages
            .unwrap_or_else(|| page.total.div_ceil(self.per_page));
        let c = &self.completeness;
        let at_the_end = u64::from(number) + 1 >= last_page || c.unique >= c.expected;
        // A full page at the end by the reported total: the page after it is asked for too (see
        // `ResultsPager::next_page`).
        let received = page.records.len() as u64;
        self.served = self.served.max(received);
        let full = full_page(received, self.per_page, self.served, number);
        let past_the_end = full && c.unique == c.expected;
        if (at_the_end && !past_the_end) || page.records.is_empty() || c.stalled() {
            self.done = true;
        }
        Ok(Some(handed_over(&page, &fresh, "results", "total", number)))
    }
}

/// Filters of a `last-scan` call.
#[derive(Clone, Debug)]
pub struct LastScanQuery {
    pub scan_status: Option<String>,
    pub engine: Option<String>,
    pub branch: Option<String>,
    pub use_main_branch: bool,
}

impl LastScanQuery {
    /// What `scan` is not of what this query asked (a server that ignores `scan-status`,
    /// `engine` or `branch`): taking a running scan, or another engine's, for what was asked
    /// would pull it whole and close every finding it does not hold.
    fn mismatch(&self, scan: &LastScan) -> Option<String> {
        let differs = |asked: &Option<String>, got: &Option<String>| match (asked, got) {
            (Some(asked), Some(got)) => !asked.eq_ignore_ascii_case(got.trim()),
            _ => false,
        };
        if differs(&self.scan_status, &scan.status) {
            return Some(format!(
                "scan {} is {}, where a {} scan was asked for",
                scan.id,
                scan.status.as_deref().unwrap_or_default(),
                self.scan_status.as_deref().unwrap_or_default()
            ));
        }
        if let Some(engine) = &self.engine
            && !scan.engines.is_empty()
            && !scan.engines.iter().any(|e| e.eq_ignore_ascii_case(engine))
        {
            return Some(format!(
                "scan {} ran {}, not the {engine} engine asked for",
                scan.id,
                scan.engines.join(", ")
            ));
        }
        // Branch names are case-sensitive (git's): `Main` is not `main`.
        if let (Some(asked), Some(got)) = (&self.branch, &scan.branch)
            && asked != got
        {
            return Some(format!(
                "scan {} is of branch {}, not the branch {} asked for",
                scan.id,
                scan.branch.as_deref().unwrap_or_default(),
                self.branch.as_deref().unwrap_or_default()
            ));
        }
        None
    }

    /// The first scan of `answer` that is not what this query asked, as the error it is.
    fn refuse_mismatches(&self, answer: &HashMap<String, LastScan>) -> Result<(), VendorError> {
        let mismatch = answer.iter().find_map(|(id, scan)| {
            let mismatch = self.mismatch(scan)?;
            Some(format!("project {id}: {mismatch}"))
        });
        match mismatch {
            Some(mismatch) => Err(VendorError::Malformed {
                endpoint: "last-scan",
                detail: format!(
                    "{mismatch}: the server ignores the query's filters; nothing is pulled rather than a scan taken for what it is not"
                ),
            }),
            None => Ok(()),
        }
    }

    /// The latest completed scan that ran `engine` (of any engine when `None`), of any branch;
    /// the spec's call is `completed(Some(Engine::Sast))`.
    pub fn completed(engine: Option<crate::Engine>) -> Self {
        Self {
            scan_status: Some("Completed".into()),
            engine: engine.map(|e| e.as_str().to_string()),
            branch: None,
            use_main_branch: false,
        }
    }

    /// The latest completed SAST scan of any branch.
    pub fn completed_sast() -> Self {
        Self::completed(Some(crate::Engine::Sast))
    }
}

fn parse_items<T: serde::de::DeserializeOwned>(
    fresh: &[&[u8]],
    what: &str,
    listing: &mut Listing<T>,
) {
    for record in fresh {
        match serde_json::from_slice::<T>(record) {
            Ok(item) => {
                listing.items.push(item);
                listing
                    .raw
                    .push(String::from_utf8_lossy(record).into_owned());
            }
            Err(e) => listing.malformed.push(format!(
                "{what} record {}{}: {e}",
                listing.items.len() + listing.malformed.len(),
                id_of_record(record).map_or_else(String::new, |id| format!(" ({id})"))
            )),
        }
    }
}

/// The `id` (or `environmentId`) of a record that does not read as its type, if it has one as
/// text, cut at 100 characters: the problem names the item left out.
fn id_of_record(record: &[u8]) -> Option<String> {
    let fields: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(record).ok()?;
    let id = ["id", "environmentId"]
        .iter()
        .find_map(|key| fields.get(*key)?.as_str())?;
    Some(
        id.chars()
            .take(100)
            .collect::<String>()
            .escape_debug()
            .to_string(),
    )
}

/// A `last-scan` answer keyed by the ids asked: a UUID in other letter case is the same project.
/// Two keys of one project (`0f8f…` and `0F8F…`) are refused: which scan is its would be a guess.
fn keyed_as_asked(
    answer: HashMap<String, Result<LastScan, String>>,
    asking: &[String],
) -> Result<HashMap<String, Result<LastScan, String>>, VendorError> {
    let mut keyed = HashMap::with_capacity(answer.len());
    for (id, scan) in answer {
        let asked = asking
            .iter()
            .find(|asked| **asked == id)
            .or_else(|| asking.iter().find(|asked| same_id(asked, &id)))
            .map_or(id, Clone::clone);
        if let Some(other) = keyed.insert(asked.clone(), scan) {
            return Err(VendorError::Malformed {
                endpoint: "last-scan",
                detail: format!(
                    "the answer names project {asked} twice, in different letter case (scan {} and another): nothing is pulled rather than one taken at random",
                    other.as_ref().map_or("unreadable", |scan| scan.id.as_str())
                ),
            });
        }
    }
    Ok(keyed)
}

/// A `/api/projects/last-scan` answer: each project's scan, and the projects whose entry breaks
/// the schema, each with why. Read as without a scan, those would be pulled as such; they are
/// named instead, and whoever asked decides (the plan takes no scan for them and carries what
/// they hold).
#[derive(Debug, Default)]
pub struct LastScans {
    pub scans: HashMap<String, LastScan>,
    pub unreadable: Vec<(String, String)>,
}

impl LastScans {
    /// Whether the answer has an entry for `project`, readable or not.
    pub fn has(&self, project: &str) -> bool {
        self.scans.contains_key(project) || self.unreadable.iter().any(|(id, _)| id == project)
    }

    /// How many projects the answer has an entry for.
    fn answered(&self) -> usize {
        self.scans.len() + self.unreadable.len()
    }
}

impl CxOneClient {
    /// Every project, paged by item offset. The first page tells the total; the pages after it
    /// are asked for together, as many at once as the connection's concurrency, each at the
    /// offset where the pages before it end when they are as long as the longest page yet (the
    /// limit, or the server's cap on it). They are taken in order, as if asked for one after
    /// another: after a page of another length, the pages asked for beyond it are dropped unused
    /// (those still in flight are cancelled) and the listing goes on from where it ended.
    pub async fn projects(&self) -> Result<Listing<Project>, VendorError> {
        let limit = u64::from(self.inner.config.projects_page_size);
        let at_once = self.inner.config.concurrency.max(1) as u64;
        let mut listing = Listing {
            items: Vec::new(),
            raw: Vec::new(),
            malformed: Vec::new(),
            completeness: Completeness::default(),
        };
        let mut seen = Seen::default();
        // The page size the server answers with: the limit, or fewer if it caps it.
        let (mut offset, mut stride, mut ahead) = (0, 0, 1);
        loop {
            let (first, asked_stride) = (offset, stride);
            let mut pages = futures_util::stream::iter(0..ahead)
                .map(|k| {
                    let url = self.api_url(
                        "/api/projects",
                        &[
                            ("limit", limit.to_string()),
                            ("offset", (first + k * asked_stride).to_string()),
                        ],
                    );
                    async move {
                        self.get_list("projects", &url, "projects", &["filteredTotalCount"])
                            .await
                    }
                })
                .buffered(ahead as usize);
            let (mut k, mut total) = (0, 0);
            // Checked before the page is awaited: one asked beyond a page of another length is
            // not waited for (nor its retries).
            while offset == first + k * asked_stride {
                let Some(page) = pages.next().await else {
                    break;
                };
                k += 1;
                let page = page?;
                listing.completeness.observe_total(page.total);
                let fresh = seen.admit(&page, &mut listing.completeness);
                parse_items(&fresh, "project", &mut listing);
                let length = page.records.len() as u64;
                offset += length;
                if length == 0 || offset >= page.total || listing.completeness.stalled() {
                    return Ok(listing);
                }
                stride = stride.max(length);
                if seen.past_expected_pages(&mut listing.completeness) {
                    return Ok(listing);
                }
                total = page.total;
            }
            ahead = (total - offset).div_ceil(stride).clamp(1, at_once);
        }
    }

    /// The last scan of each project, many projects per call (`limit` set to the batch size, so
    /// the server's default of 20 does not cut the answer short). Projects without a matching
    /// scan are absent from both maps.
    pub async fn last_scans(
        &self,
        project_ids: &[String],
        query: &LastScanQuery,
    ) -> Result<LastScans, VendorError> {
        let batches = project_ids.chunks(self.inner.config.last_scan_batch as usize);
        let answers: Vec<LastScans> = futures_util::stream::iter(batches)
            .map(|batch| self.last_scans_of(batch, query))
            .buffer_unordered(self.inner.config.concurrency.max(1))
            .try_collect()
            .await?;
        let mut all = LastScans::default();
        for answer in answers {
            all.scans.extend(answer.scans);
            all.unreadable.extend(answer.unreadable);
        }
        Ok(all)
    }

    /// The last scan of each of one batch of projects (`last_scans`). A server that answers fewer
    /// than it was asked (one capping its answer, as at the documented default of 20) would make
    /// the projects it left out look scan-less, never pulled while the run reads complete: the
    /// ids an answer leaves out are asked again, until an answer brings none of them (one more
    /// call where some projects have no scan).
    async fn last_scans_of(
        &self,
        batch: &[String],
        query: &LastScanQuery,
    ) -> Result<LastScans, VendorError> {
        let mut found = LastScans::default();
        let mut asking = batch.to_vec();
        while !asking.is_empty() {
            let answer = self.last_scan_answer(&asking, query).await?;
            let answer = keyed_as_asked(answer, &asking)?;
            // An answer about projects not asked for (a server ignoring `project-ids`) says
            // nothing of those asked: read as is, they would be projects without a scan, and a
            // project asked about alone would read as deleted.
            if let Some(stranger) = answer.keys().find(|id| !asking.contains(id)) {
                return Err(VendorError::Malformed {
                    endpoint: "last-scan",
                    detail: format!(
                        "the answer holds project {stranger}, which was not asked for: the server ignores `project-ids`; nothing is pulled rather than the projects asked for taken as without a scan"
                    ),
                });
            }
            let (mut readable, mut unreadable) = (HashMap::new(), Vec::new());
            for (id, entry) in answer {
                match entry {
                    Ok(scan) => {
                        readable.insert(id, scan);
                    }
                    Err(why) => unreadable.push((id, why)),
                }
            }
            let answer = readable;
            // What the answer says is checked before any scan's record is asked for; the
            // engines those records name, after.
            query.refuse_mismatches(&answer)?;
            let answer = self.with_engines(answer, query).await?;
            query.refuse_mismatches(&answer)?;
            let before = found.answered();
            found.scans.extend(answer);
            found.unreadable.extend(unreadable);
            if found.answered() == before {
                break;
            }
            asking.retain(|id| !found.has(id));
        }
        Ok(found)
    }

    /// Where an engine was asked for, each scan of `answer` that does not list the engines it
    /// ran, with them from its record: else a server that ignores `engine` and omits the list
    /// would have another engine's scan taken for the one asked, and every finding of the engine
    /// asked closed as absent. One request a scan, only for scans that list none; a record that
    /// lists none either leaves the filter trusted.
    async fn with_engines(
        &self,
        mut answer: HashMap<String, LastScan>,
        query: &LastScanQuery,
    ) -> Result<HashMap<String, LastScan>, VendorError> {
        if query.engine.is_none() {
            return Ok(answer);
        }
        let unlisted: Vec<(String, String)> = answer
            .iter()
            .filter(|(_, scan)| scan.engines.is_empty())
            .map(|(project, scan)| (project.clone(), scan.id.clone()))
            .collect();
        let listed: Vec<(String, Vec<String>)> = futures_util::stream::iter(unlisted)
            .map(|(project, scan)| async move {
                Ok::<_, VendorError>((project, self.scan_engines(&scan).await?))
            })
            .buffer_unordered(self.inner.config.concurrency.max(1))
            .try_collect()
            .await?;
        for (project, engines) in listed {
            if let Some(scan) = answer.get_mut(&project) {
                scan.engines = engines;
            }
        }
        Ok(answer)
    }

    /// One answer of `/api/projects/last-scan` for `ids`: each entry read on its own, so one
    /// that breaks the schema fails its project alone (with why), not the answer.
    async fn last_scan_answer(
        &self,
        ids: &[String],
        query: &LastScanQuery,
    ) -> Result<HashMap<String, Result<LastScan, String>>, VendorError> {
        let mut params = vec![
            ("limit", ids.len().to_string()),
            ("offset", "0".to_string()),
            ("project-ids", ids.join(",")),
        ];
        if let Some(status) = &query.scan_status {
            params.push(("scan-status", status.clone()));
        }
        if let Some(engine) = &query.engine {
            params.push(("engine", engine.clone()));
        }
        if let Some(branch) = &query.branch {
            params.push(("branch", branch.clone()));
        }
        if query.use_main_branch {
            params.push(("use-main-branch", "true".into()));
        }
        let url = self.api_url("/api/projects/last-scan", &params);
        let entries: HashMap<String, Box<serde_json::value::RawValue>> = self
            .get_checked("last-scan", &url, |body| {
                serde_json::from_slice(&body).map_err(|e| {
                    format!("last-scan answer is not a map of project id to scan: {e}")
                })
            })
            .await?;
        Ok(entries
            .into_iter()
            .map(|(id, entry)| {
                let scan = serde_json::from_str::<LastScan>(entry.get())
                    .map_err(|e| format!("its scan does not read as the documented one: {e}"));
                (id, scan)
            })
            .collect())
    }

    /// One page of the names of the branches a project has scans on (`/api/projects/branches`,
    /// a bare JSON array by item offset, with no total; `null` for a project with no scans), from
    /// `offset`. Whether another page follows is [`BranchListing`]'s to say.
    pub async fn project_branches_page(
        &self,
        project_id: &str,
        offset: usize,
    ) -> Result<Vec<String>, VendorError> {
        let url = self.api_url(
            "/api/projects/branches",
            &[
                ("project-id", project_id.to_string()),
                ("limit", BRANCH_PAGE.to_string()),
                ("offset", offset.to_string()),
            ],
        );
        let page: Option<Vec<String>> = self
            .get_checked("branches", &url, |body| {
                serde_json::from_slice(&body)
                    .map_err(|e| format!("branches answer is not a list of branch names: {e}"))
            })
            .await?;
        Ok(page.unwrap_or_default())
    }

    /// A results pager that goes on from `progress`, left by an earlier pager of the same scan
    /// with the same page size (else the problem); the pages that pager handed over are given
    /// back with [`ResultsPager::remember`].
    pub fn resume_results(
        &self,
        scan_id: &str,
        range: Option<ScanRange>,
        progress: ResultsProgress,
    ) -> Result<ResultsPager, String> {
        let mut pager = match range {
            Some(range) => self.results_part(scan_id, range),
            None => self.results(scan_id),
        };
        if progress.limit != pager.limit {
            return Err(format!(
                "its pages are of {} results, the connection's now of {}",
                progress.limit, pager.limit
            ));
        }
        pager.semantics = progress.semantics;
        pager.position = progress.position;
        pager.served = progress.served;
        pager.completeness = progress.completeness;
        if pager.completeness.pages > 0 {
            let room = pager.room();
            pager.seen.make_room(room);
        }
        pager.done = progress.done;
        Ok(pager)
    }

    /// A pager over one part of a split scan's results: the pages of `range`, with the offset's
    /// meaning the plan probed (see [`Self::probe_results`]), its records fingerprinted under the
    /// key every part of the scan shares.
    pub fn results_part(&self, scan_id: &str, range: ScanRange) -> ResultsPager {
        let mut pager = self.results(scan_id);
        pager.position = u64::from(range.first) * pager.limit;
        pager.range = Some(range);
        pager.semantics = Some(range.semantics);
        pager.seen.keys = Fingerprints::keyed(range.fingerprint_key);
        pager
    }

    /// One scan's result total and how the server reads `offset`, from two pages of two
    /// results: the second (`offset=1`) starts with the first page's second record when
    /// `offset` counts items, with a record not yet seen when it is a page index.
    pub async fn probe_results(
        &self,
        scan_id: &str,
    ) -> Result<(u64, OffsetSemantics), VendorError> {
        let url = |offset: u64| {
            self.api_url(
                "/api/results",
                &[
                    ("scan-id", scan_id.to_string()),
                    ("limit", "2".to_string()),
                    ("offset", offset.to_string()),
                ],
            )
        };
        let first = self
            .get_list("results", &url(0), "results", &["totalCount"])
            .await?;
        of_the_scan_asked("results", &first, scan_id, 0)?;
        if first.total <= 2 {
            return Ok((first.total, OffsetSemantics::Unneeded));
        }
        let second = self
            .get_list("results", &url(1), "results", &["totalCount"])
            .await?;
        let overlaps = match (first.records.get(1), second.records.first()) {
            (Some(a), Some(b)) => first.record(a) == second.record(b),
            _ => false,
        };
        let semantics = if overlaps {
            OffsetSemantics::ItemCount
        } else {
            OffsetSemantics::PageIndex
        };
        Ok((first.total, semantics))
    }

    /// A pager over one scan's results in `/api/results`.
    pub fn results(&self, scan_id: &str) -> ResultsPager {
        ResultsPager {
            client: self.clone(),
            scan_id: scan_id.to_string(),
            limit: u64::from(self.inner.config.results_page_size),
            range: None,
            semantics: None,
            position: 0,
            served: 0,
            completeness: Completeness::default(),
            seen: Seen::default(),
            done: false,
            ahead: ReadAhead::new(self, "results"),
        }
    }

    /// A pager over one scan's SAST severities before triage.
    pub fn original_severities(&self, scan_id: &str) -> OriginalSeverityPager {
        OriginalSeverityPager {
            client: self.clone(),
            scan_id: scan_id.to_string(),
            limit: u64::from(self.inner.config.results_page_size),
            offset: 0,
            served: 0,
            completeness: Completeness::default(),
            seen: Seen::default(),
            done: false,
            ahead: ReadAhead::new(self, "sast-results"),
        }
    }

    /// Every DAST environment, paged with `from`/`to` windows.
    pub async fn dast_environments(&self) -> Result<Listing<DastEnvironment>, VendorError> {
        let size = u64::from(self.inner.config.dast_page_size);
        let mut listing = Listing {
            items: Vec::new(),
            raw: Vec::new(),
            malformed: Vec::new(),
            completeness: Completeness::default(),
        };
        let mut seen = Seen::default();
        let mut from = 0;
        loop {
            let url = self.api_url(
                "/api/dast/scans/environments",
                &[
                    ("from", from.to_string()),
                    ("to", (from + size).to_string()),
                ],
            );
            let page = self
                .get_list("dast-environments", &url, "environments", &["totalItems"])
                .await?;
            listing.completeness.observe_total(page.total);
            let fresh = seen.admit(&page, &mut listing.completeness);
            parse_items(&fresh, "environment", &mut listing);
            from += page.records.len() as u64;
            if page.records.is_empty()
                || from >= page.total
                || listing.completeness.stalled()
                || seen.past_expected_pages(&mut listing.completeness)
            {
                return Ok(listing);
            }
        }
    }

    /// The newest completed scan of a DAST environment, if it has one. A page that repeats the
    /// scans already read, or comes empty before the count the server reports, is an error, not
    /// the end of the list: the scans after it are unknown. So is a scan of another environment
    /// (a server ignoring `environmentId`): its findings are not this environment's.
    pub async fn latest_completed_dast_scan(
        &self,
        environment_id: &str,
    ) -> Result<Option<DastScan>, VendorError> {
        let size = u64::from(self.inner.config.dast_page_size);
        let (mut from, mut seen, mut completeness) = (0, Seen::default(), Completeness::default());
        let mut newest_first = NewestFirst::default();
        loop {
            let url = self.api_url(
                "/api/dast/scans/scans",
                &[
                    ("environmentId", environment_id.to_string()),
                    ("sort", "created:desc".to_string()),
                    ("from", from.to_string()),
                    ("to", (from + size).to_string()),
                ],
            );
            let page = self
                .get_list("dast-scans", &url, "scans", DAST_SCANS_TOTAL)
                .await?;
            completeness.observe_total(page.total);
            // The records not seen before; no room made for the whole list, which is read only
            // as far as its first completed scan.
            let fresh = seen.admit_within(&page, &mut completeness, 0);
            let scans = dast_scans_of_page(&fresh, from)?;
            for scan in &scans {
                if let Some(other) = scan.of_another_environment(environment_id) {
                    return Err(environment_id_ignored(environment_id, other));
                }
                newest_first.check(scan, environment_id)?;
            }
            if let Some(scan) = scans.into_iter().find(DastScan::is_completed) {
                // A list that moved between its pages (a scan deleted) may have shifted the
                // newest completed scan past the page boundary, unread.
                if let Some(moved) = completeness.moved_while_paged().filter(|_| from > 0) {
                    return Err(VendorError::Malformed {
                        endpoint: "dast-scans",
                        detail: format!(
                            "{moved}; the first completed scan is on the page from {from}, and one newer may have gone by unread: no scan is taken for the environment, and it is asked again next run"
                        ),
                    });
                }
                return Ok(Some(scan));
            }
            if completeness.stalled() {
                // Not "no completed scan": the scans after these were never read.
                return Err(VendorError::Malformed {
                    endpoint: "dast-scans",
                    detail: format!(
                        "the page from {from} repeats scans already read ({} distinct of the {} the server reports), as if it ignored `from`; no completed scan found among them. A larger `vendor.dast_page_size` lets the first page reach one; the environment is retried next run",
                        completeness.unique, completeness.expected
                    ),
                });
            }
            if page.records.is_empty() && from < page.total {
                return Err(VendorError::Malformed {
                    endpoint: "dast-scans",
                    detail: format!(
                        "the page from {from} is empty, though the server reports {} scans; no completed scan found before it. The environment is retried next run",
                        page.total
                    ),
                });
            }
            from += page.records.len() as u64;
            if page.records.is_empty() || from >= page.total {
                return Ok(None);
            }
        }
    }

    /// Whether the tenant has a scan, of any status, of a DAST environment asked for alone: the
    /// proof an environment a listing did not send is still there. `false` where it lists none,
    /// and where the tenant does not know the environment (HTTP 404). An answer of another
    /// environment's scans alone (a server ignoring `environmentId`) tells nothing: an error.
    pub async fn dast_environment_scanned(
        &self,
        environment_id: &str,
    ) -> Result<bool, VendorError> {
        let url = self.api_url(
            "/api/dast/scans/scans",
            &[
                ("environmentId", environment_id.to_string()),
                ("from", "0".to_string()),
                ("to", "1".to_string()),
            ],
        );
        let page = match self
            .get_list("dast-scans", &url, "scans", DAST_SCANS_TOTAL)
            .await
        {
            Ok(page) => page,
            Err(VendorError::NotFound { .. }) => return Ok(false),
            Err(other) => return Err(other),
        };
        let scans: Vec<DastScan> = page
            .records
            .iter()
            .filter_map(|record| serde_json::from_slice(page.record(record)).ok())
            .collect();
        let others: Vec<&str> = scans
            .iter()
            .filter_map(|scan| scan.of_another_environment(environment_id))
            .collect();
        if let Some(other) = others
            .first()
            .filter(|_| others.len() == page.records.len())
        {
            return Err(environment_id_ignored(environment_id, other));
        }
        // A count of scans beside an empty page is a scan all the same.
        Ok(!page.records.is_empty() || page.total > 0)
    }

    /// A DAST scan's results URL, the scan id one path segment (a `/` in it escaped). An id that
    /// is a dot segment (`.`, `..`) or empty would name another path than the scan's (a URL drops
    /// or resolves it): refused.
    pub(crate) fn dast_results_url(
        &self,
        scan_id: &str,
        query: &[(&str, String)],
    ) -> Result<Url, VendorError> {
        let named = NamedId {
            endpoint: "dast-results",
            what: "DAST scan",
            from: "the environment's scans list",
        };
        self.id_url(&named, "/api/dast/mfe-results/results", scan_id, query)
    }

    /// `path` and `id` as one more path segment (a `/` in it escaped). An id that is a dot
    /// segment (`.`, `..`) or empty would name another path than its own (a URL drops or
    /// resolves it): refused, naming where it came from.
    fn id_url(
        &self,
        named: &NamedId,
        path: &str,
        id: &str,
        query: &[(&str, String)],
    ) -> Result<Url, VendorError> {
        if matches!(id, "" | "." | "..") {
            return Err(VendorError::Malformed {
                endpoint: named.endpoint,
                detail: format!(
                    "the {} id {id:?} cannot name a URL path segment; {} gave it",
                    named.what, named.from
                ),
            });
        }
        let mut url = self.api_url(path, query);
        url.path_segments_mut()
            .expect("the API's base URL is https or http, never cannot-be-a-base")
            .push(id);
        Ok(url)
    }

    /// The engines a scan ran, from its record (`GET /api/scans/{id}`).
    async fn scan_engines(&self, scan_id: &str) -> Result<Vec<String>, VendorError> {
        let named = NamedId {
            endpoint: "scans",
            what: "scan",
            from: "the last-scan answer",
        };
        let url = self.id_url(&named, "/api/scans", scan_id, &[])?;
        let record: ScanRecord = self
            .get_checked("scans", &url, |body| {
                serde_json::from_slice(&body)
                    .map_err(|e| format!("scan {scan_id}'s record is not a scan: {e}"))
            })
            .await?;
        // A record of another scan (a server ignoring the id in the path) says nothing of this one.
        if let Some(other) = record.id.as_deref().filter(|id| !same_id(id, scan_id)) {
            return Err(VendorError::Malformed {
                endpoint: "scans",
                detail: format!(
                    "asked for the record of scan {scan_id}, the answer is the record of scan {other}; the engines the scan ran are not known, and nothing is pulled rather than a scan taken for an engine it may not have run"
                ),
            });
        }
        Ok(record.engines_ran())
    }

    /// Pages the results of `scan_id`, a scan of `environment_id`.
    pub fn dast_results(&self, scan_id: &str, environment_id: &str) -> DastResultsPager {
        DastResultsPager {
            client: self.clone(),
            scan_id: scan_id.to_string(),
            environment_id: environment_id.to_string(),
            per_page: u64::from(self.inner.config.dast_page_size),
            served: 0,
            completeness: Completeness::default(),
            seen: Seen::default(),
            done: false,
        }
    }
}

/// Checks that an environment's scans come newest first, as `sort=created:desc` asks: from a
/// server that ignores the order, the first completed scan is an old one, and the findings of the
/// scans after it would close as absent. Scans without a readable `created` are not compared.
#[derive(Default)]
struct NewestFirst {
    /// The `created` of the last scan compared, and its id.
    last: Option<(time::OffsetDateTime, String)>,
}

impl NewestFirst {
    fn check(&mut self, scan: &DastScan, environment_id: &str) -> Result<(), VendorError> {
        let Some(created) = scan.created.as_deref().and_then(|c| {
            time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339).ok()
        }) else {
            return Ok(());
        };
        if let Some((before, id)) = &self.last
            && created > *before
        {
            return Err(VendorError::Malformed {
                endpoint: "dast-scans",
                detail: format!(
                    "environment {environment_id}'s scans are not newest first as `sort=created:desc` asks: scan {} was created after scan {id}, which came before it; no scan is taken for the environment (the first completed might be an old one), and it is asked again next run",
                    scan.scan_id
                ),
            });
        }
        self.last = Some((created, scan.scan_id.clone()));
        Ok(())
    }
}

/// An id that goes into a URL path, for the error should it not fit one.
struct NamedId {
    endpoint: &'static str,
    what: &'static str,
    from: &'static str,
}

/// Branch names asked a page of `/api/projects/branches`.
const BRANCH_PAGE: usize = 100;
/// The project endpoints' documented default page ("by default they return the first 20
/// results"). Assumed, not documented: a server that caps `limit` caps it no lower than its own
/// default, so a page shorter than this is the last.
const LEAST_BRANCH_PAGE: usize = 20;
/// At most this many pages of one project's branches (100,000 names at 100 a page): a server
/// that keeps sending new names is not paging as it began.
const MAX_BRANCH_PAGES: usize = 1_000;

/// A project's branch names as their pages come (item offsets, counted in names received). The
/// answer has no total and a server may send fewer names a page than asked, so a short page does
/// not end the list by itself: it does when it is shorter than the longest page the server has
/// sent (for any project: the plan learns it from every project's first page) or than the
/// documented default page, or when it is empty. Else the next page is asked for: a list cut
/// short would leave branches unpulled and, with `close_deleted_items`, close their findings.
/// A later page that repeats names of the pages before (the list moved while it was read, or the
/// server ignores `offset`) or a list past [`MAX_BRANCH_PAGES`] ends it in doubt: the plan then
/// reports the listing incomplete, and finalize closes no asset it did not see.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BranchListing {
    names: Vec<String>,
    seen: std::collections::HashSet<String>,
    received: usize,
    pages: usize,
    last_page: usize,
    doubt: Option<String>,
}

impl BranchListing {
    pub fn add(&mut self, page: Vec<String>) {
        self.pages += 1;
        self.received += page.len();
        self.last_page = page.len();
        let mut repeated = 0;
        for name in page {
            if self.seen.insert(name.clone()) {
                self.names.push(name);
            } else {
                repeated += 1;
            }
        }
        if repeated > 0 && self.pages > 1 && self.doubt.is_none() {
            self.doubt = Some(format!(
                "page {} of its branch names repeats {repeated} of the pages before: the list moved while it was read, or the server ignores `offset`",
                self.pages
            ));
        }
    }

    /// The tenant answered the project not found (404): it was deleted since it was listed, or
    /// its id is not one the tenant knows. The list ends in doubt: its branches are not known.
    pub fn project_not_found(&mut self) {
        self.last_page = 0;
        self.doubt.get_or_insert_with(|| {
            "the tenant answered the project not found (404): deleted since it was listed?".into()
        });
    }

    /// Where the next page starts: the names received so far.
    pub fn offset(&self) -> usize {
        self.received
    }

    /// The names the last page held.
    pub fn last_page(&self) -> usize {
        self.last_page
    }

    /// Whether another page may hold more names, the longest page the server has sent being
    /// `longest_page` names. A list that would go on past [`MAX_BRANCH_PAGES`] ends in doubt.
    pub fn may_continue(&mut self, longest_page: usize) -> bool {
        let more = self.doubt.is_none()
            && self.last_page > 0
            && self.last_page >= longest_page.max(LEAST_BRANCH_PAGE);
        if more && self.pages >= MAX_BRANCH_PAGES {
            self.doubt = Some(format!(
                "its branch names still came after {MAX_BRANCH_PAGES} pages: the server is not paging as it began"
            ));
            return false;
        }
        more
    }

    /// The names, each once in the order they came, and why the list may be short, if it may.
    pub fn into_names(self) -> (Vec<String>, Option<String>) {
        (self.names, self.doubt)
    }
}

/// A page a pager asked for, or `None` where the server refused it (see
/// [`VendorError::refuses_a_page`]) and it was the page after a full last page by the reported
/// total (`beyond`): a server may refuse a page past its end rather than answer it empty.
fn unless_refused_past_the_end(
    answer: Result<ListPage, VendorError>,
    beyond: bool,
) -> Result<Option<ListPage>, VendorError> {
    match answer {
        Err(refused) if beyond && refused.refuses_a_page() => Ok(None),
        answer => answer.map(Some),
    }
}

/// Whether a page of `received` records is full: as many as asked, or, after the first, as many
/// as the largest page the server has sent (one that caps the page size silently).
fn full_page(received: u64, asked: u64, served: u64, number: u32) -> bool {
    received >= asked || (number > 0 && received >= served)
}

/// A results page that names another scan than `asked` (`scanID`: of the page on `/api/results`,
/// of each record on `/api/sast-results`, where the first is read): the server answered about
/// another scan, and taking it would close every finding of this one it does not hold. A page
/// that names none passes.
fn of_the_scan_asked(
    endpoint: &'static str,
    page: &ListPage,
    asked: &str,
    number: u32,
) -> Result<(), VendorError> {
    #[derive(serde::Deserialize)]
    struct Named {
        #[serde(rename = "scanID", default)]
        scan_id: Option<String>,
    }
    let named = page.scan_id.clone().or_else(|| {
        let first = page.records.first()?;
        serde_json::from_slice::<Named>(page.record(first))
            .ok()?
            .scan_id
    });
    match named {
        Some(named) if !same_id(&named, asked) => Err(VendorError::Malformed {
            endpoint,
            detail: format!(
                "page {} is of scan {named}, where scan {asked} was asked for (`scan-id`): the server answered about another scan; nothing of the scan is taken, and it is pulled again next run",
                number + 1
            ),
        }),
        _ => Ok(()),
    }
}

/// The environment a DAST result names (`environment_id`), where that is another than `asked`
/// (a result naming none, or one that does not parse, passes: the transform judges it).
fn names_another_environment(record: &[u8], asked: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Named<'a> {
        #[serde(borrow, default)]
        environment_id: Option<std::borrow::Cow<'a, str>>,
    }
    let named: Named = serde_json::from_slice(record).ok()?;
    named
        .environment_id
        .filter(|id| !same_id(id, asked))
        .map(|id| id.into_owned())
}

/// The scans of a page of an environment's scans (newest first). A record that is not a scan,
/// or names no status, before the page's first completed scan may be the newest completed one:
/// taking an older one for it would close as absent every finding the scans after that one
/// found, so the page is refused. One after it is older than the scan taken, and left out.
fn dast_scans_of_page(records: &[&[u8]], from: u64) -> Result<Vec<DastScan>, VendorError> {
    let mut scans: Vec<DastScan> = Vec::with_capacity(records.len());
    let mut completed_read = false;
    for (n, record) in records.iter().enumerate() {
        if completed_read {
            scans.extend(serde_json::from_slice(record).ok());
            continue;
        }
        let refused = |why: String| VendorError::Malformed {
            endpoint: "dast-scans",
            detail: format!(
                "record {n} of the page from {from} {why}, and no completed scan comes before it: it may be the newest completed one, so no scan is taken for the environment, and it is asked again next run"
            ),
        };
        let scan: DastScan =
            serde_json::from_slice(record).map_err(|e| refused(format!("is not a scan ({e})")))?;
        if scan
            .last_status
            .as_deref()
            .is_none_or(|s| s.trim().is_empty())
        {
            return Err(refused(format!("(scan {}) names no status", scan.scan_id)));
        }
        completed_read = scan.is_completed();
        scans.push(scan);
    }
    Ok(scans)
}

/// A DAST scans answer that holds another environment's scan than the one asked for: its
/// findings are not this environment's, so no scan is taken for it.
fn environment_id_ignored(asked: &str, other: &str) -> VendorError {
    VendorError::Malformed {
        endpoint: "dast-scans",
        detail: format!(
            "asked for the scans of environment {asked}, the answer holds a scan of environment {other}: the server ignored `environmentId`; no scan is taken for the environment, and it is asked again next run"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listing's records as the vendor may send them: `null` for an empty list or map (as Go
    /// writes one) keeps the item; a record that does not read as its type is named by its id.
    #[test]
    fn null_lists_keep_an_item_and_a_record_that_does_not_read_is_named() {
        let records: [&[u8]; 3] = [
            br#"{"id":"p1","name":"a","groups":null,"tags":null,"mainBranch":null,"criticality":"3"}"#,
            br#"{"id":"p2","name":5}"#,
            br#"{"name":"no id","id":7}"#,
        ];
        let mut listing = Listing {
            items: Vec::new(),
            raw: Vec::new(),
            malformed: Vec::new(),
            completeness: Completeness::default(),
        };
        parse_items::<Project>(&records, "project", &mut listing);
        let ids: Vec<&str> = listing.items.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["p1"]);
        assert!(listing.items[0].groups.is_empty() && listing.items[0].tags.is_empty());
        assert_eq!(listing.malformed.len(), 2);
        assert!(
            listing.malformed[0].starts_with("project record 1 (p2): invalid type"),
            "{}",
            listing.malformed[0]
        );
        assert!(
            listing.malformed[1].starts_with("project record 2: invalid type"),
            "{}",
            listing.malformed[1]
        );
        let environment: DastEnvironment =
            serde_json::from_str(r#"{"environmentId":"e","tags":null}"#).unwrap();
        assert!(environment.tags.is_empty());
        let scan: LastScan = serde_json::from_str(r#"{"id":"s","engines":null}"#).unwrap();
        assert!(scan.engines.is_empty());
    }

    fn names(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("branch-{i}")).collect()
    }

    #[test]
    fn a_branch_page_ends_the_list_only_when_shorter_than_the_server_sends() {
        let after = |page: Vec<String>| {
            let mut listing = BranchListing::default();
            listing.add(page);
            listing
        };
        // Shorter than the documented default page: the last, whatever else was seen.
        assert!(!after(names(0..3)).may_continue(3));
        assert!(!after(Vec::new()).may_continue(0));
        // As long as the longest page the server sent: it may cap there.
        assert!(after(names(0..20)).may_continue(20));
        assert!(after(names(0..37)).may_continue(37));
        // Shorter than a page the server sent for another project: the last.
        assert!(!after(names(0..20)).may_continue(37));
        // A full page, as asked.
        assert!(after(names(0..100)).may_continue(100));
        // More than asked (a server ignoring `limit`) and as long as any: asked again.
        assert!(after(names(0..150)).may_continue(150));
        // Offsets count the names received, a name sent twice on one page included.
        let mut twice = after([names(0..19), names(0..1)].concat());
        assert_eq!(twice.offset(), 20);
        assert!(twice.may_continue(20));
        twice.add(names(19..25));
        assert!(!twice.may_continue(20));
        assert_eq!(twice.into_names(), (names(0..25), None));
    }

    #[test]
    fn a_branch_list_that_repeats_itself_or_never_ends_ends_in_doubt() {
        // A server ignoring `offset`: the second page is the first again.
        let mut repeated = BranchListing::default();
        repeated.add(names(0..20));
        assert!(repeated.may_continue(20));
        repeated.add(names(0..20));
        assert!(!repeated.may_continue(20));
        let (listed, doubt) = repeated.into_names();
        assert_eq!(listed, names(0..20));
        assert!(
            doubt
                .unwrap()
                .contains("page 2 of its branch names repeats 20")
        );
        // A list that moved: a name of page 1 comes again on page 2 (another one went ahead of it).
        let mut moved = BranchListing::default();
        moved.add(names(0..20));
        moved.add(names(19..39));
        assert!(!moved.may_continue(20));
        assert!(moved.into_names().1.unwrap().contains("repeats 1 of"));
        // New names page after page, past the bound.
        let mut endless = BranchListing::default();
        let mut pages = 0;
        while endless.may_continue(20) || pages == 0 {
            endless.add(names(pages * 20..(pages + 1) * 20));
            pages += 1;
        }
        assert_eq!(pages, MAX_BRANCH_PAGES);
        assert!(endless.into_names().1.unwrap().contains("after 1000 pages"));
    }

    #[test]
    fn completeness_reports_short_lists_and_moving_totals() {
        let mut c = Completeness::default();
        c.observe_total(10);
        c.unique = 10;
        assert!(c.is_complete());
        c.unique = 9;
        assert!(
            c.problem()
                .unwrap()
                .contains("9 distinct records but the server reported 10")
        );
        c.unique = 10;
        c.observe_total(12);
        assert!(
            c.problem()
                .unwrap()
                .contains("total changed during paging (first 10, then 12)")
        );
    }

    #[test]
    fn a_pager_reads_ahead_by_its_share_of_the_cap_and_of_the_byte_room() {
        const MB: usize = 1 << 20;
        // Alone: the whole cap; before any page, as if pages were small.
        assert_eq!(pages_ahead(8, 1, 0), 8);
        assert_eq!(pages_ahead(8, 1, 100_000), 8);
        assert_eq!(pages_ahead(64, 1, 100_000), 64);
        // Shared: the cap divided among the readers; at least one page ahead however many.
        assert_eq!(pages_ahead(8, 2, 100_000), 4);
        assert_eq!(pages_ahead(8, 3, 100_000), 2);
        assert_eq!(pages_ahead(8, 20, 100_000), 1);
        assert_eq!(pages_ahead(1, 1, 100_000), 1);
        // Pages of 10,000 results (about 15 MB): six held at most; larger pages, fewer.
        assert_eq!(pages_ahead(8, 1, 15 * MB), 6);
        assert_eq!(pages_ahead(64, 1, 15 * MB), 6);
        assert_eq!(pages_ahead(8, 1, 50 * MB), 1);
        assert_eq!(pages_ahead(8, 1, 500 * MB), 1);
        // The bytes are shared too: two large pulls three each, four (a split scan's parts) one.
        assert_eq!(pages_ahead(8, 2, 15 * MB), 3);
        assert_eq!(pages_ahead(64, 4, 15 * MB), 1);
        assert_eq!(pages_ahead(8, 4, 15 * MB), 1);
        // Small pages among many pullers: the cap's share decides, as before.
        assert_eq!(pages_ahead(8, 8, 1_500_000), 1);
        assert_eq!(pages_ahead(8, 2, 1_500_000), 4);
    }

    #[test]
    fn pages_with_repeats_are_rebuilt_from_new_records_only() {
        let body = Bytes::from_static(br#"{"results":[{"id":1},{"id":2}],"totalCount":3}"#);
        let page = ListPage {
            body: body.clone(),
            total: 3,
            records: vec![12..20, 21..29],
            pages: None,
            scan_id: None,
        };
        let mut seen = Seen::default();
        let mut c = Completeness::default();
        seen.insert(br#"{"id":1}"#);
        let fresh = seen.admit(&page, &mut c);
        let handed = handed_over(&page, &fresh, "results", "totalCount", 1);
        assert_eq!(
            &handed.body[..],
            br#"{"results":[{"id":2}],"totalCount":3}"#
        );
        assert_eq!((handed.records, c.duplicates, c.unique), (1, 1, 2));
        assert!(!c.stalled(), "a page with one new record moves the list on");
        c.observe_total(3);
        assert!(seen.admit(&page, &mut c).is_empty());
        assert_eq!(c.stalled_at_page, Some(1), "a page of repeats stalls it");
    }

    #[test]
    fn a_results_page_of_another_scan_is_refused() {
        let page = |scan_id: Option<&str>| ListPage {
            body: Bytes::from_static(br#"{"results":[],"totalCount":0}"#),
            total: 0,
            records: Vec::new(),
            pages: None,
            scan_id: scan_id.map(str::to_string),
        };
        let asked = "7f0c2a9e-1b2c-4d5e-8f90-a1b2c3d4e5f6";
        assert!(of_the_scan_asked("results", &page(Some(asked)), asked, 0).is_ok());
        let upper = asked.to_ascii_uppercase();
        assert!(of_the_scan_asked("results", &page(Some(&upper)), asked, 0).is_ok());
        assert!(of_the_scan_asked("results", &page(None), asked, 0).is_ok());
        let refused = of_the_scan_asked("results", &page(Some("other")), asked, 2)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains(&format!(
                "page 3 is of scan other, where scan {asked} was asked for"
            )),
            "{refused}"
        );
        // `/api/sast-results` names its scan in each row: the first is read.
        let rows = |first: &str| {
            let body = format!(r#"{{"results":[{first},{{"scanID":"x"}}],"totalCount":2}}"#);
            parse_list_page(Bytes::from(body), "results", &["totalCount"]).unwrap()
        };
        let named = format!(r#"{{"resultHash":"h","scanID":"{upper}"}}"#);
        assert!(of_the_scan_asked("sast-results", &rows(&named), asked, 0).is_ok());
        assert!(
            of_the_scan_asked("sast-results", &rows(r#"{"resultHash":"h"}"#), asked, 0).is_ok()
        );
        let other = rows(r#"{"resultHash":"h","scanID":"other"}"#);
        assert!(of_the_scan_asked("sast-results", &other, asked, 0).is_err());
    }

    #[test]
    fn only_a_refusal_of_the_page_past_the_end_ends_a_list() {
        let not_found = || VendorError::NotFound {
            endpoint: "results",
            what: "page".into(),
        };
        let rejected = |status| VendorError::Rejected {
            endpoint: "results",
            status,
            message: "no".into(),
        };
        assert!(matches!(
            unless_refused_past_the_end(Err(not_found()), true),
            Ok(None)
        ));
        assert!(matches!(
            unless_refused_past_the_end(Err(rejected(422)), true),
            Ok(None)
        ));
        // Mid-list, a refusal fails the pull.
        assert!(unless_refused_past_the_end(Err(not_found()), false).is_err());
        // Past the end, what is not a refusal of the page still fails it.
        for error in [
            VendorError::Forbidden {
                endpoint: "results",
                role_hint: "a role",
            },
            VendorError::Unauthorized {
                endpoint: "results",
            },
            VendorError::RetriesExhausted {
                endpoint: "results",
                attempts: 3,
                waited: std::time::Duration::from_secs(1),
                last: "HTTP 503".into(),
            },
            rejected(301),
        ] {
            let shown = error.to_string();
            assert!(
                unless_refused_past_the_end(Err(error), true).is_err(),
                "{shown}"
            );
        }
    }

    /// A record that is not a scan, or names no status, is refused before the page's first
    /// completed scan (it may be the newest completed one), and left out after it (older than
    /// the scan taken).
    #[test]
    fn a_dast_scan_record_that_is_not_a_scan_is_refused_only_before_the_first_completed() {
        let running = br#"{"scanId":"r","lastStatus":"Running"}"#.as_slice();
        let completed = br#"{"scanId":"c","lastStatus":"Completed"}"#.as_slice();
        let broken = br#"{"lastStatus":"Completed"}"#.as_slice();
        let no_status = br#"{"scanId":"x","lastStatus":null}"#.as_slice();
        let padded = br#"{"scanId":"p","lastStatus":" Completed "}"#.as_slice();
        let ids = |records: &[&[u8]]| {
            dast_scans_of_page(records, 10).map(|scans| {
                scans
                    .into_iter()
                    .map(|scan| scan.scan_id)
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            ids(&[completed, broken, no_status, running]).unwrap(),
            ["c", "x", "r"]
        );
        // A status read blanks aside: the padded scan is the completed one, the record after it
        // older.
        assert_eq!(ids(&[padded, broken]).unwrap(), ["p"]);
        for (records, said) in [
            (
                vec![broken, completed],
                "record 0 of the page from 10 is not a scan",
            ),
            (
                vec![running, broken, completed],
                "record 1 of the page from 10 is not a scan",
            ),
            (
                vec![running, no_status, completed],
                "record 1 of the page from 10 (scan x) names no status",
            ),
        ] {
            let refused = ids(&records).unwrap_err().to_string();
            assert!(refused.contains(said), "{refused}");
        }
    }

    #[test]
    fn dast_scans_out_of_newest_first_order_are_named() {
        let scan = |id: &str, created: Option<&str>| DastScan {
            scan_id: id.into(),
            environment_id: None,
            last_status: None,
            created: created.map(str::to_string),
            update_time: None,
            scan_type: None,
        };
        let mut order = NewestFirst::default();
        for (id, created) in [
            ("a", Some("2025-01-01T10:00:00Z")),
            ("b", Some("2025-01-01T10:00:00Z")),
            ("c", None),
            ("d", Some("not a date")),
            // 09:30 UTC: older, though its text sorts after the first's.
            ("e", Some("2025-01-01T11:30:00+02:00")),
        ] {
            assert!(order.check(&scan(id, created), "env").is_ok(), "{id}");
        }
        let refused = order
            .check(&scan("f", Some("2025-01-01T09:45:00Z")), "env")
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("scan f was created after scan e, which came before it"),
            "{refused}"
        );
    }

    /// Branch names are git's, case-sensitive: a scan of `Main` answered for `main` is refused;
    /// words of the API (a status, an engine) are read case aside.
    #[test]
    fn a_last_scan_of_a_branch_differing_only_in_case_is_not_the_branch_asked() {
        let query = LastScanQuery {
            branch: Some("main".into()),
            ..LastScanQuery::completed(Some(crate::Engine::Sast))
        };
        let scan = |branch: &str| LastScan {
            id: "s".into(),
            status: Some("completed".into()),
            branch: Some(branch.into()),
            created_at: None,
            updated_at: None,
            engines: vec!["SAST".into()],
        };
        assert_eq!(query.mismatch(&scan("main")), None);
        let refused = query.mismatch(&scan("Main")).expect("refused");
        assert!(
            refused.contains("scan s is of branch Main, not the branch main asked for"),
            "{refused}"
        );
    }

    #[test]
    fn a_dast_result_of_another_environment_is_named() {
        let uuid = "7f0c2a9e-1b2c-4d5e-8f90-a1b2c3d4e5f6";
        let upper = format!(r#"{{"environment_id":"{}"}}"#, uuid.to_ascii_uppercase());
        assert_eq!(
            names_another_environment(upper.as_bytes(), uuid),
            None,
            "UUIDs: case aside"
        );
        let of = |record: &str| names_another_environment(record.as_bytes(), "env-a");
        assert_eq!(
            of(r#"{"environment_id":"ENV-A"}"#).as_deref(),
            Some("ENV-A"),
            "ids that are not UUIDs: exactly"
        );
        assert_eq!(of(r#"{"id":"1","environment_id":"env-a"}"#), None);
        assert_eq!(of(r#"{"id":"1"}"#), None, "naming none passes");
        assert_eq!(
            of(r#"{"environment_id":"env\u002db"}"#).as_deref(),
            Some("env-b")
        );
        assert_eq!(
            of("not json"),
            None,
            "the transform judges what does not parse"
        );
    }

    #[test]
    fn room_for_the_reported_total_is_made_once_and_capped() {
        let page = |total: u64| ListPage {
            body: Bytes::from_static(br#"{"results":[{"id":1}],"totalCount":0}"#),
            total,
            records: std::iter::once(12..20).collect(),
            pages: None,
            scan_id: None,
        };
        let first_page_of = |total: u64| {
            let (mut seen, mut c) = (Seen::default(), Completeness::default());
            c.observe_total(total);
            seen.admit(&page(total), &mut c);
            seen.hashes.capacity()
        };
        assert!(first_page_of(100_000) >= 100_000);
        let lying = first_page_of(u64::MAX);
        assert!(
            (RESERVED_RECORDS_CAP as usize..2 * RESERVED_RECORDS_CAP as usize).contains(&lying),
            "{lying}"
        );
        // Later pages make no room of their own.
        let (mut seen, mut c) = (Seen::default(), Completeness::default());
        c.observe_total(1);
        seen.admit(&page(1), &mut c);
        let after_first = seen.hashes.capacity();
        c.observe_total(100_000);
        seen.admit(&page(100_000), &mut c);
        assert_eq!(seen.hashes.capacity(), after_first);
    }
}
