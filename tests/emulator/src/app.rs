//! Shared state and the two routers: the IAM host (`/auth/...`) and the API host (`/api/...` plus
//! the emulator's own `/_emulator/...` control endpoints).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::json;

use crate::api;
use crate::auth::{self, Auth, Principal, Refusal};
use crate::endpoint::Endpoint;
use crate::expected::expected_totals;
use crate::faults::{self, Decision, FaultControl, FaultSpec, RetryAfter};
use crate::stats::Stats;
use crate::tenant::Tenant;

/// How `/api/results` reads its `offset` parameter (the sources disagree; see the API reference).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum OffsetMode {
    /// `offset` is a 0-based page index: skip `offset * limit` (what Checkmarx's own clients assume).
    #[default]
    Page,
    /// `offset` is a number of items to skip (what the swagger text says).
    Item,
}

pub struct AppState {
    pub tenant: Tenant,
    pub auth: Auth,
    pub faults: FaultControl,
    pub stats: Stats,
    pub results_offset: OffsetMode,
    pub projects: ProjectsQuirks,
}

/// How the pages of `/api/projects` depart from a server that pages as documented (not at all, by
/// default). A server that ignores the offset, caps the page size or claims a total is a fault
/// (`FaultSpec`).
#[derive(Clone, Debug, Default)]
pub struct ProjectsQuirks {
    /// The page asked for at this offset ends one project short of its limit (a server that
    /// answered fewer than asked in the middle of the listing).
    pub short_page_at: Option<u64>,
}

pub type Shared = Arc<AppState>;

/// Tells the server loop to drop the connection without answering.
#[derive(Clone, Copy, Debug)]
pub struct DropConnection;

fn instrumented(
    state: &Shared,
    endpoint: Endpoint,
    route: MethodRouter<Shared>,
) -> MethodRouter<Shared> {
    route.layer(middleware::from_fn_with_state(
        (state.clone(), endpoint),
        instrument,
    ))
}

pub fn iam_router(state: Shared) -> Router {
    Router::new()
        .route(
            "/auth/realms/{tenant}/protocol/openid-connect/token",
            instrumented(&state, Endpoint::Token, post(auth::token)),
        )
        .fallback(not_found)
        .with_state(state)
}

pub fn api_router(state: Shared) -> Router {
    let s = &state;
    let authed = |endpoint: Endpoint, route: MethodRouter<Shared>| {
        instrumented(
            s,
            endpoint,
            route.layer(middleware::from_fn_with_state(s.clone(), require_token)),
        )
    };
    let mut router = Router::new();
    // Real clients call both `/api/projects` and `/api/projects/` (the spec's own examples).
    for (path, endpoint, handler) in [
        (
            "/api/projects",
            Endpoint::Projects,
            get(api::projects::list),
        ),
        (
            "/api/projects/last-scan",
            Endpoint::LastScan,
            get(api::projects::last_scan),
        ),
        (
            "/api/projects/branches",
            Endpoint::Branches,
            get(api::projects::branches),
        ),
        (
            "/api/scans",
            Endpoint::Scans,
            get(api::projects::list_scans),
        ),
        (
            "/api/results",
            Endpoint::Results,
            get(api::results::all_scanners),
        ),
        (
            "/api/sast-results",
            Endpoint::SastResults,
            get(api::results::sast_only),
        ),
        (
            "/api/dast/scans/environments",
            Endpoint::DastEnvironments,
            get(api::dast::environments),
        ),
        (
            "/api/dast/scans/scans",
            Endpoint::DastScans,
            get(api::dast::scans),
        ),
    ] {
        router = router
            .route(path, authed(endpoint, handler.clone()))
            .route(&format!("{path}/"), authed(endpoint, handler));
    }
    router
        .route(
            "/api/projects/{id}",
            authed(Endpoint::Projects, get(api::projects::one)),
        )
        .route(
            "/api/scans/{id}",
            authed(Endpoint::Scans, get(api::projects::one_scan)),
        )
        .route(
            "/api/dast/mfe-results/results/{scan_id}",
            authed(Endpoint::DastResults, get(api::dast::results)),
        )
        .route(
            "/results/{scan_id}/{project_id}/sast",
            get(api::viewer::sast_result),
        )
        .route("/scans", get(api::viewer::scan))
        .route("/_emulator/stats", get(stats))
        .route("/_emulator/stats/reset", post(reset_stats))
        .route("/_emulator/faults", get(list_faults).delete(clear_faults))
        .route("/_emulator/faults/{endpoint}", put(set_fault))
        .route("/_emulator/revoke-tokens", post(revoke_tokens))
        .route("/_emulator/health", get(|| async { "ok" }))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"message": "Not Found", "type": "ERROR", "code": 404})),
    )
        .into_response()
}

