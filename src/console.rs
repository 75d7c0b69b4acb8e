//! The management API on `[console].listen` (product contract section 6):
//! bearer-token auth, JSON errors `{"error": {"code", "message"}}`.
//!
//! Built now: `POST /api/reload`, `GET /api/apps`, `GET /api/apps/{name}`,
//! `GET /api/backend-health`, `POST /api/probe/{pool}[?settings=NAME]`,
//! `GET /api/events[?since=1h]`, `POST /api/apps/{name}/start|stop|restart|scale`,
//! `GET /api/apps/{name}/logs[?follow=true]` (Server-Sent Events when following).
//! `GET /metrics` (Prometheus text; no token when `public_metrics`),
//! `GET /api/metrics?name=&app=|pool=|listener=&window=&grain=`, `GET /api/alerts`.

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

/// A lifecycle request for an app (section 6).
#[derive(Debug, Clone, Copy)]
pub enum AppAction {
    /// `POST /api/apps/{name}/start`.
    Start,
    /// `POST /api/apps/{name}/stop`.
    Stop,
    /// `POST /api/apps/{name}/restart` (rolling, zero-downtime).
    Restart,
    /// `POST /api/apps/{name}/scale` `{"instances": N}`.
    Scale(u32),
}

/// An API error: status, code and message.
#[derive(Debug)]
pub struct ApiFailure {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine code, e.g. `not_found`.
    pub code: &'static str,
    /// One sentence.
    pub message: String,
}

impl ApiFailure {
    /// 404.
    pub fn not_found(m: String) -> Self {
        ApiFailure {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: m,
        }
    }
    /// 400.
    pub fn bad_request(m: String) -> Self {
        ApiFailure {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: m,
        }
    }
    /// 409.
    pub fn conflict(m: String) -> Self {
        ApiFailure {
            status: StatusCode::CONFLICT,
            code: "conflict",
            message: m,
        }
    }
}

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
    /// Lifecycle of an app.
    fn app_action(
        &self,
        name: String,
        action: AppAction,
    ) -> Pin<Box<dyn Future<Output = Result<Value, ApiFailure>> + Send + '_>>;
    /// The log ring of an app.
    fn app_logs(&self, name: &str) -> Option<Arc<crate::host::LogRing>>;
    /// `GET /metrics`: the Prometheus text exposition.
    fn metrics_text(&self) -> String;
    /// `console.public_metrics`.
    fn public_metrics(&self) -> bool;
    /// `GET /api/metrics`.
    fn metric_series(&self, q: MetricQuery) -> Result<Value, ApiFailure>;
    /// `GET /api/alerts`.
    fn alert_status(&self) -> Value;
}

