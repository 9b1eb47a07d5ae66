//! HTTP errors: every refusal is a status with a JSON body
//! `{"error":{"code":..,"message":..}}`, the code from the one catalogue
//! ([`ErrorCode`]).

use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::codes::ErrorCode;
use crate::node::NodeError;

/// An API error, carried through warp's rejection system to the recover filter.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl warp::reject::Reject for ApiError {}

/// The status an error code maps to.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Limit => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::LengthRequired => StatusCode::LENGTH_REQUIRED,
        ErrorCode::Timeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::Unauthorized | ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
        ErrorCode::NotConfigured => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::TooManyMembers => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::NoPresence => StatusCode::BAD_REQUEST,
        ErrorCode::BadRequest | ErrorCode::NotSubscribed | ErrorCode::NoHistory => {
            StatusCode::BAD_REQUEST
        }
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status: status_of(code),
            code,
            message: message.into(),
        }
    }

    pub fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": { "code": self.code, "message": self.message } });
        warp::reply::with_status(warp::reply::json(&body), self.status).into_response()
    }
}

impl From<&NodeError> for ApiError {
    fn from(e: &NodeError) -> ApiError {
        ApiError::new(e.code(), e.to_string())
    }
}
