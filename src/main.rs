//! The `portcullis` command line (product contract section 2).

use clap::{Args, Parser, Subcommand};
use portcullis::{client, config, demo_app, server};
use std::path::PathBuf;
use std::process::ExitCode;

// mimalloc instead of glibc's malloc: the request path makes many small,
// short-lived allocations (header maps, record strings), and glibc's
// malloc/free were about a tenth of the CPU time under load. Linked with its
// `override` feature, it is `malloc` and `free` themselves, and Rust's default
// allocator (`System`) calls them; `mimalloc::MiMalloc` as the global
// allocator would send every allocation through `mi_malloc_aligned`, whose
// over-allocating path takes any block over 1 KiB whose size is not a power
// of two (docs/benchmarks.md §2).
extern crate mimalloc;

#[derive(Parser)]
#[command(
    name = "portcullis",
    version,
    about = "An application gateway that hosts the apps behind it and explains every 502 and 503."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ClientArgs {
    /// Console URL.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    api: String,
    /// Console token (else env PORTCULLIS_TOKEN, else the token file in the state directory).
    #[arg(long)]
    token: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
    /// Config file whose state directory holds the token file.
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Start the gateway, the app host and the console.
    Run {
        /// Config file (else ./portcullis.toml, else the built-in default).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Check a config: prints `ok` or every error with its field path.
    Validate {
        /// Config file (else ./portcullis.toml, else the built-in default).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
    },
    /// Ask the running process to reload its config file.
    Reload(ClientArgs),
    /// Backend health: one row per (pool, settings, server) with Status and Details.
    Health(ClientArgs),
    /// Run the probe now against every server of POOL and show what it saw.
    Probe {
        /// Backend pool name.
        pool: String,
        /// Only the pool's pair with these backend HTTP settings.
        #[arg(long)]
        settings: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The activity log: health transitions, ejections, reloads, instance events.
    Events {
        /// Only events newer than this (e.g. 10m, 1h).
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Apps and their instances (`app list`, `app show NAME`).
    App {
        #[command(subcommand)]
        command: AppCommand,
    },
    /// The main metrics over time, per app, pool or listener: a table and a sparkline each.
    Metrics {
        /// A hosted app.
        #[arg(long, conflicts_with_all = ["pool", "listener"])]
        app: Option<String>,
        /// A backend pool.
        #[arg(long, conflicts_with = "listener")]
        pool: Option<String>,
        /// A listener.
        #[arg(long)]
        listener: Option<String>,
        /// How far back (10s..24h).
        #[arg(long, default_value = "1h")]
        window: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Alert rules and their state.
    Alerts(ClientArgs),
    /// App output (stdout/stderr of every instance); `--follow` streams it live.
    Logs {
        /// App name.
        #[arg(long)]
        app: String,
        /// Keep streaming new lines.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run the demo web app with fault switches.
    DemoApp {
        /// Port (else $PORT, else any free port).
        #[arg(long)]
        port: Option<u16>,
    },
}

#[derive(Subcommand)]
enum AppCommand {
    /// All apps.
    List(ClientArgs),
    /// One app and its instances.
    Show {
        /// App name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Start a stopped app.
    Start {
        /// App name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop an app (its pool answers 503 ERRORINFO_APP_STOPPED).
    Stop {
        /// App name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Zero-downtime rolling restart.
    Restart {
        /// App name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set the instance count.
    Scale {
        /// App name.
        name: String,
        /// Instances, 0..64.
        instances: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
}

fn init_tracing() {
    let level = match std::env::var("PORTCULLIS_LOG").as_deref() {
        Ok("debug") => tracing::Level::DEBUG,
        Ok("trace") => tracing::Level::TRACE,
        Ok("warn") => tracing::Level::WARN,
        Ok("error") => tracing::Level::ERROR,
        _ => tracing::Level::INFO,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The runtime: multi-threaded for `run` when the process may use more than one
/// core; single-threaded otherwise (the CLI, or `run` confined to one core, e.g.
/// by `taskset`), where a multi-threaded scheduler only adds cross-thread
/// bookkeeping to every wake-up.
fn runtime(multi: bool) -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if multi && cores > 1 {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match cli.command {
        Command::Run { config } => {
            init_tracing();
            let source = config::locate(config.as_deref());
            match runtime(true) {
                Ok(rt) => {
                    let code = rt.block_on(server::run(source)) as u8;
                    // Requests still running past the shutdown timeout are dropped
                    // with the runtime and write their records then.
                    rt.shutdown_timeout(std::time::Duration::from_secs(2));
                    portcullis::accesslog::wait_for_writers(std::time::Duration::from_secs(5));
                    ExitCode::from(code)
                }
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Validate { config } => {
            let source = config::locate(config.as_deref());
            match config::load(&source) {
                Ok(v) => {
                    for w in &v.warnings {
                        println!("warning: {w}");
                    }
                    println!("ok");
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    for e in &errors {
                        println!("{e}");
                    }
                    eprintln!("{source}: {} error(s)", errors.len());
                    ExitCode::from(2)
                }
            }
        }
        Command::Reload(c) => client_call(&c, "POST", "/api/reload", |body| {
            let names = |k: &str| {
                body.get(k)
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            format!(
                "reloaded: listeners [{}], pools [{}], rules [{}], apps [{}]",
                names("listeners"),
                names("backend_pools"),
                names("request_routing_rules"),
                names("apps")
            )
        }),
        Command::Health(c) => client_call(&c, "GET", "/api/backend-health", health_table),
        Command::Alerts(c) => client_call(&c, "GET", "/api/alerts", alerts_table),
        Command::Metrics {
            app,
            pool,
            listener,
            window,
            client,
        } => metrics_view(&client, app, pool, listener, &window),
        Command::Probe {
            pool,
            settings,
            client,
        } => {
            let path = match &settings {
                Some(s) => format!(
                    "/api/probe/{}?settings={}",
                    client::encode(&pool),
                    client::encode(s)
                ),
                None => format!("/api/probe/{}", client::encode(&pool)),
            };
            client_call(&client, "POST", &path, probe_table)
        }
        Command::Events { since, client } => {
            if let Some(s) = &since {
                if let Err(e) = config::parse_duration(s) {
                    eprintln!("--since: {e}");
                    return ExitCode::from(2);
                }
            }
            let path = match &since {
                Some(s) => format!("/api/events?since={}", client::encode(s)),
                None => "/api/events".to_string(),
            };
            client_call(&client, "GET", &path, events_table)
        }
        Command::App { command } => match command {
            AppCommand::List(c) => client_call(&c, "GET", "/api/apps", app_table),
            AppCommand::Show { name, client } => client_call(
                &client,
                "GET",
                &format!("/api/apps/{}", client::encode(&name)),
                |b| app_table(&serde_json::Value::Array(vec![b.clone()])),
            ),
            AppCommand::Start { name, client } => app_op(&client, &name, "start", None),
            AppCommand::Stop { name, client } => app_op(&client, &name, "stop", None),
            AppCommand::Restart { name, client } => app_op(&client, &name, "restart", None),
            AppCommand::Scale {
                name,
                instances,
                client,
            } => app_op(
                &client,
                &name,
                "scale",
                Some(serde_json::json!({ "instances": instances })),
            ),
        },
        Command::Logs {
            app,
            follow,
            client,
        } => {
            let token = client::find_token(client.token.clone(), client.config.clone());
            let path = format!(
                "/api/apps/{}/logs{}",
                client::encode(&app),
                if follow { "?follow=true" } else { "" }
            );
            let rt = match runtime(false) {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(client::stream_lines(
                &client.api,
                token.as_deref(),
                &path,
                |line| {
                    use std::io::Write;
                    let line = line.strip_prefix("data: ").unwrap_or(line);
                    if !line.is_empty() {
                        let mut out = std::io::stdout().lock();
                        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                            // The reader went away (`| head`): stop quietly.
                            std::process::exit(0);
                        }
                    }
                },
            )) {
                Ok(200) => ExitCode::SUCCESS,
                Ok(404) => {
                    eprintln!("no app is named `{app}`");
                    ExitCode::from(2)
                }
                Ok(s) => {
                    eprintln!("error {s}");
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::DemoApp { port } => {
            let port = port
                .or_else(|| std::env::var("PORT").ok().and_then(|p| p.parse().ok()))
                .unwrap_or(0);
            match runtime(false) {
                Ok(rt) => match rt.block_on(demo_app::run(port)) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("demo-app: {e}");
                        ExitCode::from(1)
                    }
                },
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn health_table(body: &serde_json::Value) -> String {
    let mut rows = vec![[
        "POOL".to_string(),
        "SETTINGS".into(),
        "SERVER".into(),
        "STATUS".into(),
        "DETAILS".into(),
    ]];
    for pool in body["pools"].as_array().into_iter().flatten() {
        for set in pool["settings"].as_array().into_iter().flatten() {
            for srv in set["servers"].as_array().into_iter().flatten() {
                rows.push([
                    pool["name"].as_str().unwrap_or("").into(),
                    set["name"].as_str().unwrap_or("").into(),
                    srv["address"].as_str().unwrap_or("").into(),
                    srv["health"].as_str().unwrap_or("").into(),
                    srv["details"].as_str().unwrap_or("").into(),
                ]);
            }
        }
    }
    table(&rows)
}

fn probe_table(body: &serde_json::Value) -> String {
    let mut rows = vec![[
        "SETTINGS".to_string(),
        "SERVER".into(),
        "STATUS".into(),
        "LATENCY".into(),
        "VERDICT".into(),
        "DETAILS / BODY".into(),
    ]];
    for set in body["settings"].as_array().into_iter().flatten() {
        for o in set["servers"].as_array().into_iter().flatten() {
            let body = o["body_excerpt"]
                .as_str()
                .unwrap_or("")
                .replace(['\r', '\n'], " ");
            rows.push([
                format!(
                    "{} (probe {})",
                    set["name"].as_str().unwrap_or(""),
                    set["probe"].as_str().unwrap_or("")
                ),
                o["address"].as_str().unwrap_or("").into(),
                o["status"]
                    .as_u64()
                    .map(|s| s.to_string())
                    .unwrap_or("-".into()),
                o["latency_ms"]
                    .as_u64()
                    .map(|s| format!("{s} ms"))
                    .unwrap_or("-".into()),
                if o["ok"].as_bool() == Some(true) {
                    "pass".into()
                } else {
                    "FAIL".into()
                },
                format!(
                    "{} {}",
                    o["details"].as_str().unwrap_or(""),
                    if body.is_empty() {
                        String::new()
                    } else {
                        format!("| {}", body.chars().take(60).collect::<String>())
                    }
                ),
            ]);
        }
    }
    table(&rows)
}

fn events_table(body: &serde_json::Value) -> String {
    let mut rows = vec![[
        "TIME".to_string(),
        "KIND".into(),
        "SUBJECT".into(),
        "MESSAGE".into(),
    ]];
    for e in body.as_array().into_iter().flatten() {
        rows.push([
            e["time"].as_str().unwrap_or("").into(),
            e["kind"].as_str().unwrap_or("").into(),
            e["subject"].as_str().unwrap_or("").into(),
            e["message"].as_str().unwrap_or("").into(),
        ]);
    }
    table(&rows)
}

/// Left-aligned columns; the last column is not padded.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, c)| {
                    if i + 1 == N {
                        c.clone()
                    } else {
                        format!("{c:<w$}", w = widths[i])
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn alerts_table(body: &serde_json::Value) -> String {
    let mut rows = vec![[
        "ALERT".to_string(),
        "STATE".into(),
        "METRIC".into(),
        "SCOPE".into(),
        "CONDITION".into(),
        "VALUE".into(),
        "SEV".into(),
        "SINCE".into(),
    ]];
    for a in body.as_array().into_iter().flatten() {
        let s = |k: &str| a[k].as_str().unwrap_or("").to_string();
        rows.push([
            s("name"),
            s("state"),
            s("metric"),
            s("scope"),
            s("condition"),
            a["value"]
                .as_f64()
                .map(|v| format!("{v:.3}"))
                .unwrap_or_else(|| "-".into()),
            a["severity"]
                .as_u64()
                .map(|v| v.to_string())
                .unwrap_or_default(),
            s("since"),
        ]);
    }
    table(&rows)
}

/// Eight-level bars for a series (▁…█), scaled to its own maximum.
fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().cloned().fold(0.0f64, f64::max);
    values
        .iter()
        .map(|v| {
            if max <= 0.0 {
                BARS[0]
            } else {
                BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize]
            }
        })
        .collect()
}

fn metrics_view(
    c: &ClientArgs,
    app: Option<String>,
    pool: Option<String>,
    listener: Option<String>,
    window: &str,
) -> ExitCode {
    let (kind, name) = match (app, pool, listener) {
        (Some(a), _, _) => ("app", a),
        (_, Some(p), _) => ("pool", p),
        (_, _, Some(l)) => ("listener", l),
        _ => {
            eprintln!("name what to show: --app NAME, --pool NAME or --listener NAME");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = config::parse_duration(window) {
        eprintln!("--window: {e}");
        return ExitCode::from(2);
    }
    let rt = match runtime(false) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let token = client::find_token(c.token.clone(), c.config.clone());
    let metrics: &[(&str, &str)] = match kind {
        "app" => &[
            ("requests", "count"),
            ("http_2xx", "count"),
            ("http_4xx", "count"),
            ("http_5xx", "count"),
            ("response_time", "s"),
            ("cpu_seconds", "s"),
            ("memory_working_set", "bytes"),
            ("queue_length", ""),
        ],
        "pool" => &[
            ("requests", "count"),
            ("failed_requests", "count"),
            ("http_5xx", "count"),
            ("response_time", "s"),
            ("healthy_hosts", ""),
            ("unhealthy_hosts", ""),
        ],
        _ => &[
            ("requests", "count"),
            ("failed_requests", "count"),
            ("http_4xx", "count"),
            ("http_5xx", "count"),
            ("response_time", "s"),
        ],
    };
    let mut rows = vec![[
        "METRIC".to_string(),
        "TOTAL".into(),
        "AVG".into(),
        "MAX".into(),
        "LAST".into(),
        format!("OVER {window}"),
    ]];
    let mut all = serde_json::Map::new();
    for (m, unit) in metrics {
        let path = format!(
            "/api/metrics?name={}&{kind}={}&window={}",
            client::encode(m),
            client::encode(&name),
            client::encode(window)
        );
        let ans = match rt.block_on(client::call(&c.api, token.as_deref(), "GET", &path, None)) {
            Ok(a) if a.status == 200 => a.body,
            Ok(a) => {
                eprintln!(
                    "error {}: {}",
                    a.status,
                    a.body["error"]["message"].as_str().unwrap_or("")
                );
                return ExitCode::from(if a.status == 400 { 2 } else { 1 });
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        };
        let points = ans["points"].as_array().cloned().unwrap_or_default();
        let counting = *unit == "count";
        let per_point: Vec<f64> = points
            .iter()
            .map(|p| {
                if counting {
                    p["sum"].as_f64().unwrap_or(0.0)
                } else {
                    p["average"].as_f64().unwrap_or(0.0)
                }
            })
            .collect();
        let total: f64 = points
            .iter()
            .map(|p| p["sum"].as_f64().unwrap_or(0.0))
            .sum();
        let count: f64 = points
            .iter()
            .map(|p| p["count"].as_f64().unwrap_or(0.0))
            .sum();
        let max = points
            .iter()
            .map(|p| p["max"].as_f64().unwrap_or(0.0))
            .fold(0.0f64, f64::max);
        let fmt = |v: f64| match *unit {
            "bytes" => format!("{:.1} MiB", v / 1048576.0),
            "s" => format!("{v:.3} s"),
            _ => format!("{v:.0}"),
        };
        let avg = if count > 0.0 { total / count } else { 0.0 };
        rows.push([
            m.to_string(),
            if counting { fmt(total) } else { "-".into() },
            if counting { "-".into() } else { fmt(avg) },
            fmt(max),
            per_point
                .last()
                .map(|v| fmt(*v))
                .unwrap_or_else(|| "-".into()),
            sparkline(&per_point),
        ]);
        all.insert(m.to_string(), ans);
    }
    if c.json {
        println!("{}", serde_json::Value::Object(all));
    } else {
        println!("{kind} {name}, last {window}:");
        println!("{}", table(&rows));
    }
    ExitCode::SUCCESS
}

fn app_op(c: &ClientArgs, name: &str, action: &str, body: Option<serde_json::Value>) -> ExitCode {
    let rt = match runtime(false) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let token = client::find_token(c.token.clone(), c.config.clone());
    let path = format!("/api/apps/{}/{action}", client::encode(name));
    match rt.block_on(client::call(&c.api, token.as_deref(), "POST", &path, body)) {
        Ok(a) if (200..300).contains(&a.status) => {
            if c.json {
                println!("{}", a.body);
            } else {
                println!("{action}: accepted");
                println!("{}", app_table(&serde_json::Value::Array(vec![a.body])));
            }
            ExitCode::SUCCESS
        }
        Ok(a) => {
            eprintln!(
                "error {}: {}",
                a.status,
                a.body["error"]["message"]
                    .as_str()
                    .unwrap_or("request failed")
            );
            ExitCode::from(if a.status == 400 || a.status == 404 {
                2
            } else {
                1
            })
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

fn app_table(body: &serde_json::Value) -> String {
    let mut rows = vec![[
        "APP".to_string(),
        "STATE".into(),
        "INSTANCE".into(),
        "PID".into(),
        "PORT".into(),
        "INST STATE".into(),
        "UPTIME".into(),
        "RESTARTS".into(),
        "CPU s".into(),
        "MEMORY".into(),
    ]];
    for app in body.as_array().into_iter().flatten() {
        let name = app["name"].as_str().unwrap_or("").to_string();
        let state = app["state"].as_str().unwrap_or("").to_string();
        let instances = app["instances"].as_array().cloned().unwrap_or_default();
        if instances.is_empty() {
            rows.push([
                name.clone(),
                state.clone(),
                "-".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
            ]);
        }
        let n = |v: &serde_json::Value| {
            v.as_u64()
                .map(|x| x.to_string())
                .unwrap_or_else(|| "-".into())
        };
        for i in instances {
            rows.push([
                name.clone(),
                state.clone(),
                i["id"].as_str().unwrap_or("").into(),
                n(&i["pid"]),
                n(&i["port"]),
                i["state"].as_str().unwrap_or("").into(),
                i["uptime_seconds"]
                    .as_u64()
                    .map(|s| format!("{s}s"))
                    .unwrap_or_else(|| "-".into()),
                n(&i["restarts"]),
                i["cpu_seconds"]
                    .as_f64()
                    .map(|c| format!("{c:.2}"))
                    .unwrap_or_else(|| "-".into()),
                i["memory_bytes"]
                    .as_u64()
                    .map(|m| format!("{:.1} MiB", m as f64 / 1048576.0))
                    .unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    table(&rows)
}

fn client_call(
    c: &ClientArgs,
    method: &str,
    path: &str,
    human: impl Fn(&serde_json::Value) -> String,
) -> ExitCode {
    let rt = match runtime(false) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let token = client::find_token(c.token.clone(), c.config.clone());
    match rt.block_on(client::call(&c.api, token.as_deref(), method, path, None)) {
        Ok(a) if (200..300).contains(&a.status) => {
            if c.json {
                println!("{}", a.body);
            } else {
                println!("{}", human(&a.body));
            }
            ExitCode::SUCCESS
        }
        Ok(a) => {
            if c.json {
                println!("{}", a.body);
            } else {
                let msg = a.body["error"]["message"]
                    .as_str()
                    .unwrap_or("request failed");
                eprintln!("error {}: {msg}", a.status);
                for e in a.body["error"]["errors"].as_array().into_iter().flatten() {
                    eprintln!("{}", e.as_str().unwrap_or(""));
                }
            }
            ExitCode::from(if a.status == 400 || a.status == 404 {
                2
            } else {
                1
            })
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
