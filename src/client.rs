//! The console client used by client subcommands (`reload`, …): `--api URL`,
//! `--token` (else env `PORTCULLIS_TOKEN`, else the token file in the state
//! directory of `./portcullis.toml` or the built-in default).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::path::PathBuf;

/// Answer of the console: status and parsed JSON (or the raw text as a string).
pub struct ApiAnswer {
    /// HTTP status.
    pub status: u16,
    /// Body as JSON.
    pub body: serde_json::Value,
}

/// Finds the token: explicit, env, then the token file.
pub fn find_token(explicit: Option<String>, config: Option<PathBuf>) -> Option<String> {
    if let Some(t) = explicit {
        return Some(t);
    }
    if let Ok(t) = std::env::var("PORTCULLIS_TOKEN") {
        if !t.trim().is_empty() {
            return Some(t.trim().to_string());
        }
    }
    let source = crate::config::locate(config.as_deref());
    let state_dir = match crate::config::load(&source) {
        Ok(v) => {
            let d = v.config.gateway.state_dir.clone();
            if d.is_absolute() {
                d
            } else {
                v.config.base_dir.join(d)
            }
        }
        Err(_) => PathBuf::from(".portcullis"),
    };
    std::fs::read_to_string(state_dir.join("console.token"))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Characters left as they are in a path segment or query value: RFC 3986 §2.3
/// "unreserved" (letters, digits, `-`, `.`, `_`, `~`).
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes a name or value typed on the command line for use as one URL
/// path segment or query value (RFC 3986 §2.1), so `a b/c` stays one name.
pub fn encode(component: &str) -> String {
    percent_encoding::utf8_percent_encode(component, COMPONENT).to_string()
}

/// Sends `method path` with an optional JSON body to the console at `api`
/// (`http://host:port`). Errors: connection or protocol failures, as text.
pub async fn call(
    api: &str,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<ApiAnswer, String> {
    let (mut tx, authority) = connect(api).await?;
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, &authority)
        .header(http::header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::from(payload)))
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
    });
    Ok(ApiAnswer { status, body })
}

/// Opens an HTTP/1 connection to the console at `api` (`http://HOST:PORT`).
/// Returns the sender and the authority for the `Host` header. Errors: `api`
/// is not an http:// URL, or the console cannot be reached.
async fn connect(
    api: &str,
) -> Result<(hyper::client::conn::http1::SendRequest<Full<Bytes>>, String), String> {
    let authority = api
        .trim_end_matches('/')
        .strip_prefix("http://")
        .ok_or_else(|| format!("--api must be an http:// URL, got `{api}`"))?
        .to_string();
    let stream = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(|e| {
            format!("cannot reach the console at {api}: {e} (is `portcullis run` running?)")
        })?;
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok((tx, authority))
}

/// GETs `path` and calls `on_line` for every line of the answer as it arrives
/// (for `--follow` streams). Returns the status.
pub async fn stream_lines(
    api: &str,
    token: Option<&str>,
    path: &str,
    mut on_line: impl FnMut(&str),
) -> Result<u16, String> {
    let (mut tx, authority) = connect(api).await?;
    let mut req = http::Request::builder()
        .method("GET")
        .uri(path)
        .header(http::header::HOST, &authority);
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(d) = frame.data_ref() {
            pending.extend_from_slice(d);
            while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=nl).collect();
                on_line(String::from_utf8_lossy(&line[..line.len() - 1]).trim_end_matches('\r'));
            }
        }
    }
    if !pending.is_empty() {
        on_line(&String::from_utf8_lossy(&pending));
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::encode;

    #[test]
    fn names_are_encoded_as_one_path_segment() {
        assert_eq!(encode("web-1.a_b~"), "web-1.a_b~");
        assert_eq!(encode("a b/c?d&e=f"), "a%20b%2Fc%3Fd%26e%3Df");
        assert_eq!(encode("é"), "%C3%A9");
    }
}