/// Counts the request, adds latency, and answers 429 / 5xx / a dropped connection / a cut-off
/// body when the endpoint's faults say so.
async fn instrument(
    State((state, endpoint)): State<(Shared, Endpoint)>,
    request: Request,
    next: Next,
) -> Response {
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(String::new, |p| p.as_str().to_string());
    let _in_flight = state.stats.begin(endpoint, &target);
    let delay = state.faults.latency(endpoint, &target);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match state.faults.decide(endpoint, &target) {
        Decision::Pass => {}
        Decision::RateLimit(retry_after) => return rate_limited(retry_after),
        Decision::ServerError(status, retry_after) => return server_error(status, retry_after),
        Decision::Forbidden => return forbidden(),
        Decision::Reset => {
            let mut response = Response::new(Body::empty());
            response.extensions_mut().insert(DropConnection);
            return response;
        }
    }
    let response = faults::for_request(target.clone(), next.run(request)).await;
    // Only a body worth reading is cut: a refusal stays a clean refusal.
    if response.status().is_success() && state.faults.truncate(endpoint, &target) {
        truncated(response).await
    } else {
        response
    }
}

fn rate_limited(retry_after: RetryAfter) -> Response {
    let response = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({"code": 429, "message": "Too Many Requests", "data": null})),
    )
        .into_response();
    with_retry_after(response, retry_after)
}

fn with_retry_after(mut response: Response, retry_after: RetryAfter) -> Response {
    let value = match retry_after {
        RetryAfter::Absent => None,
        RetryAfter::Seconds(secs) => Some(secs.to_string()),
        RetryAfter::HttpDate(secs) => Some(httpdate::fmt_http_date(
            std::time::SystemTime::now() + std::time::Duration::from_secs(secs),
        )),
    };
    if let Some(value) = value.and_then(|v| HeaderValue::from_str(&v).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// 5xx answers come from the gateway in front of the API, as HTML, not from the API as JSON.
fn server_error(status: u16, retry_after: RetryAfter) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let reason = status.canonical_reason().unwrap_or("Server Error");
    let body = format!(
        "<html><head><title>{code} {reason}</title></head><body><center><h1>{code} {reason}</h1></center></body></html>",
        code = status.as_u16()
    );
    let response = (status, [(header::CONTENT_TYPE, "text/html")], body).into_response();
    with_retry_after(response, retry_after)
}

/// The API's own refusal of a resource the caller's roles do not cover.
fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        Json(json!({"code": 403, "message": "Forbidden", "data": null})),
    )
        .into_response()
}

/// Sends the headers (with the full Content-Length) and half the body, then breaks the connection.
async fn truncated(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(collected) = body.collect().await else {
        return Response::from_parts(parts, Body::empty());
    };
    let bytes = collected.to_bytes();
    let half = bytes.slice(..bytes.len() / 2);
    // The pause lets hyper flush the headers and the first half before the body fails.
    let failure = futures_util::stream::once(async {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        Err::<Bytes, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "truncated by fault",
        ))
    });
    let chunks = futures_util::StreamExt::chain(futures_util::stream::iter([Ok(half)]), failure);
    let mut response = Response::from_parts(parts, Body::from_stream(chunks));
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    response
}

async fn require_token(State(state): State<Shared>, mut request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.auth.authenticate(header) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(refusal) => {
            let message = match refusal {
                Refusal::Missing => "Unauthorized, Access token is missing",
                Refusal::Invalid => "Unauthorized, Access token is invalid",
                Refusal::Expired => "Unauthorized, Access token has expired",
                Refusal::Revoked => "Unauthorized, Access token was revoked",
            };
            let mut response = (
                StatusCode::UNAUTHORIZED,
                Json(json!({"code": 401, "message": message})),
            )
                .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// The principal `require_token` put on the request.
pub fn has_role(principal: Principal, role: &str) -> bool {
    principal.roles().contains(&role)
}

async fn stats(State(state): State<Shared>) -> Response {
    let traffic = state.stats.snapshot(&state.faults);
    let expected = expected_totals(&state.tenant);
    Json(json!({"traffic": traffic, "expected": expected})).into_response()
}

async fn reset_stats(State(state): State<Shared>) -> StatusCode {
    state.stats.reset();
    StatusCode::NO_CONTENT
}

async fn list_faults(State(state): State<Shared>) -> Response {
    let map: serde_json::Map<String, serde_json::Value> = Endpoint::ALL
        .iter()
        .map(|e| (e.name().to_string(), json!(state.faults.get(*e))))
        .collect();
    Json(map).into_response()
}

async fn clear_faults(State(state): State<Shared>) -> StatusCode {
    state.faults.clear_all();
    StatusCode::NO_CONTENT
}

async fn set_fault(State(state): State<Shared>, Path(name): Path<String>, body: Bytes) -> Response {
    let spec: FaultSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"message": format!("fault spec: {e}")})),
            )
                .into_response();
        }
    };
    let targets = if name == "all" {
        Endpoint::ALL.to_vec()
    } else {
        Endpoint::parse(&name).into_iter().collect()
    };
    if targets.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"message": format!("unknown endpoint '{name}'")})),
        )
            .into_response();
    }
    for endpoint in targets {
        state.faults.set(endpoint, spec.clone());
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn revoke_tokens(State(state): State<Shared>) -> StatusCode {
    state.auth.revoke_all();
    StatusCode::NO_CONTENT
}
