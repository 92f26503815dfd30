//! `GET /api/projects`, `/api/projects/{id}`, `/api/projects/last-scan`, `/api/projects/branches`,
//! `/api/scans`, `/api/scans/{id}`.

use axum::Extension;
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{json_bytes, page_room, position, reported_total, require, write_array};
use crate::app::Shared;
use crate::auth::{Principal, ROLE_PROJECTS, ROLE_SCANS};
use crate::endpoint::Endpoint;
use crate::error::{ApiError, Style};
use crate::faults;
use crate::query::Params;
use crate::tenant::{ScanInfo, Tenant};

/// The page window: `limit=0` means everything (as the projects documentation says).
fn window(params: &Params) -> Result<(usize, Option<usize>), ApiError> {
    let offset = params.u64("offset", 0, Style::Ast)? as usize;
    let limit = params.u64("limit", 20, Style::Ast)? as usize;
    Ok((offset, (limit > 0).then_some(limit)))
}

struct ProjectFilter {
    ids: Vec<String>,
    names: Vec<String>,
    name: Option<String>,
    name_regex: Option<regex::Regex>,
    groups: Vec<String>,
    tag_keys: Vec<String>,
    tag_values: Vec<String>,
    repo_url: Option<String>,
}

impl ProjectFilter {
    fn parse(params: &Params) -> Result<Self, ApiError> {
        let names = params.list("names");
        let name = params
            .one("name")
            .filter(|n| !n.is_empty())
            .map(str::to_string);
        let name_regex = params.one("name-regex").filter(|n| !n.is_empty());
        if !names.is_empty() && (name.is_some() || name_regex.is_some()) {
            return Err(ApiError::bad_request(
                Style::Ast,
                "'names' is mutually exclusive with 'name' and 'name-regex'",
            ));
        }
        let name_regex = name_regex
            .map(|r| {
                regex::Regex::new(r).map_err(|e| {
                    ApiError::bad_request(
                        Style::Ast,
                        format!("'name-regex' is not a valid regex: {e}"),
                    )
                })
            })
            .transpose()?;
        Ok(Self {
            ids: params.list("ids"),
            names,
            name,
            name_regex,
            groups: params.list("groups"),
            tag_keys: params.list("tags-keys"),
            tag_values: params.list("tags-values"),
            repo_url: params
                .one("repo-url")
                .filter(|u| !u.is_empty())
                .map(str::to_string),
        })
    }

    fn is_empty(&self) -> bool {
        self.ids.is_empty()
            && self.names.is_empty()
            && self.name.is_none()
            && self.name_regex.is_none()
            && self.groups.is_empty()
            && self.tag_keys.is_empty()
            && self.tag_values.is_empty()
            && self.repo_url.is_none()
    }

    fn matches(&self, tenant: &Tenant, p: u32) -> bool {
        if !self.ids.is_empty() && !self.ids.contains(&tenant.project_id(p)) {
            return false;
        }
        let name = tenant.project_name(p);
        if !self.names.is_empty() && !self.names.contains(&name) {
            return false;
        }
        if self
            .name
            .as_ref()
            .is_some_and(|n| !name.contains(n.as_str()))
        {
            return false;
        }
        if self.name_regex.as_ref().is_some_and(|r| !r.is_match(&name)) {
            return false;
        }
        if !self.groups.is_empty()
            && !tenant
                .project_group(p)
                .is_some_and(|g| self.groups.contains(&g))
        {
            return false;
        }
        let tags = tenant.project_tags(p);
        if !self.tag_keys.is_empty() && !tags.keys().any(|k| self.tag_keys.contains(k)) {
            return false;
        }
        if !self.tag_values.is_empty() && !tags.values().any(|v| self.tag_values.contains(v)) {
            return false;
        }
        if self
            .repo_url
            .as_ref()
            .is_some_and(|u| *u != tenant.project_repo_url(p))
        {
            return false;
        }
        true
    }
}

