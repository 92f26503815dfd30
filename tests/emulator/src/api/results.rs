//! `GET /api/results` (every engine's results, offset as page index or item count) and
//! `GET /api/sast-results` (SAST only, flat upper-case-ID shape, item offset).

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::Value;

use super::{
    json_bytes, page_room, position, refuse_past_the_end, reported_total, require, write_array,
};
use crate::app::{OffsetMode, Shared};
use crate::auth::{Principal, ROLE_RESULTS};
use crate::endpoint::Endpoint;
use crate::error::{ApiError, Style};
use crate::faults;
use crate::query::Params;
use crate::tenant::{ResultTraits, ResultType, SastView, ScanInfo};

/// The largest `limit` the results endpoints accept (what Checkmarx's own CLI sends).
pub const MAX_LIMIT: u64 = 10_000;

struct ResultFilter {
    severity: Vec<String>,
    state: Vec<String>,
    status: Vec<String>,
}

impl ResultFilter {
    fn parse(params: &Params) -> Self {
        let upper = |key: &str| {
            params
                .list(key)
                .into_iter()
                .map(|v| v.to_ascii_uppercase())
                .collect()
        };
        Self {
            severity: upper("severity"),
            state: upper("state"),
            status: upper("status"),
        }
    }

    fn is_empty(&self) -> bool {
        self.severity.is_empty() && self.state.is_empty() && self.status.is_empty()
    }

    fn matches(&self, t: &ResultTraits) -> bool {
        let ok = |list: &[String], v: &str| {
            list.is_empty() || list.iter().any(|x| x.eq_ignore_ascii_case(v))
        };
        ok(&self.severity, t.severity) && ok(&self.state, t.state) && ok(&self.status, t.status)
    }
}

/// The scan `scan-id` names; under the fault `ignore-filters`, the tenant's first scan whatever
/// it names (a server that answers about another scan than asked).
fn scan_for(state: &Shared, endpoint: Endpoint, params: &Params) -> Result<ScanInfo, ApiError> {
    let tenant = &state.tenant;
    let id = params
        .one("scan-id")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(Style::Results, "query parameter 'scan-id' is required")
        })?;
    let ignored = state
        .faults
        .filters_ignored(endpoint, &faults::request_target());
    let scan = match ignored {
        true => tenant.scans(0).into_iter().next(),
        false => tenant.scan_by_id(id),
    };
    scan.ok_or_else(|| ApiError::not_found(Style::Results, format!("scan {id} not found")))
}

fn limit(params: &Params) -> Result<u64, ApiError> {
    let limit = params.u64("limit", 20, Style::Results)?;
    if limit > MAX_LIMIT {
        return Err(ApiError::bad_request(
            Style::Results,
            format!("'limit' must be at most {MAX_LIMIT}, got {limit}"),
        ));
    }
    Ok(limit)
}

/// Positions (in the scan) of the page's results, and the total matching the filter.
fn select(
    n: u64,
    skip: u64,
    take: u64,
    matching: impl Fn(u64) -> bool,
    unfiltered: bool,
) -> (Vec<u64>, u64) {
    if unfiltered {
        let end = skip.saturating_add(take).min(n);
        return ((skip.min(n)..end).collect(), n);
    }
    let mut total = 0;
    let mut page = Vec::new();
    for i in 0..n {
        if matching(i) {
            if total >= skip && (page.len() as u64) < take {
                page.push(i);
            }
            total += 1;
        }
    }
    (page, total)
}

