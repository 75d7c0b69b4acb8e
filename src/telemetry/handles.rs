//! A cache of metric and series handles per request shape, so that recording a
//! request is a handful of adds rather than a dozen label-set lookups
//! (each of which clones its label strings and hashes them under a lock).
//!
//! A request's shape is what its labels are made of: listener, pool, settings,
//! server, response status, backend status, `error_info` and app. The cache is
//! bounded ([`MAX_SHAPES`]); when full it is emptied and refilled, which costs
//! only lookups (the handles point at the same counters as the families).

use super::metrics::{
    status_class, AppCodeL, AppL, AppStatusL, BackendL, ErrorL, ListenerL, Metrics, ServerL,
    ServerStatusL, StatusL,
};
use super::series::{Series, SeriesStore};
use super::sharded::Counter;
use super::sharded::Histogram;
use rustc_hash::{FxHashMap, FxHasher};
use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Most shapes kept; past it the cache starts again empty.
pub const MAX_SHAPES: usize = 4096;

/// The label values of one request, borrowed from its record.
///
/// The derived `PartialEq` compares the fields in the order they are declared
/// here: the numbers and flags first, then the server (what tells a pool's
/// shapes apart), so that a thread's recent shapes ([`HandleCache::with`]) that
/// are not the request's are usually told apart before any text is compared.
#[derive(Hash, PartialEq, Eq, Clone, Copy)]
pub struct Shape<'a> {
    /// Status sent to the client.
    pub status: u16,
    /// Status of the backend's answer, when it answered.
    pub server_status: Option<u16>,
    /// Whether the request counts as failed.
    pub failed: bool,
    /// Whether the answering attempt has a connect time.
    pub connected: bool,
    /// Whether the backend's response headers arrived.
    pub first_byte: bool,
    /// `IP:port` of the answering server, `"-"` when none.
    pub server: &'a str,
    /// `ERRORINFO_…`.
    pub error_info: &'a str,
    /// Listener name (`""` when none matched).
    pub listener: &'a str,
    /// Backend pool (`""` when none).
    pub pool: &'a str,
    /// Backend HTTP settings (`""` when none).
    pub settings: &'a str,
    /// Hosted app behind the pool.
    pub app: Option<&'a str>,
}

/// The series of one scope (listener, pool or app) that a request adds to.
pub struct ScopeSeries {
    /// `requests`.
    pub requests: Arc<Series>,
    /// `response_time`.
    pub response_time: Arc<Series>,
    /// `failed_requests`, when the request failed.
    pub failed: Option<Arc<Series>>,
    /// `http_Nxx` of its status class, when 2xx–5xx.
    pub class: Option<Arc<Series>>,
}

/// Server-level histograms.
pub struct ServerHandles {
    /// `portcullis_backend_connect_time_seconds`, when connected.
    pub connect: Option<Histogram>,
    /// `portcullis_backend_first_byte_response_time_seconds` and
    /// `…_last_byte_…`, when the response headers arrived.
    pub first_last_byte: Option<(Histogram, Histogram)>,
    /// `portcullis_backend_responses_total`, when the backend answered.
    pub status: Option<Counter>,
}

/// App-level handles.
pub struct AppHandles {
    /// `portcullis_app_requests_total`.
    pub requests: Counter,
    /// `portcullis_app_http_responses_total`.
    pub code: Counter,
    /// `portcullis_app_response_time_seconds`.
    pub response_time: Histogram,
}

/// Every handle a request of one shape records into.
pub struct Handles {
    key: OwnedShape,
    /// `portcullis_requests_total`.
    pub requests: Counter,
    /// `portcullis_failed_requests_total`, when failed.
    pub failed: Option<Counter>,
    /// `portcullis_responses_by_error_info_total`.
    pub errors: Counter,
    /// `portcullis_received_bytes_total`.
    pub received: Counter,
    /// `portcullis_sent_bytes_total`.
    pub sent: Counter,
    /// `portcullis_total_time_seconds`, when a pool was chosen.
    pub total_time: Option<Histogram>,
    /// Server histograms, when a server answered.
    pub server: Option<ServerHandles>,
    /// App handles, when the pool is an app's.
    pub app: Option<AppHandles>,
    /// Series per scope.
    pub scopes: Vec<ScopeSeries>,
}

#[derive(PartialEq, Eq)]
struct OwnedShape {
    listener: String,
    pool: String,
    settings: String,
    server: String,
    status: u16,
    server_status: Option<u16>,
    error_info: String,
    app: Option<String>,
    failed: bool,
    connected: bool,
    first_byte: bool,
}