/// `GET /api/projects`: item offset, `totalCount` and `filteredTotalCount`.
pub async fn list(
    State(state): State<Shared>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require(principal, ROLE_PROJECTS, Style::Ast)?;
    let params = Params::parse(query.as_deref());
    let (asked_offset, asked) = window(&params)?;
    let filter = ProjectFilter::parse(&params)?;
    let tenant = &state.tenant;
    let visible = state
        .faults
        .visible(Endpoint::Projects, tenant.shape.projects);
    let all = visible as usize;
    let offset = position(&state, Endpoint::Projects, asked_offset as u64, 0) as usize;
    // `limit=0` asks for every project; a fault that caps the page size caps that too.
    let room = page_room(
        &state,
        Endpoint::Projects,
        asked.unwrap_or(all) as u64,
        offset as u64,
    ) as usize;
    let limit = match asked {
        Some(_) if state.projects.short_page_at == Some(asked_offset as u64) => {
            room.saturating_sub(1)
        }
        _ => room,
    };
    let (filtered_total, page): (usize, Vec<u32>) = if filter.is_empty() {
        let end = offset.saturating_add(limit).min(all);
        (all, (offset.min(all)..end).map(|p| p as u32).collect())
    } else {
        let matching: Vec<u32> = (0..visible)
            .filter(|p| filter.matches(tenant, *p))
            .collect();
        let page = matching.iter().skip(offset).take(limit).copied().collect();
        (matching.len(), page)
    };
    // The fault `move-first-to-end`: after the first page, the list as if its first project had
    // been renamed and moved to the end (every project after it one place earlier).
    let moved = offset > 0
        && filter.is_empty()
        && state
            .faults
            .first_moved_to_end(Endpoint::Projects, &faults::request_target());
    // The fault `replace-first`: after the first page, the list as if its first project had been
    // deleted and a new one created at the end.
    let replaced = offset > 0
        && filter.is_empty()
        && state
            .faults
            .first_replaced(Endpoint::Projects, &faults::request_target());
    // The fault `list-main-branch`: every project names another main branch than its scans'.
    let main_branch = state
        .faults
        .main_branch_listed(Endpoint::Projects, &faults::request_target());
    // The fault `last-id`: the tenant's last project listed under a crafted id.
    let last_id = state
        .faults
        .last_project_id(Endpoint::Projects, &faults::request_target());
    let mut body = Vec::with_capacity(page.len() * 800 + 100);
    body.extend_from_slice(b"{\"projects\":");
    write_array(
        &state,
        Endpoint::Projects,
        page.len(),
        page.into_iter().map(|p| {
            let main_branch = main_branch.clone();
            let last_id = last_id.clone().filter(|_| p as usize + 1 == all);
            move |out: &mut Vec<u8>| {
                let mut project = match (moved || replaced, (p as usize) + 1 < all) {
                    (false, _) => tenant.project_json(p),
                    (true, true) => tenant.project_json(p + 1),
                    (true, false) if replaced => {
                        let mut created = tenant.project_json(0);
                        let id = format!("{}-new", created["id"].as_str().unwrap_or(""));
                        created["id"] = Value::from(id);
                        created["name"] = Value::from("created while the list was paged");
                        created
                    }
                    (true, false) => {
                        let mut first = tenant.project_json(0);
                        let renamed = format!("{} (renamed)", first["name"].as_str().unwrap_or(""));
                        first["name"] = Value::from(renamed);
                        first
                    }
                };
                if let Some(name) = main_branch {
                    project["mainBranch"] = Value::from(name);
                }
                if let Some(id) = last_id {
                    project["id"] = Value::from(id);
                }
                serde_json::to_writer(out, &project).expect("Vec write")
            }
        }),
        &mut body,
    );
    body.extend_from_slice(
        format!(
            ",\"totalCount\":{},\"filteredTotalCount\":{}}}",
            reported_total(&state, Endpoint::Projects, all as u64),
            reported_total(&state, Endpoint::Projects, filtered_total as u64)
        )
        .as_bytes(),
    );
    Ok(json_bytes(body))
}

/// `GET /api/projects/{id}`
pub async fn one(
    State(state): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require(principal, ROLE_PROJECTS, Style::Ast)?;
    let p = state
        .tenant
        .project_index(&id)
        .filter(|p| *p < state.faults.visible(Endpoint::Projects, u32::MAX))
        .ok_or_else(|| ApiError::not_found(Style::Ast, "project not found"))?;
    Ok(Json(state.tenant.project_json(p)).into_response())
}