/// A validated `GET /api/metrics` query.
#[derive(Debug, Clone)]
pub struct MetricQuery {
    /// Series name.
    pub name: String,
    /// `app`, `pool` or `listener`.
    pub kind: &'static str,
    /// Its name.
    pub scope: String,
    /// How far back.
    pub window: std::time::Duration,
    /// 10 s or 1 min.
    pub grain: std::time::Duration,
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
        .route("/api/apps/{name}/logs", get(app_logs))
        .route("/api/apps/{name}/{action}", post(app_action))
        .route("/api/backend-health", get(backend_health))
        .route("/api/probe/{pool}", post(probe))
        .route("/api/events", get(events))
        .route("/api/metrics", get(metric_series))
        .route("/api/alerts", get(alert_status))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { api_error(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(middleware::from_fn_with_state(ctx.clone(), auth))
        .with_state(ctx)
}

async fn auth(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/metrics" && ctx.control.public_metrics() {
        return next.run(req).await;
    }
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

#[derive(serde::Deserialize)]
struct ScaleBody {
    instances: u32,
}

async fn app_action(
    State(ctx): State<Ctx>,
    Path((name, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let action = match action.as_str() {
        "start" => AppAction::Start,
        "stop" => AppAction::Stop,
        "restart" => AppAction::Restart,
        "scale" => match serde_json::from_slice::<ScaleBody>(&body) {
            Ok(b) => AppAction::Scale(b.instances),
            Err(e) => {
                return api_error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("expected {{\"instances\": N}}: {e}"),
                )
            }
        },
        other => {
            return api_error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no app action `{other}` (start, stop, restart, scale)"),
            )
        }
    };
    match ctx.control.app_action(name, action).await {
        Ok(v) => (StatusCode::ACCEPTED, Json(v)).into_response(),
        Err(f) => api_error(f.status, f.code, f.message),
    }
}

#[derive(serde::Deserialize)]
struct LogsQuery {
    follow: Option<bool>,
}

/// Forwards log lines as Server-Sent Events.
struct SseLines(tokio::sync::mpsc::Receiver<String>);

impl futures_core::Stream for SseLines {
    type Item = Result<axum::body::Bytes, std::convert::Infallible>;
    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0
            .poll_recv(cx)
            .map(|o| o.map(|l| Ok(axum::body::Bytes::from(format!("data: {l}\n\n")))))
    }
}

async fn app_logs(
    State(ctx): State<Ctx>,
    Path(name): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Response {
    let Some(ring) = ctx.control.app_logs(&name) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no app is named `{name}`"),
        );
    };
    if q.follow != Some(true) {
        let mut text = ring.recent().join("\n");
        text.push('\n');
        return ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let mut live = ring.subscribe();
    let recent = ring.recent();
    tokio::spawn(async move {
        for l in recent {
            if tx.send(l).await.is_err() {
                return;
            }
        }
        loop {
            match live.recv().await {
                Ok(l) => {
                    if tx.send(l).await.is_err() {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    if tx.send(format!("[{n} lines skipped]")).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        axum::body::Body::from_stream(SseLines(rx)),
    )
        .into_response()
}

async fn metrics_text(State(ctx): State<Ctx>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            // What prometheus-client's text encoder writes (it ends with `# EOF`).
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.control.metrics_text(),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct MetricsParams {
    name: Option<String>,
    app: Option<String>,
    pool: Option<String>,
    listener: Option<String>,
    window: Option<String>,
    grain: Option<String>,
}

async fn metric_series(State(ctx): State<Ctx>, Query(q): Query<MetricsParams>) -> Response {
    let Some(name) = q.name else {
        return api_error(StatusCode::BAD_REQUEST, "bad_request", "name= is required");
    };
    let (kind, scope) = match (q.app, q.pool, q.listener) {
        (Some(a), None, None) => ("app", a),
        (None, Some(p), None) => ("pool", p),
        (None, None, Some(l)) => ("listener", l),
        _ => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "give exactly one of app=, pool=, listener=",
            )
        }
    };
    let parse = |v: Option<String>, default: u64| -> Result<std::time::Duration, String> {
        match v {
            None => Ok(std::time::Duration::from_secs(default)),
            Some(t) => crate::config::parse_duration(&t),
        }
    };
    let window = match parse(q.window, 3600) {
        Ok(w) if w.as_secs() >= 10 && w.as_secs() <= 86400 => w,
        Ok(_) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "window must be within 10s..24h",
            )
        }
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "bad_request", e),
    };
    let grain = match parse(q.grain, if window.as_secs() <= 600 { 10 } else { 60 }) {
        Ok(g) if g.as_secs() == 10 || g.as_secs() == 60 => g,
        Ok(_) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "grain must be 10s or 1m",
            )
        }
        Err(e) => return api_error(StatusCode::BAD_REQUEST, "bad_request", e),
    };
    if grain.as_secs() == 10 && window.as_secs() > 600 {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "10s grain covers the last 10 minutes only",
        );
    }
    match ctx.control.metric_series(MetricQuery {
        name,
        kind,
        scope,
        window,
        grain,
    }) {
        Ok(v) => Json(v).into_response(),
        Err(f) => api_error(f.status, f.code, f.message),
    }
}

async fn alert_status(State(ctx): State<Ctx>) -> Response {
    Json(ctx.control.alert_status()).into_response()
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