impl OwnedShape {
    fn of(s: &Shape<'_>) -> Self {
        OwnedShape {
            listener: s.listener.to_string(),
            pool: s.pool.to_string(),
            settings: s.settings.to_string(),
            server: s.server.to_string(),
            status: s.status,
            server_status: s.server_status,
            error_info: s.error_info.to_string(),
            app: s.app.map(str::to_string),
            failed: s.failed,
            connected: s.connected,
            first_byte: s.first_byte,
        }
    }

    /// The borrowed view, compared with the derived `PartialEq` of [`Shape`] so
    /// that a field added to the shape cannot be forgotten here.
    fn as_shape(&self) -> Shape<'_> {
        Shape {
            listener: &self.listener,
            pool: &self.pool,
            settings: &self.settings,
            server: &self.server,
            status: self.status,
            server_status: self.server_status,
            error_info: &self.error_info,
            app: self.app.as_deref(),
            failed: self.failed,
            connected: self.connected,
            first_byte: self.first_byte,
        }
    }

    fn is(&self, s: &Shape<'_>) -> bool {
        self.as_shape() == *s
    }
}

/// Shape → handles.
pub struct HandleCache {
    map: RwLock<FxHashMap<u64, Vec<Arc<Handles>>>>,
    /// This cache among the process's caches (the per-thread entries name it).
    id: u64,
    /// Bumped whenever shapes are forgotten: per-thread entries made before
    /// are not used again.
    generation: AtomicU64,
}

impl Default for HandleCache {
    fn default() -> Self {
        HandleCache {
            map: RwLock::default(),
            id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
        }
    }
}

/// Identities of the caches.
static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

/// How many shapes each thread keeps at hand ([`HandleCache::with`]): a pool's
/// servers in turn are as many shapes.
const RECENT: usize = 8;

/// A shape a thread used lately, and its handles.
struct Recent {
    cache: u64,
    generation: u64,
    handles: Arc<Handles>,
}

thread_local! {
    /// This thread's recent shapes, the newest last.
    static RECENT_SHAPES: RefCell<Vec<Recent>> = const { RefCell::new(Vec::new()) };
}

/// The shape's key in the cache. FxHash: the fields are the gateway's own names,
/// addresses and codes, not attacker-chosen text, and SipHash cost 0.6 % of a
/// small request's CPU.
fn hash_of(s: &Shape<'_>) -> u64 {
    let mut h = FxHasher::default();
    s.hash(&mut h);
    h.finish()
}

impl HandleCache {
    /// Runs `f` with the handles of `shape` (made on first use), from the
    /// thread's recent shapes when it is one of them: no lock taken and no
    /// reference count moved, where [`HandleCache::get`] takes the map's read
    /// lock and clones an `Arc`, four locked instructions (about 17 ns on
    /// the benchmark VM, docs/benchmarks.md §2).
    pub fn with<R>(
        &self,
        shape: &Shape<'_>,
        m: &Metrics,
        series: &SeriesStore,
        mut f: impl FnMut(&Handles) -> R,
    ) -> R {
        let generation = self.generation.load(Ordering::Relaxed);
        let hit = RECENT_SHAPES
            .try_with(|recent| {
                let recent = recent.try_borrow().ok()?;
                // Compared field by field, without a hash: the request's shape is
                // nearly always one of the newest, and a hash of its text cost
                // more than the comparisons it would spare.
                let r = recent.iter().rev().find(|r| {
                    r.cache == self.id && r.generation == generation && r.handles.key.is(shape)
                })?;
                Some(f(&r.handles))
            })
            .ok()
            .flatten();
        if let Some(out) = hit {
            return out;
        }
        let handles = self.get(shape, m, series);
        let _ = RECENT_SHAPES.try_with(|recent| {
            if let Ok(mut recent) = recent.try_borrow_mut() {
                recent.retain(|r| r.cache != self.id || r.generation == generation);
                if recent.len() >= RECENT {
                    recent.remove(0);
                }
                recent.push(Recent {
                    cache: self.id,
                    generation,
                    handles: handles.clone(),
                });
            }
        });
        f(&handles)
    }