/// `GET /api/projects/last-scan`: an object keyed by project id. `offset`/`limit` (default 20)
/// page over the projects asked about, so a client that sends more ids than `limit` gets only
/// the first `limit` back. The fault `page-cap` caps the window below the `limit` asked.
pub async fn last_scan(
    State(state): State<Shared>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require(principal, ROLE_SCANS, Style::Ast)?;
    let params = Params::parse(query.as_deref());
    let (offset, limit) = window(&params)?;
    let tenant = &state.tenant;
    let ids = params.list("project-ids");
    if !ids.is_empty() && params.one("application-id").is_some() {
        return Err(ApiError::bad_request(
            Style::Ast,
            "'project-ids' is mutually exclusive with 'application-id'",
        ));
    }
    // The fault `ignore-filters`: each project's latest scan, whatever was asked, of every
    // project whatever `project-ids` names.
    let filtered = !state
        .faults
        .filters_ignored(Endpoint::LastScan, &faults::request_target());
    let asked = |name: &str| params.one(name).filter(|_| filtered).map(str::to_string);
    let (status, engine, branch) = (asked("scan-status"), asked("engine"), asked("branch"));
    let use_main = filtered && params.bool("use-main-branch", false, Style::Ast)?;
    // The fault `visible` on `last-scan`: the projects past it answered as without a scan.
    let visible = state
        .faults
        .visible(Endpoint::Projects, tenant.shape.projects);
    let visible = state.faults.visible(Endpoint::LastScan, visible);
    let scope: Vec<u32> = if ids.is_empty() || !filtered {
        (0..visible).collect()
    } else {
        ids.iter()
            .filter_map(|id| tenant.project_index(id))
            .filter(|p| *p < visible)
            .collect()
    };
    let limit = limit
        .map(|asked| page_room(&state, Endpoint::LastScan, asked as u64, offset as u64) as usize);
    let mut answer = Map::new();
    for p in scope
        .into_iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
    {
        let main = tenant.project_main_branch(p);
        let latest = tenant.scans(p).into_iter().rev().find(|s| {
            status
                .as_ref()
                .is_none_or(|st| s.status.eq_ignore_ascii_case(st))
                && engine
                    .as_ref()
                    .is_none_or(|e| s.engines.contains(&e.as_str()))
                && branch.as_ref().is_none_or(|b| s.branch == *b)
                && (!use_main || main.is_empty() || s.branch == main)
        });
        if let Some(scan) = latest {
            answer.insert(tenant.project_id(p), tenant.subset_scan_json(&scan));
        }
    }
    // The fault `malformed`: the middle project's scan breaks the schema (its id gone).
    let middle = answer.keys().nth(answer.len() / 2).cloned();
    if let Some(middle) = middle
        && state
            .faults
            .malformed(Endpoint::LastScan, &faults::request_target())
        && let Some(scan) = answer.get_mut(&middle)
    {
        super::corrupt(scan);
    }
    Ok(Json(Value::Object(answer)).into_response())
}

