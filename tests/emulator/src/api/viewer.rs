//! The web app's pages that findings link to, as far as a link checker sees them: the SAST result
//! viewer (`/results/{scanId}/{projectId}/sast?result-id=…`) and a scan's page (`/scans?id=…`).
//! Each answers 200 with a small HTML page when what the link names exists, 404 otherwise. No
//! token: the real web app signs its users in with a browser session.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::app::Shared;
use crate::query::Params;

fn page(found: bool, what: String) -> Response {
    // What the link names is echoed: escaped, as any page that shows its own URL must.
    let what = what
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;");
    if found {
        Html(format!(
            "<!doctype html><title>Checkmarx One</title><p>{what}</p>"
        ))
        .into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Html(format!("<!doctype html><p>no {what}</p>")),
        )
            .into_response()
    }
}

/// `GET /results/{scan_id}/{project_id}/sast?result-id=…`
pub async fn sast_result(
    State(state): State<Shared>,
    Path((scan_id, project_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.as_deref());
    let hash = params.one("result-id").unwrap_or_default().to_string();
    let tenant = &state.tenant;
    let found = tenant
        .scan_by_id(&scan_id)
        .filter(|scan| tenant.project_id(scan.project) == project_id)
        .is_some_and(|scan| tenant.sast_result_hashes(&scan).any(|h| h == hash));
    page(found, format!("SAST result {hash} of scan {scan_id}"))
}

/// `GET /scans?id=…`
pub async fn scan(State(state): State<Shared>, RawQuery(query): RawQuery) -> Response {
    let params = Params::parse(query.as_deref());
    let id = params.one("id").unwrap_or_default().to_string();
    let tenant = &state.tenant;
    let found = tenant.scan_by_id(&id).is_some() || tenant.dast_scan_by_id(&id).is_some();
    page(found, format!("scan {id}"))
}
