//! Faults injected per endpoint, switchable at start-up (flags) and at run time (code or
//! `PUT /_emulator/faults/{endpoint}`). Each failure fault fires with its rate and, when `max` is
//! set, at most that many times in all, so a test can ask for "exactly three 429s, then normal".

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::endpoint::Endpoint;

/// How a 429 tells the client when to come back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "form", content = "secs")]
pub enum RetryAfter {
    /// No `Retry-After` header.
    #[default]
    Absent,
    /// `Retry-After: <seconds>`.
    Seconds(u64),
    /// `Retry-After: <HTTP-date>` this many seconds ahead.
    HttpDate(u64),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultSpec {
    /// Added to every response, plus a uniform random jitter up to `jitter_ms`.
    pub latency_ms: u64,
    pub jitter_ms: u64,
    /// Share of requests answered 429.
    pub rate_limit_rate: f64,
    pub retry_after: RetryAfter,
    /// Share of requests answered with `server_error_status` (default 503).
    pub server_error_rate: f64,
    pub server_error_status: Option<u16>,
    /// A 503 also carries `retry_after` (a gateway in maintenance saying when to come back).
    pub server_error_retry_after: bool,
    /// Share of requests answered 403 as the API does for a resource the caller may not read.
    pub forbidden_rate: f64,
    /// Share of requests whose connection is dropped without an answer.
    pub reset_rate: f64,
    /// Share of successful responses cut off halfway through the body (the connection then closes).
    pub truncate_rate: f64,
    /// Share of pages with one record that breaks the documented schema.
    pub malformed_rate: f64,
    /// Share of pages with one record whose `type` is gone: no engine can be told for it.
    pub untyped_rate: f64,
    /// Added to the reported total on every request after the first while set, as if the
    /// collection grew during paging.
    pub total_drift: i64,
    /// Every page reports this total, whatever the collection holds (before any drift).
    pub claimed_total: Option<u64>,
    /// Every page is answered as the first, whatever offset, window or page number it asks for
    /// (a server ignoring where a page starts).
    pub position_ignored: bool,
    /// Every page but the first is answered as if, once the first was sent, the list's first
    /// record had been edited (its triage state changed) and had moved to the end: the records
    /// after it come one place earlier, so one is never sent and the edited one is sent twice,
    /// each time with other bytes. `/api/results`, unfiltered, of a scan that ran more than one
    /// engine; and `/api/projects`, unfiltered, its first project renamed.
    pub first_moved_to_end: bool,
    /// `/api/projects` and `/api/dast/scans/environments`, unfiltered: every page but the first
    /// is answered as if, once the first was sent, the list's first project (environment) had
    /// been deleted and a new one created at its end: those after it come one place earlier, so
    /// one is never sent, and the count stays.
    pub first_replaced: bool,
    /// `/api/dast/scans/environments`: every environment with a login (`hasAuth`) says its last
    /// scan's login failed (`lastAuthSuccess` and `authSuccess` false); the DAST results
    /// endpoint: the results of a scan of such an environment as if it had run without its
    /// login, their first half only (what lies behind the login never reached), the total
    /// saying so.
    pub login_failed: bool,
    /// `/api/projects/last-scan` answers each project's latest scan whatever `scan-status`,
    /// `engine`, `branch` and `project-ids` ask, `/api/dast/scans/scans` every environment's
    /// scans whatever `environmentId` asks, the results endpoints the tenant's first scan's
    /// (first DAST scan's) results and `/api/scans/{id}` its record whatever scan is asked (a
    /// server that ignores its filters).
    pub filters_ignored: bool,
    /// `/api/dast/scans/scans` answers oldest first whatever `sort` asks (a server that ignores
    /// the order asked for).
    pub sort_ignored: bool,
    /// A page that starts at or past the end of the list (not the first page) is answered with
    /// this status (400 or 404) instead of an empty page: a server that refuses a page past its
    /// end. On the results endpoints (all engines, SAST alone, DAST).
    pub past_end_status: Option<u16>,
    /// Every page but the first holds at most this many records, whatever `limit` asks (a server
    /// whose pages shrink after the first). On the lists of projects, branches, results (all
    /// engines, and SAST alone), DAST environments and DAST scans.
    pub pages_shrink_to: Option<u64>,
    /// Every page holds at most this many records, whatever `limit` or the window asks (a server
    /// that caps the page size silently), on the same lists and DAST results. Where
    /// `/api/results` reads `offset` as a page index, and on DAST results, it pages by the size
    /// it sends.
    pub page_cap: Option<u64>,
    /// `/api/projects`: every project listed names this as its main branch, while its scans stay
    /// on their branches and `use-main-branch` answers those (a server whose `use-main-branch`
    /// answer is of another branch than the project's record names).
    pub main_branch_listed: Option<String>,
    /// `/api/projects`: the tenant's last project is listed under this id, its other fields as
    /// they are (a project whose id was crafted; its scans stay under its own id, so no scan is
    /// found for it).
    pub last_project_id: Option<String>,
    /// Records whose `type` is the first text are served with the second (`/api/results`: a
    /// vendor that renamed an engine's record type, as `containers` and `sca-container` name
    /// one engine's records).
    pub record_type_renamed: Option<(String, String)>,
    /// `/api/projects` (or `/api/dast/scans/environments`): the credential sees only the first
    /// this many projects (environments); every other is answered as if deleted, in the lists,
    /// `last-scan`, the project's record, branches and scans (an environment's scans): a user or
    /// client removed from the groups of the rest. A scan's record and results are still served
    /// by id. On `last-scan` alone, the projects past the first this many are answered as without
    /// a scan. Not limited by `match`.
    pub visible: Option<u32>,
    /// Token endpoint only: access tokens issued while set stop working after this many seconds,
    /// although their `exp` claim promises the full lifetime.
    pub expire_tokens_after_secs: Option<u64>,
    /// The failure faults (429, 5xx, reset, truncate, malformed, untyped) fire at most this often
    /// in all.
    pub max: Option<u64>,
    /// When set, the faults apply only to requests whose path and query contain this text (a
    /// scan, project or environment id), so one item can fail while the others pass.
    pub only_matching: Option<String>,
}

tokio::task_local! {
    /// The path and query of the request being answered, so faults that act inside a handler
    /// (drift, malformed records) honour `only_matching` like the ones the middleware applies.
    static REQUEST_TARGET: String;
}

/// Answers one request with its target known to the faults.
pub async fn for_request<F: std::future::Future>(path_and_query: String, answer: F) -> F::Output {
    REQUEST_TARGET.scope(path_and_query, answer).await
}

/// The target of the request being answered ("" outside one).
pub fn request_target() -> String {
    REQUEST_TARGET.try_with(String::clone).unwrap_or_default()
}

impl FaultSpec {
    fn applies_to(&self, path_and_query: &str) -> bool {
        self.only_matching
            .as_deref()
            .is_none_or(|text| path_and_query.contains(text))
    }
}

impl FaultSpec {
    /// Parses the flag form `key=value,key=value`, for example
    /// `429=0.2,retry-after=date:2,5xx=0.1,status=502,latency-ms=20,max=5`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut spec = FaultSpec::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("fault setting '{part}' is not of the form key=value"))?;
            let rate = || -> Result<f64, String> {
                let r: f64 = value.parse().map_err(|_| {
                    format!("'{key}' expects a rate between 0 and 1, got '{value}'")
                })?;
                if (0.0..=1.0).contains(&r) {
                    Ok(r)
                } else {
                    Err(format!(
                        "'{key}' expects a rate between 0 and 1, got '{value}'"
                    ))
                }
            };
            let int = || -> Result<u64, String> {
                value
                    .parse()
                    .map_err(|_| format!("'{key}' expects a whole number, got '{value}'"))
            };
            match key {
                "latency-ms" => spec.latency_ms = int()?,
                "jitter-ms" => spec.jitter_ms = int()?,
                "429" => spec.rate_limit_rate = rate()?,
                "retry-after" => {
                    spec.retry_after = match value {
                        "none" => RetryAfter::Absent,
                        v if v.starts_with("date:") => {
                            RetryAfter::HttpDate(v[5..].parse().map_err(|_| {
                                format!("'retry-after=date:N' expects whole seconds, got '{v}'")
                            })?)
                        }
                        _ => RetryAfter::Seconds(int()?),
                    }
                }
                "5xx" => spec.server_error_rate = rate()?,
                "status" => {
                    let status = int()?;
                    if !(500..=599).contains(&status) {
                        return Err(format!("'status' expects a 5xx status, got '{value}'"));
                    }
                    spec.server_error_status = Some(status as u16);
                }
                "retry-after-503" => {
                    spec.server_error_retry_after = value.parse().map_err(|_| {
                        format!("'retry-after-503' expects true or false, got '{value}'")
                    })?
                }
                "403" => spec.forbidden_rate = rate()?,
                "match" => spec.only_matching = Some(value.to_string()),
                "reset" => spec.reset_rate = rate()?,
                "truncate" => spec.truncate_rate = rate()?,
                "malformed" => spec.malformed_rate = rate()?,
                "untyped" => spec.untyped_rate = rate()?,
                "drift" => {
                    spec.total_drift = value
                        .parse()
                        .map_err(|_| format!("'drift' expects an integer, got '{value}'"))?
                }
                "claim-total" => spec.claimed_total = Some(int()?),
                "ignore-position" => {
                    spec.position_ignored = value.parse().map_err(|_| {
                        format!("'ignore-position' expects true or false, got '{value}'")
                    })?
                }
                "move-first-to-end" => {
                    spec.first_moved_to_end = value.parse().map_err(|_| {
                        format!("'move-first-to-end' expects true or false, got '{value}'")
                    })?
                }
                "ignore-filters" => {
                    spec.filters_ignored = value.parse().map_err(|_| {
                        format!("'ignore-filters' expects true or false, got '{value}'")
                    })?
                }
                "past-end" => {
                    let status = int()?;
                    if status != 400 && status != 404 {
                        return Err(format!("'past-end' expects 400 or 404, got '{value}'"));
                    }
                    spec.past_end_status = Some(status as u16);
                }
                "ignore-sort" => {
                    spec.sort_ignored = value.parse().map_err(|_| {
                        format!("'ignore-sort' expects true or false, got '{value}'")
                    })?
                }
                "login-failed" => {
                    spec.login_failed = value.parse().map_err(|_| {
                        format!("'login-failed' expects true or false, got '{value}'")
                    })?;
                }
                "replace-first" => {
                    spec.first_replaced = value.parse().map_err(|_| {
                        format!("'replace-first' expects true or false, got '{value}'")
                    })?
                }
                "shrink-to" => spec.pages_shrink_to = Some(int()?),
                "page-cap" => spec.page_cap = Some(int()?),
                "list-main-branch" if !value.is_empty() => {
                    spec.main_branch_listed = Some(value.to_string())
                }
                "last-id" if !value.is_empty() => spec.last_project_id = Some(value.to_string()),
                "retype" => {
                    let renamed = value
                        .split_once(':')
                        .filter(|(from, to)| !from.is_empty() && !to.is_empty());
                    let Some((from, to)) = renamed else {
                        return Err(format!(
                            "'retype' expects the old and the new record type as OLD:NEW, got '{value}'"
                        ));
                    };
                    spec.record_type_renamed = Some((from.to_string(), to.to_string()));
                }
                "expire-tokens-after" => spec.expire_tokens_after_secs = Some(int()?),
                "visible" => {
                    spec.visible = Some(u32::try_from(int()?).map_err(|_| {
                        format!("'visible' expects a count of projects, got '{value}'")
                    })?)
                }
                "max" => spec.max = Some(int()?),
                _ => {
                    return Err(format!(
                        "unknown fault setting '{key}'; expected one of latency-ms, jitter-ms, 429, retry-after, 5xx, status, retry-after-503, 403, match, reset, truncate, malformed, untyped, drift, claim-total, ignore-position, ignore-filters, ignore-sort, past-end (400 or 404), move-first-to-end, replace-first, login-failed, list-main-branch (a branch name), last-id (a project id), retype (OLD:NEW), shrink-to, page-cap, expire-tokens-after, visible, max"
                    ));
                }
            }
        }
        Ok(spec)
    }
}

