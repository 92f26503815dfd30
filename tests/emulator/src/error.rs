//! Error answers in the body shapes the real service uses: the projects/scans family sends
//! `{message, type, code}`, the results family `{code, message, data}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Clone, Copy, Debug)]
pub enum Style {
    Ast,
    Results,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub style: Style,
}

impl ApiError {
    pub fn bad_request(style: Style, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            style,
        }
    }

    pub fn not_found(style: Style, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            style,
        }
    }

    pub fn forbidden(style: Style) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            message: "Forbidden".into(),
            style,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.status.as_u16();
        let body = match self.style {
            Style::Ast => json!({"message": self.message, "type": "ERROR", "code": code}),
            Style::Results => json!({"code": code, "message": self.message, "data": null}),
        };
        (self.status, Json(body)).into_response()
    }
}
