//! The end-to-end suite: the real `portcullis` binary against real backends on
//! OS-chosen loopback ports. One test binary (one link); modules by concern.

mod support;

mod accesslog;
mod apps;
mod failures;
mod health;
mod hostile;
mod lifecycle;
mod monitoring;
mod routing;
mod streaming;
mod tls;
