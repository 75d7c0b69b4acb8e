//! The management API on `[console].listen` (product contract section 6):
//! bearer-token auth, JSON errors `{"error": {"code", "message"}}`.
//!
//! Built now: `POST /api/reload`, `GET /api/apps`, `GET /api/apps/{name}`,
//! `GET /api/backend-health`, `POST /api/probe/{pool}[?settings=NAME]`,
//! `GET /api/events[?since=1h]`. The remaining endpoints of section 6 (app
//! lifecycle, logs, metrics) belong to later issues and answer 404 until then.

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::future::Future;
use std::io::Write;
use std::path::Path as FsPath;
use std::pin::Pin;
use std::sync::Arc;

/// What the console asks of the running process.
pub trait Control: Send + Sync + 'static {
    /// Reloads the config file. Ok: a summary of the new config. Err: every error.
    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<Value, Vec<String>>> + Send + '_>>;
    /// All apps as section 6 shows them.
    fn apps(&self) -> Vec<Value>;
    /// `GET /api/backend-health`.
    fn backend_health(&self) -> Value;
    /// `POST /api/probe/{pool}`: None when no rule uses the pool (with those settings).
    fn probe(
        &self,
        pool: String,
        settings: Option<String>,
    ) -> Pin<Box<dyn Future<Output = Option<Value>> + Send + '_>>;
    /// `GET /api/events`.
    fn events(&self, since: Option<std::time::Duration>) -> Value;
}

#[derive(Clone)]
struct Ctx {
    token: Arc<str>,
    control: Arc<dyn Control>,
}

/// A JSON error response of section 6.
pub fn api_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message.into()}})),
    )
        .into_response()
}

/// The console router: every route requires `Authorization: Bearer TOKEN`.
pub fn router(token: &str, control: Arc<dyn Control>) -> Router {
    let ctx = Ctx {
        token: token.into(),
        control,
    };
    Router::new()
        .route("/api/reload", post(reload))
        .route("/api/apps", get(apps))
        .route("/api/apps/{name}", get(app))
        .route("/api/backend-health", get(backend_health))
        .route("/api/probe/{pool}", post(probe))
        .route("/api/events", get(events))
        .fallback(|| async { api_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(middleware::from_fn_with_state(ctx.clone(), auth))
        .with_state(ctx)
}

async fn auth(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), ctx.token.as_bytes()));
    if !ok {
        let mut r = api_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token (see <state_dir>/console.token)",
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return r;
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn reload(State(ctx): State<Ctx>) -> Response {
    match ctx.control.reload().await {
        Ok(summary) => (StatusCode::OK, Json(summary)).into_response(),
        Err(errors) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {
                "code": "invalid_config",
                "message": format!("the new config was refused; the old one keeps serving ({} errors)", errors.len()),
                "errors": errors,
            }})),
        )
            .into_response(),
    }
}

async fn backend_health(State(ctx): State<Ctx>) -> Response {
    Json(ctx.control.backend_health()).into_response()
}

#[derive(serde::Deserialize)]
struct ProbeQuery {
    settings: Option<String>,
}

async fn probe(
    State(ctx): State<Ctx>,
    Path(pool): Path<String>,
    Query(q): Query<ProbeQuery>,
) -> Response {
    match ctx.control.probe(pool.clone(), q.settings).await {
        Some(v) => Json(v).into_response(),
        None => api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no rule uses a backend pool named `{pool}` (with those settings)"),
        ),
    }
}

#[derive(serde::Deserialize)]
struct EventsQuery {
    since: Option<String>,
}

async fn events(State(ctx): State<Ctx>, Query(q): Query<EventsQuery>) -> Response {
    let since = match q.since.as_deref().map(crate::config::parse_duration) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => return api_error(StatusCode::BAD_REQUEST, "bad_since", e),
    };
    Json(ctx.control.events(since)).into_response()
}

async fn apps(State(ctx): State<Ctx>) -> Response {
    Json(Value::Array(ctx.control.apps())).into_response()
}

async fn app(State(ctx): State<Ctx>, Path(name): Path<String>) -> Response {
    match ctx
        .control
        .apps()
        .into_iter()
        .find(|a| a.get("name").and_then(Value::as_str) == Some(name.as_str()))
    {
        Some(a) => Json(a).into_response(),
        None => api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no app is named `{name}`"),
        ),
    }
}

/// The console token: `configured`, else env `PORTCULLIS_TOKEN`, else the token
/// file `<state_dir>/console.token` (reused if present, else generated with
/// mode 0600). Errors: the file cannot be read or written.
pub fn resolve_token(configured: Option<&str>, state_dir: &FsPath) -> std::io::Result<String> {
    if let Some(t) = configured {
        return Ok(t.to_string());
    }
    if let Ok(t) = std::env::var("PORTCULLIS_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    let path = state_dir.join("console.token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        if !t.trim().is_empty() {
            return Ok(t.trim().to_string());
        }
    }
    std::fs::create_dir_all(state_dir)?;
    let token = format!("{:032x}{:032x}", fastrand::u128(..), fastrand::u128(..));
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    writeln!(f, "{token}")?;
    Ok(token)
}