    /// The handles of `shape`, made on first use.
    pub fn get(&self, shape: &Shape<'_>, m: &Metrics, series: &SeriesStore) -> Arc<Handles> {
        let h = hash_of(shape);
        if let Ok(map) = self.map.read() {
            if let Some(found) = map.get(&h).and_then(|v| v.iter().find(|x| x.key.is(shape))) {
                return found.clone();
            }
        }
        let made = Arc::new(make(shape, m, series));
        let mut map = match self.map.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if map.len() >= MAX_SHAPES {
            map.clear();
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
        map.entry(h).or_default().push(made.clone());
        made
    }

    /// Forgets every shape whose server is not in `live` (`IP:port` strings) and
    /// removes that server's label sets from the server-level families
    /// (`portcullis_backend_*_time_seconds`, `portcullis_backend_responses_total`),
    /// so `/metrics` does not grow with servers that are gone (an app instance
    /// gets a new port at every start). Label sets of a server whose shapes were
    /// already dropped by a full cache are not found and stay.
    pub fn prune_servers(&self, live: &std::collections::HashSet<String>, m: &Metrics) {
        let mut map = match self.map.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        for list in map.values_mut() {
            list.retain(|h| {
                let k = &h.key;
                if k.server == "-" || live.contains(&k.server) {
                    return true;
                }
                let labels = ServerL {
                    listener: k.listener.clone(),
                    pool: k.pool.clone(),
                    settings: k.settings.clone(),
                    server: k.server.clone(),
                };
                m.connect_time.remove(&labels);
                m.first_byte.remove(&labels);
                m.last_byte.remove(&labels);
                if let Some(code) = k.server_status {
                    m.backend_status.remove(&ServerStatusL {
                        pool: k.pool.clone(),
                        server: k.server.clone(),
                        status_class: status_class(code).into(),
                    });
                }
                false
            });
        }
        map.retain(|_, list| !list.is_empty());
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of shapes held.
    pub fn len(&self) -> usize {
        self.map
            .read()
            .map(|m| m.values().map(Vec::len).sum())
            .unwrap_or(0)
    }

    /// Whether no shape is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn make(s: &Shape<'_>, m: &Metrics, series: &SeriesStore) -> Handles {
    let listener = s.listener.to_string();
    let class = status_class(s.status);
    let l = ListenerL {
        listener: listener.clone(),
    };
    let has_pool = !s.pool.is_empty();
    let server = (s.server != "-").then(|| {
        let labels = ServerL {
            listener: listener.clone(),
            pool: s.pool.to_string(),
            settings: s.settings.to_string(),
            server: s.server.to_string(),
        };
        ServerHandles {
            connect: s
                .connected
                .then(|| m.connect_time.get_or_create(&labels).clone()),
            first_last_byte: s.first_byte.then(|| {
                (
                    m.first_byte.get_or_create(&labels).clone(),
                    m.last_byte.get_or_create(&labels).clone(),
                )
            }),
            status: s.server_status.map(|code| {
                m.backend_status
                    .get_or_create(&ServerStatusL {
                        pool: s.pool.to_string(),
                        server: s.server.to_string(),
                        status_class: status_class(code).into(),
                    })
                    .clone()
            }),
        }
    });
    let app = s.app.map(|app| AppHandles {
        requests: m
            .app_requests
            .get_or_create(&AppStatusL {
                app: app.to_string(),
                status_class: class.into(),
            })
            .clone(),
        code: m
            .app_codes
            .get_or_create(&AppCodeL {
                app: app.to_string(),
                code: s.status.to_string(),
            })
            .clone(),
        response_time: m
            .app_response_time
            .get_or_create(&AppL {
                app: app.to_string(),
            })
            .clone(),
    });
    let class_series = match s.status / 100 {
        2 => Some("http_2xx"),
        3 => Some("http_3xx"),
        4 => Some("http_4xx"),
        5 => Some("http_5xx"),
        _ => None,
    };
    let mut scopes = Vec::with_capacity(3);
    let mut add = |kind: &'static str, name: &str| {
        scopes.push(ScopeSeries {
            requests: series.series("requests", kind, name),
            response_time: series.series("response_time", kind, name),
            failed: s
                .failed
                .then(|| series.series("failed_requests", kind, name)),
            class: class_series.map(|c| series.series(c, kind, name)),
        })
    };
    if !s.listener.is_empty() {
        add("listener", s.listener);
    }
    if has_pool {
        add("pool", s.pool);
    }
    if let Some(app) = s.app {
        add("app", app);
    }
    Handles {
        key: OwnedShape::of(s),
        requests: m
            .requests
            .get_or_create(&StatusL {
                listener: listener.clone(),
                status_class: class.into(),
            })
            .clone(),
        failed: s.failed.then(|| m.failed.get_or_create(&l).clone()),
        errors: m
            .errors
            .get_or_create(&ErrorL {
                listener: listener.clone(),
                error_info: s.error_info.to_string(),
            })
            .clone(),
        received: m.received.get_or_create(&l).clone(),
        sent: m.sent.get_or_create(&l).clone(),
        total_time: has_pool.then(|| {
            m.total_time
                .get_or_create(&BackendL {
                    listener,
                    pool: s.pool.to_string(),
                    settings: s.settings.to_string(),
                })
                .clone()
        }),
        server,
        app,
        scopes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape<'a>(listener: &'a str, status: u16) -> Shape<'a> {
        Shape {
            listener,
            pool: "pool",
            settings: "s",
            server: "127.0.0.1:1",
            status,
            server_status: Some(status),
            error_info: "ERRORINFO_NO_ERROR",
            app: None,
            failed: false,
            connected: true,
            first_byte: true,
        }
    }