/// Parses the `--fault` flag form `<endpoint|all>:<settings>`.
pub fn parse_flag(text: &str) -> Result<(Vec<Endpoint>, FaultSpec), String> {
    let (target, settings) = text.split_once(':').ok_or_else(|| {
        format!("--fault '{text}' is not of the form <endpoint|all>:<key=value,...>")
    })?;
    let endpoints = if target == "all" {
        Endpoint::ALL.to_vec()
    } else {
        vec![Endpoint::parse(target).ok_or_else(|| {
            let names: Vec<_> = Endpoint::ALL.iter().map(|e| e.name()).collect();
            format!(
                "--fault names unknown endpoint '{target}'; expected all or one of {}",
                names.join(", ")
            )
        })?]
    };
    Ok((endpoints, FaultSpec::parse(settings)?))
}

/// What the fault layer decided for one request.
#[derive(Debug, PartialEq)]
pub enum Decision {
    Pass,
    RateLimit(RetryAfter),
    /// The status, and the `Retry-After` a 503 carries (see `server_error_retry_after`).
    ServerError(u16, RetryAfter),
    Forbidden,
    Reset,
}

#[derive(Default)]
struct Slot {
    spec: FaultSpec,
    fired: u64,
    requests_while_set: u64,
}

/// Counts of faults that really fired, per endpoint.
#[derive(Default)]
pub struct Fired {
    pub rate_limited: AtomicU64,
    pub server_errors: AtomicU64,
    pub forbidden: AtomicU64,
    pub resets: AtomicU64,
    pub truncated: AtomicU64,
    pub malformed: AtomicU64,
    pub untyped: AtomicU64,
    pub refused_past_end: AtomicU64,
}

