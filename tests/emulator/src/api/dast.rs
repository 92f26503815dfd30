//! DAST: `GET /api/dast/scans/environments`, `/api/dast/scans/scans?environmentId=`,
//! `/api/dast/mfe-results/results/{scanId}`.
//!
//! Environments and scans page with a `from`/`to` item window (0-based, `to` exclusive, default
//! 10 items); results with a 1-based `page` and `per_page` of at most 100.

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde_json::Value;

use super::{
    json_bytes, page_room, position, refuse_past_the_end, reported_total, require, write_array,
};
use crate::app::Shared;
use crate::auth::{Principal, ROLE_DAST};
use crate::endpoint::Endpoint;
use crate::error::{ApiError, Style};
use crate::faults;
use crate::query::Params;

pub const MAX_PER_PAGE: u64 = 100;
const DEFAULT_WINDOW: u64 = 10;

fn window(params: &Params) -> Result<(usize, usize), ApiError> {
    let from = params.u64("from", 0, Style::Ast)?;
    let to = params.u64("to", from + DEFAULT_WINDOW, Style::Ast)?;
    if to < from {
        return Err(ApiError::bad_request(
            Style::Ast,
            format!("'to' ({to}) must not be below 'from' ({from})"),
        ));
    }
    Ok((from as usize, (to - from) as usize))
}

/// `sort` entries must be `column:asc|desc`; the live API rejects bare column names with 400.
fn sort(
    params: &Params,
    columns: &[&str],
    default: (&str, bool),
) -> Result<(String, bool), ApiError> {
    let Some(entry) = params.list("sort").into_iter().next() else {
        return Ok((default.0.to_string(), default.1));
    };
    let (column, direction) = entry.split_once(':').ok_or_else(|| {
        ApiError::bad_request(
            Style::Ast,
            format!("sort '{entry}' must be of the form column:asc or column:desc"),
        )
    })?;
    if !columns.contains(&column) {
        return Err(ApiError::bad_request(
            Style::Ast,
            format!(
                "sort column '{column}' is not one of {}",
                columns.join(", ")
            ),
        ));
    }
    match direction {
        "asc" => Ok((column.to_string(), false)),
        "desc" => Ok((column.to_string(), true)),
        _ => Err(ApiError::bad_request(
            Style::Ast,
            format!("sort direction '{direction}' must be asc or desc"),
        )),
    }
}

