//! The record type of the access log (Azure Application Gateway v2 schema).

use serde::{Deserialize, Serialize};

/// Text of a record field: strings up to 24 bytes are stored inline (most
/// fields: names, addresses, `"-"`, times), so building a record does not
/// allocate once per field; `&'static str` values are stored as references.
pub type Text = compact_str::CompactString;

/// One access-log line. Field names, JSON types and units follow the Azure v2
/// sample (`shared/testdata/azure/azure-appgw-access-v2.docs-example.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessRecord {
    /// RFC 3339 time the request arrived.
    pub time_stamp: Text,
    /// Listener that accepted the request (`""` when none matched).
    pub listener_name: Text,
    /// Request routing rule (`""` when none matched).
    pub rule_name: Text,
    /// Backend pool (`""` when none was chosen).
    pub backend_pool_name: Text,
    /// Backend HTTP settings (`""` when none were chosen).
    pub backend_setting_name: Text,
    /// Always `ApplicationGatewayAccess`.
    pub operation_name: Text,
    /// Always `ApplicationGatewayAccessLog`.
    pub category: Text,
    /// The request's details.
    pub properties: Properties,
}

/// `properties` of a record. Times in seconds; `serverStatus`,
/// `serverResponseLatency` and `upstreamSourcePort` are strings, `"-"` when no
/// backend answered, exactly as Azure writes them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Properties {
    /// `[gateway].instance_id`.
    pub instance_id: Text,
    /// Client address.
    #[serde(rename = "clientIP")]
    pub client_ip: Text,
    /// Client port (number).
    pub client_port: u16,
    /// Request method.
    pub http_method: Text,
    /// Path and query as the client sent them.
    pub original_request_uri_with_args: Text,
    /// Path sent to the backend (after any path override).
    pub request_uri: Text,
    /// Query string without `?`.
    pub request_query: Text,
    /// User-Agent header.
    pub user_agent: Text,
    /// Status sent to the client (499 when the client closed first).
    pub http_status: u16,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub http_version: Text,
    /// Request bytes received (head and body).
    pub received_bytes: u64,
    /// Response bytes sent (head and body).
    pub sent_bytes: u64,
    /// Seconds from the first to the last byte sent to the client.
    pub client_response_time: f64,
    /// Seconds from the request's arrival to the last response byte.
    pub time_taken: f64,
    /// 32 hex characters, also in `x-transaction-id`.
    pub transaction_id: Text,
    /// `on` or `off`.
    pub ssl_enabled: Text,
    /// TLS cipher suite, `""` on plain HTTP.
    #[serde(default)]
    pub ssl_cipher: Text,
    /// TLS version, `""` on plain HTTP.
    #[serde(default)]
    pub ssl_protocol: Text,
    /// `IP:port` of the backend that answered (the last attempt), `"-"` when none.
    pub server_routed: Text,
    /// Backend status as a string, `"-"` when none.
    pub server_status: Text,
    /// Seconds (string) from sending the request to the backend's response headers, `"-"` when none.
    pub server_response_latency: Text,
    /// Local port of the gateway's connection to the backend (string), `"-"` when none.
    pub upstream_source_port: Text,
    /// Host header as the client sent it.
    pub original_host: Text,
    /// Host header sent to the backend.
    pub host: Text,
    /// Reason code, `ERRORINFO_NO_ERROR` on success (Azure spells this one in snake case).
    #[serde(rename = "error_info")]
    pub error_info: Text,
    /// Response Content-Type.
    #[serde(default)]
    pub content_type: Text,
    /// portcullis: seconds (string) to connect to the backend (`"0.000"` on a reused connection), `"-"` when none.
    #[serde(default)]
    pub server_connect_time: Option<Text>,
    /// portcullis: seconds (string) from the request's arrival to the backend's response headers, `"-"` when none.
    #[serde(default)]
    pub server_header_time: Option<Text>,
    /// portcullis: every backend attempt, in order.
    #[serde(default)]
    pub attempts: Option<Vec<Attempt>>,
    /// portcullis: the answering attempt used a pooled keep-alive connection.
    #[serde(default)]
    pub connection_reused: Option<bool>,
}

/// One try of one backend server within a request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// `IP:port` tried.
    pub server: Text,
    /// What happened: `ERRORINFO_NO_ERROR` when it answered.
    #[serde(rename = "error_info")]
    pub error_info: Text,
    /// Its status as a string, `"-"` when it did not answer.
    pub server_status: Text,
}