#[derive(Default)]
pub struct FaultControl {
    slots: [Mutex<Slot>; Endpoint::ALL.len()],
    pub fired: [Fired; Endpoint::ALL.len()],
}

impl FaultControl {
    pub fn set(&self, endpoint: Endpoint, spec: FaultSpec) {
        *self.slot(endpoint) = Slot {
            spec,
            ..Slot::default()
        };
    }

    pub fn clear_all(&self) {
        for e in Endpoint::ALL {
            self.set(e, FaultSpec::default());
        }
    }

    pub fn get(&self, endpoint: Endpoint) -> FaultSpec {
        self.slot(endpoint).spec.clone()
    }

    fn slot(&self, endpoint: Endpoint) -> std::sync::MutexGuard<'_, Slot> {
        self.slots[endpoint.index()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Latency to add to this request.
    pub fn latency(&self, endpoint: Endpoint, path_and_query: &str) -> Duration {
        let spec = &self.slot(endpoint).spec;
        if !spec.applies_to(path_and_query) {
            return Duration::ZERO;
        }
        let jitter = if spec.jitter_ms > 0 {
            rand::rng().random_range(0..=spec.jitter_ms)
        } else {
            0
        };
        Duration::from_millis(spec.latency_ms + jitter)
    }

    /// Rolls the failure faults that answer instead of the handler.
    pub fn decide(&self, endpoint: Endpoint, path_and_query: &str) -> Decision {
        let mut slot = self.slot(endpoint);
        let spec = slot.spec.clone();
        if !spec.applies_to(path_and_query) {
            return Decision::Pass;
        }
        slot.requests_while_set += 1;
        let fired = &self.fired[endpoint.index()];
        if self.roll(&mut slot, spec.rate_limit_rate) {
            fired.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Decision::RateLimit(spec.retry_after);
        }
        if self.roll(&mut slot, spec.server_error_rate) {
            fired.server_errors.fetch_add(1, Ordering::Relaxed);
            let status = spec.server_error_status.unwrap_or(503);
            let retry_after = match (status, spec.server_error_retry_after) {
                (503, true) => spec.retry_after,
                _ => RetryAfter::Absent,
            };
            return Decision::ServerError(status, retry_after);
        }
        if self.roll(&mut slot, spec.forbidden_rate) {
            fired.forbidden.fetch_add(1, Ordering::Relaxed);
            return Decision::Forbidden;
        }
        if self.roll(&mut slot, spec.reset_rate) {
            fired.resets.fetch_add(1, Ordering::Relaxed);
            return Decision::Reset;
        }
        Decision::Pass
    }

    pub fn truncate(&self, endpoint: Endpoint, path_and_query: &str) -> bool {
        let mut slot = self.slot(endpoint);
        if !slot.spec.applies_to(path_and_query) {
            return false;
        }
        let rate = slot.spec.truncate_rate;
        let hit = self.roll(&mut slot, rate);
        if hit {
            self.fired[endpoint.index()]
                .truncated
                .fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    pub fn malformed(&self, endpoint: Endpoint, path_and_query: &str) -> bool {
        self.breaks_a_record(
            endpoint,
            path_and_query,
            |spec| spec.malformed_rate,
            |fired| &fired.malformed,
        )
    }

    pub fn untyped(&self, endpoint: Endpoint, path_and_query: &str) -> bool {
        self.breaks_a_record(
            endpoint,
            path_and_query,
            |spec| spec.untyped_rate,
            |fired| &fired.untyped,
        )
    }

    /// Whether this page gets a broken record, at the rate `rate` reads from the spec; counted
    /// in `counter`.
    fn breaks_a_record(
        &self,
        endpoint: Endpoint,
        path_and_query: &str,
        rate: impl Fn(&FaultSpec) -> f64,
        counter: impl Fn(&Fired) -> &AtomicU64,
    ) -> bool {
        let mut slot = self.slot(endpoint);
        if !slot.spec.applies_to(path_and_query) {
            return false;
        }
        let rate = rate(&slot.spec);
        let hit = self.roll(&mut slot, rate);
        if hit {
            counter(&self.fired[endpoint.index()]).fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// How much to add to the true total in this response.
    pub fn drift(&self, endpoint: Endpoint, path_and_query: &str) -> i64 {
        let slot = self.slot(endpoint);
        if !slot.spec.applies_to(path_and_query) {
            return 0;
        }
        slot.spec.total_drift * (slot.requests_while_set.saturating_sub(1) as i64)
    }

    /// The total a page reports: the true one, or the one claimed, moved by the drift.
    pub fn reported_total(&self, endpoint: Endpoint, path_and_query: &str, total: u64) -> i64 {
        let claimed = {
            let slot = self.slot(endpoint);
            slot.spec
                .applies_to(path_and_query)
                .then_some(slot.spec.claimed_total)
                .flatten()
        };
        i64::try_from(claimed.unwrap_or(total))
            .unwrap_or(i64::MAX)
            .saturating_add(self.drift(endpoint, path_and_query))
    }

    /// Whether this request is answered as the first page, whatever position it asks for.
    pub fn position_ignored(&self, endpoint: Endpoint, path_and_query: &str) -> bool {
        let slot = self.slot(endpoint);
        slot.spec.position_ignored && slot.spec.applies_to(path_and_query)
    }

    pub fn first_moved_to_end(&self, endpoint: Endpoint, path_and_query: &str) -> bool {
        let slot = self.slot(endpoint);
        slot.spec.first_moved_to_end && slot.spec.applies_to(path_and_query)
    }

    pub fn filters_ignored(&self, endpoint: Endpoint, path_and_query: &str) -> bool {
        let slot = self.slot(endpoint);
        slot.spec.filters_ignored && slot.spec.applies_to(path_and_query)
    }

    pub fn main_branch_listed(&self, endpoint: Endpoint, path_and_query: &str) -> Option<String> {
        let slot = self.slot(endpoint);
        slot.spec
            .main_branch_listed
            .clone()
            .filter(|_| slot.spec.applies_to(path_and_query))
    }

    pub fn last_project_id(&self, endpoint: Endpoint, path_and_query: &str) -> Option<String> {
        let slot = self.slot(endpoint);
        slot.spec
            .last_project_id
            .clone()
            .filter(|_| slot.spec.applies_to(path_and_query))
    }

    pub fn record_type_renamed(
        &self,
        endpoint: Endpoint,
        path_and_query: &str,
    ) -> Option<(String, String)> {
        let slot = self.slot(endpoint);
        slot.spec
            .record_type_renamed
            .clone()
            .filter(|_| slot.spec.applies_to(path_and_query))
    }

    pub fn past_end_status(&self, endpoint: Endpoint, path_and_query: &str) -> Option<u16> {
        let slot = self.slot(endpoint);
        slot.spec
            .past_end_status
            .filter(|_| slot.spec.applies_to(path_and_query))
    }

    pub fn sort_ignored(&self, endpoint: Endpoint, path_and_query: &str) -> bool {
        let slot = self.slot(endpoint);
        slot.spec.sort_ignored && slot.spec.applies_to(path_and_query)
    }

    pub fn login_failed(&self, endpoint: Endpoint, path_and_query: &str) -> bool {
        let slot = self.slot(endpoint);
        slot.spec.login_failed && slot.spec.applies_to(path_and_query)
    }

    pub fn first_replaced(&self, endpoint: Endpoint, path_and_query: &str) -> bool {
        let slot = self.slot(endpoint);
        slot.spec.first_replaced && slot.spec.applies_to(path_and_query)
    }

    /// How many records a page holds at most: `asked`, or fewer under a fault that caps every
    /// page or shrinks those after the first.
    pub fn page_room(
        &self,
        endpoint: Endpoint,
        path_and_query: &str,
        asked: u64,
        first: bool,
    ) -> u64 {
        let slot = self.slot(endpoint);
        if !slot.spec.applies_to(path_and_query) {
            return asked;
        }
        let shrunk = match slot.spec.pages_shrink_to {
            Some(room) if !first => asked.min(room),
            _ => asked,
        };
        shrunk.min(slot.spec.page_cap.unwrap_or(u64::MAX))
    }

    /// How many of the tenant's `all` projects (environments) the credential sees under the
    /// fault `visible`: the first ones.
    pub fn visible(&self, endpoint: Endpoint, all: u32) -> u32 {
        self.slot(endpoint).spec.visible.map_or(all, |n| n.min(all))
    }

    pub fn token_validity(&self) -> Option<u64> {
        self.slot(Endpoint::Token).spec.expire_tokens_after_secs
    }

    fn roll(&self, slot: &mut Slot, rate: f64) -> bool {
        if rate <= 0.0 || slot.spec.max.is_some_and(|max| slot.fired >= max) {
            return false;
        }
        let hit = rate >= 1.0 || rand::rng().random::<f64>() < rate;
        if hit {
            slot.fired += 1;
        }
        hit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_form_parses_every_setting() {
        let (eps, spec) = parse_flag("results:429=0.5,retry-after=date:3,5xx=0.1,status=502,403=0.6,match=scan-1,reset=0.2,truncate=0.3,malformed=0.4,untyped=0.45,drift=7,claim-total=1000,ignore-position=true,move-first-to-end=true,shrink-to=3,page-cap=4,visible=8,latency-ms=20,jitter-ms=5,max=9").unwrap();
        assert_eq!(eps, vec![Endpoint::Results]);
        assert_eq!(spec.rate_limit_rate, 0.5);
        assert_eq!(spec.retry_after, RetryAfter::HttpDate(3));
        assert_eq!(spec.server_error_status, Some(502));
        assert_eq!(spec.forbidden_rate, 0.6);
        assert_eq!(spec.only_matching.as_deref(), Some("scan-1"));
        assert_eq!(
            (
                spec.reset_rate,
                spec.truncate_rate,
                spec.malformed_rate,
                spec.untyped_rate
            ),
            (0.2, 0.3, 0.4, 0.45)
        );
        assert_eq!(
            (spec.total_drift, spec.latency_ms, spec.jitter_ms, spec.max),
            (7, 20, 5, Some(9))
        );
        assert_eq!(
            (
                spec.claimed_total,
                spec.position_ignored,
                spec.first_moved_to_end
            ),
            (Some(1000), true, true)
        );
        assert_eq!(
            (spec.pages_shrink_to, spec.page_cap, spec.visible),
            (Some(3), Some(4), Some(8))
        );
        assert_eq!(
            FaultSpec::parse("retype=kics:iac")
                .unwrap()
                .record_type_renamed,
            Some(("kics".into(), "iac".into()))
        );
        assert_eq!(
            parse_flag("all:retry-after=4").unwrap().0.len(),
            Endpoint::ALL.len()
        );
        assert_eq!(
            FaultSpec::parse("retry-after=none").unwrap().retry_after,
            RetryAfter::Absent
        );
    }

    #[test]
    fn bad_flags_name_the_problem() {
        assert!(
            parse_flag("nowhere:429=1")
                .unwrap_err()
                .contains("unknown endpoint 'nowhere'")
        );
        assert!(
            parse_flag("results")
                .unwrap_err()
                .contains("<endpoint|all>")
        );
        assert!(
            FaultSpec::parse("429=2")
                .unwrap_err()
                .contains("between 0 and 1")
        );
        assert!(FaultSpec::parse("status=404").unwrap_err().contains("5xx"));
        assert!(
            FaultSpec::parse("bogus=1")
                .unwrap_err()
                .contains("unknown fault setting 'bogus'")
        );
        assert!(FaultSpec::parse("max").unwrap_err().contains("key=value"));
        for half in ["retype=kics", "retype=:iac", "retype=kics:"] {
            assert!(
                FaultSpec::parse(half).unwrap_err().contains("OLD:NEW"),
                "{half}"
            );
        }
    }

    #[test]
    fn max_bounds_how_often_faults_fire_and_clearing_stops_them() {
        let control = FaultControl::default();
        control.set(
            Endpoint::Projects,
            FaultSpec {
                server_error_rate: 1.0,
                max: Some(2),
                ..Default::default()
            },
        );
        let decisions: Vec<_> = (0..4)
            .map(|_| control.decide(Endpoint::Projects, ""))
            .collect();
        assert_eq!(
            decisions,
            vec![
                Decision::ServerError(503, RetryAfter::Absent),
                Decision::ServerError(503, RetryAfter::Absent),
                Decision::Pass,
                Decision::Pass
            ]
        );
        control.set(
            Endpoint::Projects,
            FaultSpec {
                rate_limit_rate: 1.0,
                ..Default::default()
            },
        );
        assert_eq!(
            control.decide(Endpoint::Projects, ""),
            Decision::RateLimit(RetryAfter::Absent)
        );
        control.clear_all();
        assert_eq!(control.decide(Endpoint::Projects, ""), Decision::Pass);
    }

    #[test]
    fn drift_grows_after_the_first_request() {
        let control = FaultControl::default();
        control.set(
            Endpoint::Results,
            FaultSpec {
                total_drift: 5,
                ..Default::default()
            },
        );
        control.decide(Endpoint::Results, "");
        assert_eq!(control.drift(Endpoint::Results, ""), 0);
        control.decide(Endpoint::Results, "");
        assert_eq!(control.drift(Endpoint::Results, ""), 5);
    }

    #[test]
    fn drift_limited_to_one_scan_leaves_the_others_alone() {
        let control = FaultControl::default();
        control.set(
            Endpoint::Results,
            FaultSpec {
                total_drift: 5,
                only_matching: Some("scan-1".into()),
                ..Default::default()
            },
        );
        for _ in 0..3 {
            control.decide(Endpoint::Results, "/api/results?scan-id=scan-2");
        }
        control.decide(Endpoint::Results, "/api/results?scan-id=scan-1");
        assert_eq!(control.drift(Endpoint::Results, "scan-id=scan-1"), 0);
        control.decide(Endpoint::Results, "/api/results?scan-id=scan-1");
        assert_eq!(control.drift(Endpoint::Results, "scan-id=scan-1"), 5);
        assert_eq!(control.drift(Endpoint::Results, "scan-id=scan-2"), 0);
    }

    #[test]
    fn malformed_records_limited_to_one_scan_leave_the_others_alone() {
        let control = FaultControl::default();
        control.set(
            Endpoint::Results,
            FaultSpec {
                malformed_rate: 1.0,
                only_matching: Some("scan-1".into()),
                ..Default::default()
            },
        );
        assert!(!control.malformed(Endpoint::Results, "/api/results?scan-id=scan-2"));
        assert!(control.malformed(Endpoint::Results, "/api/results?scan-id=scan-1"));
    }
}