/// `GET /api/dast/scans/environments`
pub async fn environments(
    State(state): State<Shared>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require(principal, ROLE_DAST, Style::Ast)?;
    let params = Params::parse(query.as_deref());
    let (from, count) = window(&params)?;
    let from = position(&state, Endpoint::DastEnvironments, from as u64, 0) as usize;
    let count = page_room(
        &state,
        Endpoint::DastEnvironments,
        count as u64,
        from as u64,
    ) as usize;
    let (column, descending) = sort(
        &params,
        &[
            "domain",
            "url",
            "scantype",
            "lastscantime",
            "lastscanstatus",
            "lastriskrating",
            "created",
            "authsuccess",
        ],
        ("created", false),
    )?;
    let tenant = &state.tenant;
    let search = params.one("search").map(str::to_ascii_lowercase);
    let scan_type = params
        .any_of(&["match[scantype]", "filter[scantype]", "match.scantype"])
        .map(str::to_ascii_uppercase);
    let visible =
        (state.faults).visible(Endpoint::DastEnvironments, tenant.shape.dast_environments);
    let mut matching: Vec<u32> = (0..visible)
        .filter(|e| {
            search.as_ref().is_none_or(|s| {
                tenant.environment_domain(*e).contains(s.as_str())
                    || tenant.environment_url(*e).contains(s.as_str())
            })
        })
        .filter(|e| {
            scan_type
                .as_ref()
                .is_none_or(|t| tenant.environment_scan_type(*e) == t)
        })
        .collect();
    if column == "domain" || column == "url" {
        matching.sort_by_key(|e| tenant.environment_domain(*e));
    }
    if descending {
        matching.reverse();
    }
    let total = matching.len() as u64;
    // The fault `replace-first`: after the first page, the list as if its first environment had
    // been deleted and a new one (`None` here) created at the end.
    let replaced = from > 0
        && search.is_none()
        && scan_type.is_none()
        && state
            .faults
            .first_replaced(Endpoint::DastEnvironments, &crate::faults::request_target());
    let mut listed: Vec<Option<u32>> = matching.iter().copied().map(Some).collect();
    if replaced && !listed.is_empty() {
        listed.remove(0);
        listed.push(None);
    }
    let first = matching.first().copied().unwrap_or(0);
    let page: Vec<Option<u32>> = listed.into_iter().skip(from).take(count).collect();
    let login_failed = state
        .faults
        .login_failed(Endpoint::DastEnvironments, &crate::faults::request_target());
    let mut body = Vec::with_capacity(page.len() * 1_200 + 128);
    body.extend_from_slice(b"{\"environments\":");
    write_array(
        &state,
        Endpoint::DastEnvironments,
        page.len(),
        page.into_iter().map(|e| {
            move |out: &mut Vec<u8>| {
                let mut environment = match e {
                    Some(e) => tenant.environment_json(e),
                    None => {
                        let mut created = tenant.environment_json(first);
                        let id = format!("{}-new", created["environmentId"].as_str().unwrap_or(""));
                        created["environmentId"] = Value::from(id);
                        created["domain"] = Value::from("created-while-the-list-was-paged.example");
                        created
                    }
                };
                if login_failed && environment["hasAuth"] == Value::Bool(true) {
                    environment["authSuccess"] = Value::Bool(false);
                    environment["lastAuthSuccess"] = Value::Bool(false);
                }
                serde_json::to_writer(out, &environment).expect("Vec write")
            }
        }),
        &mut body,
    );
    body.extend_from_slice(
        format!(
            ",\"totalItems\":{},\"misconfiguredCount\":0,\"zrokHost\":\"\"}}",
            reported_total(&state, Endpoint::DastEnvironments, total)
        )
        .as_bytes(),
    );
    Ok(json_bytes(body))
}