    #[test]
    fn same_shape_shares_handles_and_counts_land_in_the_families() {
        let (m, series, cache) = (
            Metrics::default(),
            SeriesStore::default(),
            HandleCache::default(),
        );
        let a = cache.get(&shape("l", 200), &m, &series);
        let b = cache.get(&shape("l", 200), &m, &series);
        assert!(Arc::ptr_eq(&a, &b));
        let c = cache.get(&shape("l", 502), &m, &series);
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(cache.len(), 2);
        a.requests.inc();
        b.requests.inc();
        let family_value = m
            .requests
            .get_or_create(&StatusL {
                listener: "l".into(),
                status_class: "2xx".into(),
            })
            .get();
        assert_eq!(family_value, 2);
    }

    #[test]
    fn servers_that_are_gone_leave_the_families() {
        let (m, series, cache) = (
            Metrics::default(),
            SeriesStore::default(),
            HandleCache::default(),
        );
        let mut gone = shape("l", 200);
        gone.server = "127.0.0.1:2";
        cache
            .get(&gone, &m, &series)
            .server
            .as_ref()
            .expect("server")
            .status
            .as_ref()
            .expect("status")
            .inc();
        cache.get(&shape("l", 200), &m, &series);
        let text = |m: &Metrics| {
            let mut reg = prometheus_client::registry::Registry::default();
            reg.register("b", "b", m.backend_status.clone());
            reg.register("c", "c", m.connect_time.clone());
            let mut out = String::new();
            let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
            out
        };
        assert!(text(&m).contains("127.0.0.1:2"));
        let live: std::collections::HashSet<String> = ["127.0.0.1:1".to_string()].into();
        cache.prune_servers(&live, &m);
        assert_eq!(cache.len(), 1);
        let after = text(&m);
        assert!(!after.contains("127.0.0.1:2"), "{after}");
        assert!(after.contains("127.0.0.1:1"), "{after}");
    }

    #[test]
    fn recent_shapes_give_the_cached_handles_until_shapes_are_forgotten() {
        let (m, series, cache) = (
            Metrics::default(),
            SeriesStore::default(),
            HandleCache::default(),
        );
        let addr = |h: &Handles| h as *const Handles as usize;
        let a = cache.get(&shape("l", 200), &m, &series);
        for _ in 0..3 {
            let got = cache.with(&shape("l", 200), &m, &series, addr);
            assert_eq!(got, Arc::as_ptr(&a) as usize);
        }
        // More shapes in turn than a thread keeps: each still meets its own.
        let names: Vec<String> = (0..RECENT + 3).map(|i| format!("s{i}")).collect();
        for _ in 0..3 {
            for n in &names {
                let got = cache.with(&shape(n, 200), &m, &series, addr);
                let want = cache.get(&shape(n, 200), &m, &series);
                assert_eq!(got, Arc::as_ptr(&want) as usize, "{n}");
            }
        }
        // A forgotten shape is not served from the thread's entries.
        let mut gone = shape("l", 200);
        gone.server = "127.0.0.1:2";
        let before = cache.with(&gone, &m, &series, |h| {
            h.requests.inc();
            addr(h)
        });
        let live: std::collections::HashSet<String> = ["127.0.0.1:1".to_string()].into();
        cache.prune_servers(&live, &m);
        let after = cache.with(&gone, &m, &series, addr);
        let now = cache.get(&gone, &m, &series);
        assert_eq!(after, Arc::as_ptr(&now) as usize);
        assert_ne!(before, after, "made again after it was forgotten");
    }

    #[test]
    fn the_cache_stays_bounded() {
        let (m, series, cache) = (
            Metrics::default(),
            SeriesStore::default(),
            HandleCache::default(),
        );
        let names: Vec<String> = (0..MAX_SHAPES + 10).map(|i| format!("l{i}")).collect();
        for n in &names {
            cache.get(&shape(n, 200), &m, &series);
        }
        assert!(cache.len() <= MAX_SHAPES);
    }
}
