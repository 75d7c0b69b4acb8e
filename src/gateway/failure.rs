//! The one failure vocabulary of the gateway (section 4 of the product contract).
//!
//! Every request ends with an [`ErrorInfo`]; this module is the ONE place that
//! turns it into a status code and a page. The access log uses the same value, so
//! what the client saw and what the log says cannot drift apart.

use bytes::Bytes;
use http::StatusCode;

/// Why a request ended the way it did: the `error_info` field of the access log
/// (Azure Application Gateway v2 codes, plus the App Service 503 reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorInfo {
    /// Success, whatever the backend answered.
    NoError,
    /// Malformed or ambiguous request: bad framing, CL+TE, bad header. 400.
    InvalidRequest,
    /// Request head larger than the gateway accepts. 431, logged as `INVALID_REQUEST`.
    HeadersTooLarge,
    /// No complete request head within the header timeout (60 s). 408, logged as `INVALID_REQUEST`.
    RequestHeaderTimeout,
    /// The request body stopped coming for the header timeout (60 s) before
    /// any answer (nginx's `client_body_timeout`), or an HTTP/1 body came
    /// slower than 240 bytes a second of waiting after 5 s (Kestrel's
    /// minimum body rate; `upstream.rs` `ClientWait`). 408, logged as `INVALID_REQUEST`.
    RequestBodyTimeout,
    /// HTTP/1.1 request without Host (RFC 9112 §3.2). 400.
    HttpNoHostHeader,
    /// Request target that is not origin-, absolute- or asterisk-form. 400.
    RequestUriInvalid,
    /// Request target longer than the gateway accepts. 414, logged as `REQUEST_URI_INVALID`.
    UriTooLong,
    /// Unsupported HTTP version. 400.
    InvalidVersion,
    /// HTTP/0.9 request line (no version). 505.
    Invalid09Method,
    /// TRACE (RFC 9110 §9.3.8; disabled like Azure does). 405.
    InvalidMethodTrace,
    /// CONNECT or another method a reverse proxy does not serve. 405.
    InvalidMethod,
    /// Plain HTTP sent to an https listener. 400.
    HttpToHttpsPort,
    /// No listener serves the request's Host. 404.
    InvalidHost,
    /// The client went away before the response was sent. 499, log only.
    ClientClosedRequest,
    /// Empty pool, every server Unhealthy, or no server accepted a connection. 502.
    UpstreamNoLive,
    /// Backend closed/reset or answered garbage before complete headers. 502.
    UpstreamClosedConnection,
    /// No response headers within `request_timeout`. 502 (Azure v1; v2 answers 504).
    UpstreamTimedOut,
    /// Hosted app stopped. 503 + Retry-After.
    AppStopped,
    /// Hosted app has no ready instance. 503 + Retry-After.
    AppUnavailable,
    /// Hosted app's instances and queue are full. 503 + Retry-After.
    AppOverloaded,
}

impl ErrorInfo {
    /// [`ErrorInfo::as_str`] as access-log record text (no allocation).
    pub fn text(self) -> crate::accesslog::Text {
        crate::accesslog::Text::const_new(self.as_str())
    }