/// `GET /api/projects/branches?project-id=&branch-name=`: the names of the branches the project
/// has scans on, newest scan first, as a bare JSON array (item offset, 20 by default), or `null`
/// for a project with no scans. The faults `page-cap`, `shrink-to` and `ignore-position` apply.
pub async fn branches(
    State(state): State<Shared>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require(principal, ROLE_PROJECTS, Style::Ast)?;
    let params = Params::parse(query.as_deref());
    let (offset, limit) = window(&params)?;
    let tenant = &state.tenant;
    let Some(id) = params.one("project-id") else {
        return Err(ApiError::bad_request(
            Style::Ast,
            "'project-id' is required",
        ));
    };
    let visible = state
        .faults
        .visible(Endpoint::Projects, tenant.shape.projects);
    let Some(p) = tenant.project_index(id).filter(|p| *p < visible) else {
        return Err(ApiError::not_found(Style::Ast, "project not found"));
    };
    let scans = tenant.scans(p);
    if scans.is_empty() {
        return Ok(Json(Value::Null).into_response());
    }
    let name = params.one("branch-name").unwrap_or_default();
    let mut names: Vec<String> = Vec::new();
    for scan in scans.iter().rev() {
        if scan.branch.contains(name) && !names.contains(&scan.branch) {
            names.push(scan.branch.clone());
        }
    }
    // A server that caps the page size (the fault `page-cap`) sends fewer than asked; one that
    // ignores `offset` (`ignore-position`) answers every page as the first.
    let room = page_room(
        &state,
        Endpoint::Branches,
        limit.unwrap_or(usize::MAX) as u64,
        offset as u64,
    );
    let offset = position(&state, Endpoint::Branches, offset as u64, 0) as usize;
    let page: Vec<String> = names
        .into_iter()
        .skip(offset)
        .take(usize::try_from(room).unwrap_or(usize::MAX))
        .collect();
    Ok(Json(page).into_response())
}

/// `GET /api/scans`: item offset, newest first unless `sort=+created_at`.
pub async fn list_scans(
    State(state): State<Shared>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    require(principal, ROLE_SCANS, Style::Ast)?;
    let params = Params::parse(query.as_deref());
    let (offset, limit) = window(&params)?;
    let tenant = &state.tenant;
    let mut project_ids = params.list("project-ids");
    if let Some(one) = params.one("project-id") {
        if !project_ids.is_empty() {
            return Err(ApiError::bad_request(
                Style::Ast,
                "'project-id' is mutually exclusive with 'project-ids'",
            ));
        }
        project_ids.push(one.to_string());
    }
    let statuses: Vec<String> = params
        .list("statuses")
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let mut branches = params.list("branches");
    branches.extend(params.list("branch"));
    let scan_ids = params.list("scan-ids");
    let ascending = match params.list("sort").first().map(String::as_str) {
        None | Some("-created_at") => false,
        Some("+created_at") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                Style::Ast,
                format!("sort '{other}' is not supported here; use -created_at or +created_at"),
            ));
        }
    };
    let visible = state
        .faults
        .visible(Endpoint::Projects, tenant.shape.projects);
    let projects: Vec<u32> = if project_ids.is_empty() {
        (0..visible).collect()
    } else {
        project_ids
            .iter()
            .filter_map(|id| tenant.project_index(id))
            .filter(|p| *p < visible)
            .collect()
    };
    let mut matching: Vec<ScanInfo> = projects
        .into_iter()
        .flat_map(|p| tenant.scans(p))
        .filter(|s| statuses.is_empty() || statuses.contains(&s.status.to_ascii_lowercase()))
        .filter(|s| branches.is_empty() || branches.contains(&s.branch))
        .filter(|s| scan_ids.is_empty() || scan_ids.contains(&s.id))
        .collect();
    matching.sort_by_key(|s| (s.created_us, s.project));
    if !ascending {
        matching.reverse();
    }
    let total_scans = u64::from(tenant.shape.projects) * u64::from(tenant.shape.scans_per_project);
    let page: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(limit.unwrap_or(usize::MAX))
        .map(|s| tenant.scan_json(s))
        .collect();
    Ok(Json(json!({
        "totalCount": reported_total(&state, Endpoint::Scans, total_scans),
        "filteredTotalCount": reported_total(&state, Endpoint::Scans, matching.len() as u64),
        "scans": page,
    }))
    .into_response())
}

/// `GET /api/scans/{id}`
pub async fn one_scan(
    State(state): State<Shared>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require(principal, ROLE_SCANS, Style::Ast)?;
    // The fault `ignore-filters`: the tenant's first scan's record, whatever id the path names.
    let ignored = state
        .faults
        .filters_ignored(Endpoint::Scans, &faults::request_target());
    let scan = match ignored {
        true => state.tenant.scans(0).into_iter().next(),
        false => state.tenant.scan_by_id(&id),
    };
    let scan = scan.ok_or_else(|| ApiError::not_found(Style::Ast, "scan not found"))?;
    Ok(Json(state.tenant.scan_json(&scan)).into_response())
}