/// `GET /api/dast/scans/scans?environmentId=...`: newest first by default.
pub async fn scans(
    State(state): State<Shared>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require(principal, ROLE_DAST, Style::Ast)?;
    let params = Params::parse(query.as_deref());
    let tenant = &state.tenant;
    let env_id = params
        .one("environmentId")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(Style::Ast, "query parameter 'environmentId' is required")
        })?;
    // The fault `ignore-filters`: every environment's scans, whatever `environmentId` asks.
    let environments: Vec<u32> = if state
        .faults
        .filters_ignored(Endpoint::DastScans, &faults::request_target())
    {
        (0..tenant.shape.dast_environments).collect()
    } else if let Some(e) = tenant.environment_index(env_id).filter(|e| {
        *e < (state.faults).visible(Endpoint::DastEnvironments, tenant.shape.dast_environments)
    }) {
        vec![e]
    } else {
        // The environment the fault `replace-first` lists as created while the list was paged
        // has no scan yet.
        let created = env_id
            .strip_suffix("-new")
            .is_some_and(|first| tenant.environment_index(first).is_some());
        if created {
            return Ok(json_bytes(br#"{"scans":[],"totalScans":0}"#.to_vec()));
        }
        return Err(ApiError::not_found(
            Style::Ast,
            format!("environment {env_id} not found"),
        ));
    };
    let (from, count) = window(&params)?;
    let from = position(&state, Endpoint::DastScans, from as u64, 0) as usize;
    let count = page_room(&state, Endpoint::DastScans, count as u64, from as u64) as usize;
    let (_, descending) = sort(
        &params,
        &[
            "initiator",
            "scantype",
            "created",
            "starttime",
            "updatetime",
            "scanduration",
            "laststatus",
            "riskrating",
        ],
        ("created", true),
    )?;
    let statuses: Vec<String> = params
        .list("lastStatus")
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let mut matching: Vec<_> = environments
        .into_iter()
        .flat_map(|e| tenant.dast_scans(e))
        .filter(|s| statuses.is_empty() || statuses.contains(&s.status.to_ascii_lowercase()))
        .collect();
    matching.sort_by_key(|s| s.created_us);
    // The fault `ignore-sort`: oldest first, whatever `sort` asks.
    let sort_ignored = state
        .faults
        .sort_ignored(Endpoint::DastScans, &faults::request_target());
    if descending && !sort_ignored {
        matching.reverse();
    }
    let total = matching.len() as u64;
    let page: Vec<_> = matching.iter().skip(from).take(count).collect();
    let mut body = Vec::with_capacity(page.len() * 600 + 64);
    body.extend_from_slice(b"{\"scans\":");
    // Through `write_array`, so that `malformed` breaks the page's middle scan.
    write_array(
        &state,
        Endpoint::DastScans,
        page.len(),
        page.into_iter().map(|s| {
            let scan = tenant.dast_scan_json(s);
            move |out: &mut Vec<u8>| serde_json::to_writer(out, &scan).expect("Vec write")
        }),
        &mut body,
    );
    body.extend_from_slice(
        format!(
            ",\"totalScans\":{}}}",
            reported_total(&state, Endpoint::DastScans, total)
        )
        .as_bytes(),
    );
    Ok(json_bytes(body))
}

/// `GET /api/dast/mfe-results/results/{scanId}`
pub async fn results(
    State(state): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path(scan_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require(principal, ROLE_DAST, Style::Ast)?;
    let params = Params::parse(query.as_deref());
    let tenant = &state.tenant;
    // The fault `ignore-filters`: the tenant's first DAST scan's results, whatever scan the path
    // names.
    let ignored = state
        .faults
        .filters_ignored(Endpoint::DastResults, &faults::request_target());
    let scan = match ignored {
        true => tenant.dast_scans(0).into_iter().next(),
        false => tenant.dast_scan_by_id(&scan_id),
    };
    let scan =
        scan.ok_or_else(|| ApiError::not_found(Style::Ast, format!("scan {scan_id} not found")))?;
    let page = params.u64("page", 1, Style::Ast)?;
    let per_page = params.u64("per_page", 10, Style::Ast)?;
    if page == 0 {
        return Err(ApiError::bad_request(Style::Ast, "'page' starts at 1"));
    }
    let page = position(&state, Endpoint::DastResults, page, 1);
    if per_page == 0 || per_page > MAX_PER_PAGE {
        return Err(ApiError::bad_request(
            Style::Ast,
            format!("'per_page' must be between 1 and {MAX_PER_PAGE}, got {per_page}"),
        ));
    }
    let total = tenant.dast_scan_result_count(&scan);
    // The fault `login-failed`: what a scan of an environment with a login reached without it.
    let total = match tenant.environment_has_login(scan.environment)
        && state
            .faults
            .login_failed(Endpoint::DastResults, &faults::request_target())
    {
        true => total / 2,
        false => total,
    };
    // A server that caps the page size (the fault `page-cap`) pages by what it sends.
    let per_page = page_room(&state, Endpoint::DastResults, per_page, 0);
    let start = (page - 1).saturating_mul(per_page);
    refuse_past_the_end(&state, Endpoint::DastResults, start, total, Style::Ast)?;
    let start = start.min(total);
    let end = start.saturating_add(per_page).min(total);
    let mut body = Vec::with_capacity(((end - start) as usize) * 700 + 64);
    body.extend_from_slice(b"{\"results\":");
    let scan_ref = &scan;
    write_array(
        &state,
        Endpoint::DastResults,
        (end - start) as usize,
        (start..end).map(|i| move |out: &mut Vec<u8>| tenant.write_dast_result(scan_ref, i, out)),
        &mut body,
    );
    // The page count follows the total reported, as a server's own would.
    let reported = reported_total(&state, Endpoint::DastResults, total);
    body.extend_from_slice(
        format!(
            ",\"total\":{reported},\"pages_number\":{}}}",
            reported.max(0).unsigned_abs().div_ceil(per_page.max(1))
        )
        .as_bytes(),
    );
    Ok(json_bytes(body))
}
