//! Handlers of the vendor API, one file per family, and what they share: JSON page assembly and
//! the schema-breaking record the `malformed` fault puts in a page.

pub mod dast;
pub mod projects;
pub mod results;
pub mod viewer;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::app::{Shared, has_role};
use crate::auth::Principal;
use crate::endpoint::Endpoint;
use crate::error::{ApiError, Style};
use crate::faults;

pub fn require(principal: Principal, role: &str, style: Style) -> Result<(), ApiError> {
    if has_role(principal, role) {
        Ok(())
    } else {
        Err(ApiError::forbidden(style))
    }
}

pub fn json_bytes(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The fault `past-end`: a page other than the first that starts at or past the list's end
/// (`start` of `total` records) is refused with the fault's status.
pub fn refuse_past_the_end(
    state: &Shared,
    endpoint: Endpoint,
    start: u64,
    total: u64,
    style: Style,
) -> Result<(), ApiError> {
    let status = state
        .faults
        .past_end_status(endpoint, &faults::request_target())
        .filter(|_| start > 0 && start >= total);
    let message = format!("no page starts at {start}: the list holds {total}");
    let refusal = match status {
        Some(404) => ApiError::not_found(style, message),
        Some(400) => ApiError::bad_request(style, message),
        _ => return Ok(()),
    };
    state.faults.fired[endpoint.index()]
        .refused_past_end
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Err(refusal)
}

/// The total a page reports: the true one, or the one a fault claims, moved by a drift fault.
pub fn reported_total(state: &Shared, endpoint: Endpoint, total: u64) -> i64 {
    state
        .faults
        .reported_total(endpoint, &faults::request_target(), total)
}

/// Where a page starts: where it asks, or at `first` under a fault that ignores the position.
pub fn position(state: &Shared, endpoint: Endpoint, asked: u64, first: u64) -> u64 {
    if state
        .faults
        .position_ignored(endpoint, &faults::request_target())
    {
        first
    } else {
        asked
    }
}

/// How many records a page starting at `start` holds at most: `asked`, or fewer under a fault
/// that caps every page or shrinks those after the first (`start` > 0).
pub fn page_room(state: &Shared, endpoint: Endpoint, asked: u64, start: u64) -> u64 {
    state
        .faults
        .page_room(endpoint, &faults::request_target(), asked, start == 0)
}

/// Breaks one record the way a schema violation from the vendor looks: the id is gone, the
/// severity is a number and a nested object became a string. The JSON itself stays valid.
pub fn corrupt(record: &mut Value) {
    if let Some(object) = record.as_object_mut() {
        for id_key in ["id", "ID", "environmentId", "scanId"] {
            object.remove(id_key);
        }
        if object.contains_key("severity") {
            object.insert("severity".into(), Value::from(3));
        }
        for nested in ["data", "vulnerabilityDetails", "tags", "riskLevel"] {
            if object.contains_key(nested) {
                object.insert(nested.into(), Value::from("corrupted"));
            }
        }
        object.insert("createdAt".into(), Value::from(12345));
    }
}

/// Writes the `len` records of `items` as a JSON array into `out`; the `malformed` fault breaks
/// the middle one, the `untyped` fault takes its `type` away, the `retype` fault renames the
/// `type` of every record of one.
pub fn write_array<I>(state: &Shared, endpoint: Endpoint, len: usize, items: I, out: &mut Vec<u8>)
where
    I: Iterator,
    I::Item: FnOnce(&mut Vec<u8>),
{
    let target = faults::request_target();
    let malformed = len > 0 && state.faults.malformed(endpoint, &target);
    let untyped = len > 0 && state.faults.untyped(endpoint, &target);
    let broken = (malformed || untyped).then_some(len / 2);
    let retyped = state.faults.record_type_renamed(endpoint, &target);
    out.push(b'[');
    for (n, write) in items.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        if Some(n) == broken || retyped.is_some() {
            let mut one = Vec::new();
            write(&mut one);
            let mut record: Value = serde_json::from_slice(&one).expect("own output parses");
            if Some(n) == broken && malformed {
                corrupt(&mut record);
            }
            if Some(n) == broken
                && untyped
                && let Some(object) = record.as_object_mut()
            {
                object.remove("type");
            }
            if let Some((from, to)) = &retyped
                && record["type"] == from.as_str()
            {
                record["type"] = Value::from(to.as_str());
            }
            serde_json::to_writer(&mut *out, &record).expect("writing JSON to a Vec cannot fail");
        } else {
            write(out);
        }
    }
    out.push(b']');
}