    /// The access-log string, e.g. `ERRORINFO_UPSTREAM_NO_LIVE`.
    pub fn as_str(self) -> &'static str {
        use ErrorInfo::*;
        match self {
            NoError => "ERRORINFO_NO_ERROR",
            InvalidRequest | HeadersTooLarge | RequestHeaderTimeout | RequestBodyTimeout => {
                "ERRORINFO_INVALID_REQUEST"
            }
            HttpNoHostHeader => "ERRORINFO_HTTP_NO_HOST_HEADER",
            RequestUriInvalid | UriTooLong => "ERRORINFO_REQUEST_URI_INVALID",
            InvalidVersion => "ERRORINFO_INVALID_VERSION",
            Invalid09Method => "ERRORINFO_INVALID_09_METHOD",
            InvalidMethodTrace => "ERRORINFO_INVALID_METHOD_TRACE",
            InvalidMethod => "ERRORINFO_INVALID_METHOD",
            HttpToHttpsPort => "ERRORINFO_HTTP_TO_HTTPS_PORT",
            InvalidHost => "ERRORINFO_INVALID_HOST",
            ClientClosedRequest => "ERRORINFO_CLIENT_CLOSED_REQUEST",
            UpstreamNoLive => "ERRORINFO_UPSTREAM_NO_LIVE",
            UpstreamClosedConnection => "ERRORINFO_UPSTREAM_CLOSED_CONNECTION",
            UpstreamTimedOut => "ERRORINFO_UPSTREAM_TIMED_OUT",
            AppStopped => "ERRORINFO_APP_STOPPED",
            AppUnavailable => "ERRORINFO_APP_UNAVAILABLE",
            AppOverloaded => "ERRORINFO_APP_OVERLOADED",
        }
    }

    /// The status the client gets (499 is only ever logged).
    pub fn status(self) -> StatusCode {
        use ErrorInfo::*;
        let code = match self {
            NoError => 200,
            InvalidRequest | HttpNoHostHeader | RequestUriInvalid | InvalidVersion
            | HttpToHttpsPort => 400,
            HeadersTooLarge => 431,
            RequestHeaderTimeout | RequestBodyTimeout => 408,
            UriTooLong => 414,
            Invalid09Method => 505,
            InvalidMethodTrace | InvalidMethod => 405,
            InvalidHost => 404,
            ClientClosedRequest => 499,
            UpstreamNoLive | UpstreamClosedConnection | UpstreamTimedOut => 502,
            AppStopped | AppUnavailable | AppOverloaded => 503,
        };
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY)
    }

    /// True when the fault is the client's request: answer, then close the connection.
    pub fn closes_connection(self) -> bool {
        use ErrorInfo::*;
        matches!(
            self,
            InvalidRequest
                | HeadersTooLarge
                | RequestHeaderTimeout
                | RequestBodyTimeout
                | HttpNoHostHeader
                | RequestUriInvalid
                | UriTooLong
                | InvalidVersion
                | Invalid09Method
                | HttpToHttpsPort
        )
    }

    /// `Retry-After` seconds for the 503s of a hosted app.
    pub fn retry_after(self) -> Option<u32> {
        match self {
            ErrorInfo::AppStopped => Some(30),
            ErrorInfo::AppUnavailable => Some(5),
            ErrorInfo::AppOverloaded => Some(2),
            _ => None,
        }
    }

    /// One sentence for the client: what happened, never where (no internal addresses).
    pub fn explanation(self) -> &'static str {
        use ErrorInfo::*;
        match self {
            NoError => "",
            InvalidRequest => "The request was malformed or ambiguous and was not forwarded.",
            HeadersTooLarge => "The request headers are larger than the gateway accepts.",
            RequestHeaderTimeout => "The request headers did not arrive in time.",
            RequestBodyTimeout => "The request body stopped arriving.",
            HttpNoHostHeader => "The request carries no host: an HTTP/1.1 request needs a Host header, an HTTP/2 one :authority or Host.",
            RequestUriInvalid => "The request target is not a valid URI.",
            UriTooLong => "The request target is longer than the gateway accepts.",
            InvalidVersion => "This HTTP version is not supported.",
            Invalid09Method => "HTTP/0.9 requests are not supported.",
            InvalidMethodTrace => "TRACE is disabled on this gateway.",
            InvalidMethod => "This method is not served by this gateway.",
            HttpToHttpsPort => "A plain HTTP request was sent to an HTTPS port.",
            InvalidHost => "No site is configured for this host name.",
            ClientClosedRequest => "The client closed the request.",
            UpstreamNoLive => "No backend server could take the request.",
            UpstreamClosedConnection => {
                "The backend server closed the connection before it answered."
            }
            UpstreamTimedOut => "The backend server did not answer in time.",
            AppStopped => "The application is stopped.",
            AppUnavailable => "The application is starting or restarting; try again shortly.",
            AppOverloaded => "The application is busy; try again shortly.",
        }
    }
}

/// The built-in page of a gateway-generated response: status, reason, the
/// transaction id, and one sentence — never an internal address.
pub fn builtin_page(info: ErrorInfo, transaction_id: &str) -> Bytes {
    let status = info.status();
    let reason = status.canonical_reason().unwrap_or("Error");
    let code = status.as_u16();
    Bytes::from(format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{code} {reason}</title></head>\n\
         <body><h1>{code} {reason}</h1>\n<p>{}</p>\n<p>Transaction ID: <code>{transaction_id}</code></p>\n\
         <p><small>portcullis</small></p></body></html>\n",
        info.explanation()
    ))
}

/// A custom error page with `{{transaction_id}}` replaced.
pub fn custom_page(template: &str, transaction_id: &str) -> Bytes {
    Bytes::from(template.replace("{{transaction_id}}", transaction_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_the_contract_status() {
        assert_eq!(ErrorInfo::UpstreamNoLive.status().as_u16(), 502);
        assert_eq!(ErrorInfo::UpstreamTimedOut.status().as_u16(), 502);
        assert_eq!(ErrorInfo::AppOverloaded.status().as_u16(), 503);
        assert_eq!(ErrorInfo::InvalidHost.status().as_u16(), 404);
        assert_eq!(ErrorInfo::InvalidMethodTrace.status().as_u16(), 405);
        assert_eq!(ErrorInfo::Invalid09Method.status().as_u16(), 505);
        assert_eq!(ErrorInfo::ClientClosedRequest.status().as_u16(), 499);
        assert_eq!(
            ErrorInfo::HeadersTooLarge.as_str(),
            "ERRORINFO_INVALID_REQUEST"
        );
    }

    #[test]
    fn page_names_transaction_but_no_address() {
        let p = builtin_page(ErrorInfo::UpstreamNoLive, "abc123");
        let s = std::str::from_utf8(&p).expect("utf8");
        assert!(s.contains("502 Bad Gateway") && s.contains("abc123"));
    }
}
