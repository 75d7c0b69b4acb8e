//! The meeting point of the app host and the gateway, which never call each other
//! (ARCHITECTURE.md): the host *publishes* each app's state and ready instance
//! addresses here; the gateway's app pools *read* the latest snapshot per
//! request. Two shared counters flow the other way as plain data: how many
//! requests are in flight on each instance (the host waits for zero before it
//! stops a drained instance) and each app's admission queue
//! (`max_concurrent_requests`, `queue_length`, `queue_timeout`).

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Whether an app is meant to run (section 6: `Running`, `Stopped`, `Starting`, `Degraded`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum AppState {
    /// All wanted instances are ready.
    Running,
    /// Stopped by the user: the gateway answers 503 `ERRORINFO_APP_STOPPED`.
    Stopped,
    /// Instances are starting; fewer ready than wanted.
    Starting,
    /// Instances keep failing (crash loop, backoff).
    Degraded,
}

impl AppState {
    /// `Running`, `Stopped`, …
    pub fn as_str(self) -> &'static str {
        match self {
            AppState::Running => "Running",
            AppState::Stopped => "Stopped",
            AppState::Starting => "Starting",
            AppState::Degraded => "Degraded",
        }
    }
}

/// What the gateway needs to route to an app: its state and ready instances.
#[derive(Debug, Clone)]
pub struct AppView {
    /// The app's state.
    pub state: AppState,
    /// Addresses of instances that passed their readiness check and are in rotation.
    pub ready: Vec<SocketAddr>,
}

/// A published, atomically replaced view of one app.
pub type AppSlot = Arc<ArcSwap<AppView>>;

/// All published apps, by name. Created once per process.
#[derive(Default, Debug)]
pub struct AppRegistry {
    slots: RwLock<HashMap<String, AppSlot>>,
    in_flight: Mutex<HashMap<SocketAddr, Arc<AtomicUsize>>>,
    admissions: Mutex<HashMap<String, Arc<Admission>>>,
}

impl AppRegistry {
    /// The slot of `name`, created (state Starting, no instance) if new.
    pub fn slot(&self, name: &str) -> AppSlot {
        if let Ok(r) = self.slots.read() {
            if let Some(s) = r.get(name) {
                return s.clone();
            }
        }
        let mut w = match self.slots.write() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        };
        w.entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(ArcSwap::from_pointee(AppView {
                    state: AppState::Starting,
                    ready: Vec::new(),
                }))
            })
            .clone()
    }

    /// Replaces the published view of `name`.
    pub fn publish(&self, name: &str, view: AppView) {
        self.slot(name).store(Arc::new(view));
    }

    /// The in-flight counter of an instance address (shared with the gateway).
    pub fn in_flight(&self, addr: SocketAddr) -> Arc<AtomicUsize> {
        let mut m = match self.in_flight.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(addr).or_default().clone()
    }

    /// Forgets the counter of an instance that is gone.
    pub fn forget(&self, addr: SocketAddr) {
        if let Ok(mut m) = self.in_flight.lock() {
            m.remove(&addr);
        }
    }

    /// The admission queue of app `name`.
    pub fn admission(&self, name: &str) -> Arc<Admission> {
        let mut m = match self.admissions.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(name.to_string()).or_default().clone()
    }
}

/// App-wide admission for `max_concurrent_requests` per instance: at most
/// `limit × ready instances` requests run; up to `queue_length` more wait (at most
/// `queue_timeout`); beyond that, 503 `ERRORINFO_APP_OVERLOADED`.
///
/// The queue is first come, first served: a freed slot goes straight to the
/// request that has waited longest, and a newcomer runs at once only while
/// nobody waits (as App Service's front ends and HAProxy's `maxconn` queue do).
#[derive(Default, Debug)]
pub struct Admission {
    state: Mutex<AdmissionState>,
}

#[derive(Default, Debug)]
struct AdmissionState {
    running: usize,
    /// Waiters in arrival order: (ticket, the capacity it was asked under, its wake-up).
    queue: std::collections::VecDeque<(u64, usize, tokio::sync::oneshot::Sender<()>)>,
    next_ticket: u64,
}

impl AdmissionState {
    /// Takes waiter `ticket` out of the queue; false when it is no longer
    /// there (a slot was granted to it).
    fn leave(&mut self, ticket: u64) -> bool {
        match self.queue.iter().position(|w| w.0 == ticket) {
            Some(pos) => {
                self.queue.remove(pos);
                true
            }
            None => false,
        }
    }

    /// Hands free slots to the waiters at the head of the queue.
    fn grant(&mut self) {
        while let Some((_, capacity, _)) = self.queue.front() {
            if self.running >= *capacity {
                return;
            }
            let Some((_, _, wake)) = self.queue.pop_front() else {
                return;
            };
            self.running += 1;
            if wake.send(()).is_err() {
                // That waiter is gone (its request was dropped): next one.
                self.running -= 1;
            }
        }
    }
}

