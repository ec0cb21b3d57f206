//! One error format for the whole API: RFC 9457 problem details. Internal errors are logged
//! with their detail and answered with an opaque 500.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use webhooks::auth::AuthError;
use webhooks::domain::FieldError;
use webhooks::ports::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(#[from] AuthError),
    #[error("{0}")]
    BadRequest(String, Vec<FieldError>),
    #[error("request body failed validation")]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::NotFound("webhook not found".into()),
            StoreError::Conflict => ApiError::Conflict("the resource changed concurrently; retry the request".into()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl ApiError {
    /// A 400 about `field`, or about the whole body when `field` is empty (then no field is
    /// named: the detail is the message alone).
    pub fn bad_request(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        if field.is_empty() {
            return ApiError::BadRequest(message, Vec::new());
        }
        ApiError::BadRequest(format!("{field}: {message}"), vec![FieldError::new(field, message)])
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(..) => StatusCode::BAD_REQUEST,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let title = status.canonical_reason().unwrap_or("Error");
        let (detail, errors) = match &self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                ("an internal error occurred; it has been logged".to_string(), Vec::new())
            }
            ApiError::Invalid(errors) => {
                let detail = errors
                    .iter()
                    .map(|e| {
                        if e.field.is_empty() {
                            e.message.clone()
                        } else {
                            format!("{}: {}", e.field, e.message)
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                (detail, errors.clone())
            }
            ApiError::BadRequest(detail, errors) => (detail.clone(), errors.clone()),
            other => (other.to_string(), Vec::new()),
        };
        let mut body = json!({"type": "about:blank", "title": title, "status": status.as_u16(), "detail": detail});
        if !errors.is_empty() {
            body["errors"] = json!(errors);
        }
        let mut response = (status, serde_json::to_string(&body).unwrap_or_default()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let ApiError::Unauthorized(e) = &self {
            let value = match e {
                AuthError::Missing => r#"Bearer realm="webhooks""#.to_string(),
                other => format!(r#"Bearer realm="webhooks", error="invalid_token", error_description="{other}""#),
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        response
    }
}
