//! Request extractors that turn every bad input into a problem response.

use axum::body::Body;
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
#[cfg(feature = "aws")]
use lambda_http::request::RequestContext;
use serde_json::Value;
use webhooks::auth::{AuthError, Principal};

use crate::AppState;
use crate::error::ApiError;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Oversize bodies up to this size are read and dropped before answering 413.
const DRAIN_BYTES: usize = 4 * MAX_BODY_BYTES;

/// The caller, from `Authorization: Bearer <JWT>`.
pub struct Auth(pub Principal);

impl<S> FromRequestParts<S> for Auth
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        if state.verifier.from_api_gateway() {
            return Ok(Auth(gateway_principal(&state, parts)?));
        }
        let header = match parts.headers.get(header::AUTHORIZATION) {
            None => None,
            Some(v) => Some(v.to_str().map_err(|_| webhooks::auth::AuthError::Malformed)?),
        };
        Ok(Auth(state.verifier.verify_header(header).await?))
    }
}

/// The caller as API Gateway's JWT authorizer verified it: the claims of
/// `requestContext.authorizer.jwt`. A request without them did not come through an authorizer
/// (a route left without one, or not API Gateway at all) and is refused: fail closed.
#[cfg(feature = "aws")]
fn gateway_principal(state: &AppState, parts: &Parts) -> Result<Principal, AuthError> {
    let claims = match parts.extensions.get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx
            .authorizer
            .as_ref()
            .and_then(|a| a.jwt.as_ref())
            .map(|jwt| &jwt.claims),
        _ => None,
    };
    let claims = claims.ok_or(AuthError::Invalid("no claims from API Gateway's JWT authorizer"))?;
    state
        .verifier
        .principal_from_claims(|name| claims.get(name).map(String::as_str))
}

/// Without the `aws` feature there is no Lambda front door, so no authorizer's claims: fail closed.
#[cfg(not(feature = "aws"))]
fn gateway_principal(_state: &AppState, _parts: &Parts) -> Result<Principal, AuthError> {
    Err(AuthError::Invalid("no claims from API Gateway's JWT authorizer"))
}

/// A JSON body, parsed to a value (field-level validation happens in the domain parsers).
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, _state: &S) -> Result<Self, Self::Rejection> {
        read_json(req, false).await.map(JsonBody)
    }
}

/// A JSON body where none at all means `{}`: for actions whose every field is optional
/// (`curl -X POST …/rotate-secret`, `…/test`); only whitespace counts as none.
pub struct JsonBodyOrEmpty(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBodyOrEmpty {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, _state: &S) -> Result<Self, Self::Rejection> {
        read_json(req, true).await.map(JsonBodyOrEmpty)
    }
}

async fn read_json(req: Request<Body>, empty_is_object: bool) -> Result<Value, ApiError> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        let essence = ct.split(';').next().unwrap_or_default().trim();
        if !(essence == "application/json" || essence.ends_with("+json")) {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Type must be application/json, not '{essence}'"
            )));
        }
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_BYTES) {
        return Err(ApiError::TooLarge(MAX_BODY_BYTES));
    }
    // Bodies a little over the limit are read to the end before the 413, so that a client
    // still sending sees the answer instead of a reset connection.
    let bytes = axum::body::to_bytes(req.into_body(), DRAIN_BYTES).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.downcast_ref::<http_body_util::LengthLimitError>().is_some());
        if too_large {
            ApiError::TooLarge(MAX_BODY_BYTES)
        } else {
            ApiError::bad_request("", "could not read the request body")
        }
    })?;
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::TooLarge(MAX_BODY_BYTES));
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if empty_is_object {
            return Ok(Value::Object(serde_json::Map::new()));
        }
        return Err(ApiError::bad_request(
            "",
            "request body is empty; expected a JSON object",
        ));
    }
    // Before parsing: serde_json would keep the last of duplicate keys and round big
    // integers without a word, and refuse a lone surrogate as if it were not JSON.
    let losses = webhooks::jsjson::losses(&bytes);
    if !losses.is_empty() {
        return Err(ApiError::Invalid(
            losses
                .into_iter()
                .map(|l| webhooks::domain::FieldError::new(l.path, l.message))
                .collect(),
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request("", format!("malformed JSON: {e}")))
}