/// `GET /api/results`
pub async fn all_scanners(
    State(state): State<Shared>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require(principal, ROLE_RESULTS, Style::Results)?;
    let params = Params::parse(query.as_deref());
    let tenant = &state.tenant;
    let scan = scan_for(&state, Endpoint::Results, &params)?;
    let asked = limit(&params)?;
    let offset = params.u64("offset", 0, Style::Results)?;
    let offset = position(&state, Endpoint::Results, offset, 0);
    // A server that caps the page size (the fault `page-cap`) pages by what it sends.
    let limit = page_room(&state, Endpoint::Results, asked, offset);
    let skip = match state.results_offset {
        OffsetMode::Page => offset.saturating_mul(limit),
        OffsetMode::Item => offset,
    };
    let filter = ResultFilter::parse(&params);
    let n = tenant.scan_result_count(&scan);
    let every_engine = tenant.scan_ran_every_engine(&scan);
    let (page, total) = select(
        n,
        skip,
        limit,
        |i| {
            (every_engine || tenant.scan_reports(&scan, i))
                && filter.matches(&tenant.result_traits(&scan, i))
        },
        filter.is_empty() && every_engine,
    );
    refuse_past_the_end(&state, Endpoint::Results, skip, total, Style::Results)?;
    // The fault `move-first-to-end`: after the first page, the list as if its first record had
    // been edited and moved to the end (every record after it one place earlier).
    let moved = skip > 0
        && filter.is_empty()
        && every_engine
        && state
            .faults
            .first_moved_to_end(Endpoint::Results, &faults::request_target());
    let dates = tenant.scan_dates(&scan);
    let mut body = Vec::with_capacity(page.len() * 1_600 + 128);
    body.extend_from_slice(b"{\"results\":");
    let (scan_ref, dates_ref) = (&scan, &dates);
    write_array(
        &state,
        Endpoint::Results,
        page.len(),
        page.into_iter().map(|i| {
            move |out: &mut Vec<u8>| match (moved, i + 1 < n) {
                (false, _) => tenant.write_result(scan_ref, i, dates_ref, out),
                (true, true) => tenant.write_result(scan_ref, i + 1, dates_ref, out),
                (true, false) => {
                    let mut first = Vec::new();
                    tenant.write_result(scan_ref, 0, dates_ref, &mut first);
                    let mut record: Value =
                        serde_json::from_slice(&first).expect("own output parses");
                    let edited = if record["state"] == "CONFIRMED" {
                        "TO_VERIFY"
                    } else {
                        "CONFIRMED"
                    };
                    record["state"] = Value::from(edited);
                    serde_json::to_writer(out, &record).expect("writing JSON to a Vec cannot fail");
                }
            }
        }),
        &mut body,
    );
    body.extend_from_slice(
        format!(
            ",\"totalCount\":{},\"scanID\":\"{}\"}}",
            reported_total(&state, Endpoint::Results, total),
            scan.id
        )
        .as_bytes(),
    );
    Ok(json_bytes(body))
}

/// `GET /api/sast-results`
pub async fn sast_only(
    State(state): State<Shared>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require(principal, ROLE_RESULTS, Style::Results)?;
    let params = Params::parse(query.as_deref());
    let tenant = &state.tenant;
    let scan = scan_for(&state, Endpoint::SastResults, &params)?;
    let asked = limit(&params)?;
    let skip = params.u64("offset", 0, Style::Results)?;
    let skip = position(&state, Endpoint::SastResults, skip, 0);
    let limit = page_room(&state, Endpoint::SastResults, asked, skip);
    let view = SastView {
        include_nodes: params.bool("include-nodes", true, Style::Results)?,
        apply_predicates: params.bool("apply-predicates", true, Style::Results)?,
        columns: params.list("visible-columns"),
    };
    let filter = ResultFilter::parse(&params);
    let sast_total = tenant
        .scan_type_counts(&scan)
        .get(&ResultType::Sast)
        .copied()
        .unwrap_or(0);
    // Positions among the scan's SAST results, mapped to positions in the scan.
    let (ranks, total) = select(
        sast_total,
        skip,
        limit,
        |r| {
            filter.matches(
                &tenant.result_traits(&scan, tenant.nth_of_type(&scan, ResultType::Sast, r)),
            )
        },
        filter.is_empty(),
    );
    refuse_past_the_end(&state, Endpoint::SastResults, skip, total, Style::Results)?;
    let dates = tenant.scan_dates(&scan);
    let mut body = Vec::with_capacity(ranks.len() * 1_600 + 64);
    body.extend_from_slice(b"{\"results\":");
    let (scan_ref, dates_ref, view_ref) = (&scan, &dates, &view);
    write_array(
        &state,
        Endpoint::SastResults,
        ranks.len(),
        ranks.into_iter().map(|r| {
            move |out: &mut Vec<u8>| {
                let i = tenant.nth_of_type(scan_ref, ResultType::Sast, r);
                tenant.write_sast_flat(scan_ref, i, dates_ref, view_ref, out)
            }
        }),
        &mut body,
    );
    body.extend_from_slice(
        format!(
            ",\"totalCount\":{}}}",
            reported_total(&state, Endpoint::SastResults, total)
        )
        .as_bytes(),
    );
    Ok(json_bytes(body))
}