/// A running slot; gives it back when dropped.
#[derive(Debug)]
pub struct Permit(Arc<Admission>);

impl Drop for Permit {
    fn drop(&mut self) {
        if let Ok(mut st) = self.0.state.lock() {
            st.running = st.running.saturating_sub(1);
            st.grant();
        }
    }
}

/// Takes a waiter out of the queue if its request is dropped while it waits;
/// a slot granted to it in that instant is given back. Holds the waiter's
/// receiving end, so a grant can never be lost between the wait and this check.
struct Waiting<'a> {
    admission: &'a Arc<Admission>,
    ticket: u64,
    granted: tokio::sync::oneshot::Receiver<()>,
    done: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(mut st) = self.admission.state.lock() {
            if !st.leave(self.ticket) && self.granted.try_recv().is_ok() {
                // Granted just now: the slot is ours to give back.
                st.running = st.running.saturating_sub(1);
            }
            st.grant();
        }
    }
}

impl Admission {
    /// Waits for a running slot. Err(()) when the queue is full or the wait timed out.
    pub async fn acquire(
        self: &Arc<Self>,
        capacity: usize,
        queue_length: usize,
        queue_timeout: Duration,
    ) -> Result<Permit, ()> {
        let (ticket, granted) = {
            let mut st = self.state.lock().map_err(|_| ())?;
            // Slots freed for a larger capacity (more instances) go to the queue first.
            st.grant();
            if st.running < capacity && st.queue.is_empty() {
                st.running += 1;
                return Ok(Permit(self.clone()));
            }
            if st.queue.len() >= queue_length {
                return Err(());
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            let ticket = st.next_ticket;
            st.next_ticket += 1;
            st.queue.push_back((ticket, capacity, tx));
            (ticket, rx)
        };
        let mut waiting = Waiting {
            admission: self,
            ticket,
            granted,
            done: false,
        };
        let got = tokio::time::timeout(queue_timeout, &mut waiting.granted).await;
        let mut st = self.state.lock().map_err(|_| ())?;
        waiting.done = true;
        if matches!(got, Ok(Ok(()))) {
            return Ok(Permit(self.clone()));
        }
        if st.leave(ticket) {
            st.grant();
            return Err(());
        }
        // Not queued any more: granted as the wait ran out (the receiver was
        // kept, so the grant went through and the slot is counted).
        if waiting.granted.try_recv().is_ok() {
            Ok(Permit(self.clone()))
        } else {
            Err(())
        }
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.state.lock().map(|st| st.queue.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn admits_queues_and_refuses_exactly_at_the_limits() {
        let a = Arc::new(Admission::default());
        let t = Duration::from_millis(200);
        let p1 = a.acquire(2, 1, t).await.expect("1st runs");
        let _p2 = a.acquire(2, 1, t).await.expect("2nd runs");
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.acquire(2, 1, Duration::from_secs(5)).await.ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(a.waiting(), 1);
        assert!(a.acquire(2, 1, t).await.is_err(), "queue full");
        drop(p1);
        let _p3 = waiter
            .await
            .expect("join")
            .expect("queued request runs when a slot frees");
        assert!(a.acquire(2, 0, t).await.is_err());
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_longest_waiter_not_a_newcomer() {
        let a = Arc::new(Admission::default());
        let p1 = a.acquire(1, 2, Duration::from_secs(1)).await.expect("runs");
        let first = {
            let a = a.clone();
            tokio::spawn(async move { a.acquire(1, 2, Duration::from_secs(5)).await.ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(p1);
        // The slot was handed to the queued request: a newcomer waits.
        assert!(a.acquire(1, 2, Duration::from_millis(30)).await.is_err());
        let p2 = first.await.expect("join").expect("the first waiter runs");
        assert_eq!(a.waiting(), 0);
        // A waiter whose request is dropped leaves the queue.
        let gone = {
            let a = a.clone();
            tokio::spawn(async move { a.acquire(1, 2, Duration::from_secs(5)).await.ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(a.waiting(), 1);
        gone.abort();
        let _ = gone.await;
        assert_eq!(a.waiting(), 0);
        drop(p2);
        assert!(a.acquire(1, 0, Duration::from_millis(10)).await.is_ok());
    }

    #[tokio::test]
    async fn queue_wait_times_out() {
        let a = Arc::new(Admission::default());
        let _p = a
            .acquire(1, 5, Duration::from_millis(10))
            .await
            .expect("runs");
        assert!(a.acquire(1, 5, Duration::from_millis(30)).await.is_err());
        assert_eq!(a.waiting(), 0);
    }
}
