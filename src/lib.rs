//! portcullis: an application gateway in the Azure Application Gateway model
//! (listeners, request routing rules, backend pools, backend HTTP settings, probes)
//! that can also host the web apps behind it (the App Service model), and that
//! explains every 502 and 503 it returns.
//!
//! Modules, from the bottom up (arrows point down only):
//! - [`config`]: the TOML model, defaults, validation. No sockets, no tasks.
//! - [`accesslog`]: the Azure v2 access-log record, its writer and reader.
//! - [`registry`]: where the app host publishes instances and the gateway reads them.
//! - [`gateway`]: listeners, request guard, routing, forwarding, pools, failure mapping.
//! - [`host`]: hosted apps: instances as supervised child processes.
//! - [`console`]: the management API.
//! - [`server`]: `portcullis run`: wiring, signals, reload.
//! - [`demo_app`]: the fault-injecting demo web app.
//!
//! ARCHITECTURE.md has the map with the request path and the reload path.

pub mod accesslog;
pub mod client;
pub mod config;
pub mod console;
pub mod demo_app;
pub mod events;
pub mod gateway;
pub mod host;
pub mod registry;
pub mod server;
pub mod telemetry;
pub mod txid;
