//! Requests seen per endpoint and the peak number in flight at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::endpoint::Endpoint;
use crate::faults::FaultControl;

#[derive(Default)]
pub struct Stats {
    requests: [AtomicU64; Endpoint::ALL.len()],
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    /// Unix microseconds of the first request since start or reset (0: none yet).
    first_request_us: AtomicU64,
    /// Every API request's path and query since start or reset, in arrival order: what a plain
    /// download of the same answers must fetch (the bench's baseline).
    log: std::sync::Mutex<Vec<(Endpoint, String)>>,
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Decrements the in-flight count when the request is done, however it ends.
pub struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Stats {
    pub fn begin(&self, endpoint: Endpoint, target: &str) -> InFlight<'_> {
        self.log
            .lock()
            .expect("the request log is never poisoned")
            .push((endpoint, target.to_string()));
        if self.first_request_us.load(Ordering::Relaxed) == 0 {
            let _ = self.first_request_us.compare_exchange(
                0,
                unix_us(),
                Ordering::SeqCst,
                Ordering::Relaxed,
            );
        }
        self.requests[endpoint.index()].fetch_add(1, Ordering::Relaxed);
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(self)
    }

    pub fn reset(&self) {
        for r in &self.requests {
            r.store(0, Ordering::Relaxed);
        }
        self.peak_in_flight
            .store(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
        self.first_request_us.store(0, Ordering::SeqCst);
        self.log
            .lock()
            .expect("the request log is never poisoned")
            .clear();
    }

    /// The requests since start or reset, each as its endpoint and path with query.
    pub fn requests(&self) -> Vec<(Endpoint, String)> {
        self.log
            .lock()
            .expect("the request log is never poisoned")
            .clone()
    }

    pub fn snapshot(&self, faults: &FaultControl) -> TrafficSnapshot {
        let per_endpoint = |f: &dyn Fn(Endpoint) -> u64| -> BTreeMap<String, u64> {
            Endpoint::ALL
                .iter()
                .map(|e| (e.name().to_string(), f(*e)))
                .filter(|(_, n)| *n > 0)
                .collect()
        };
        let fired = |e: Endpoint| &faults.fired[e.index()];
        TrafficSnapshot {
            requests: per_endpoint(&|e| self.requests[e.index()].load(Ordering::Relaxed)),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            peak_in_flight: self.peak_in_flight.load(Ordering::SeqCst),
            first_request_unix_us: Some(self.first_request_us.load(Ordering::SeqCst))
                .filter(|&us| us > 0),
            faults_fired: FaultsFired {
                rate_limited: per_endpoint(&|e| fired(e).rate_limited.load(Ordering::Relaxed)),
                server_errors: per_endpoint(&|e| fired(e).server_errors.load(Ordering::Relaxed)),
                forbidden: per_endpoint(&|e| fired(e).forbidden.load(Ordering::Relaxed)),
                resets: per_endpoint(&|e| fired(e).resets.load(Ordering::Relaxed)),
                truncated: per_endpoint(&|e| fired(e).truncated.load(Ordering::Relaxed)),
                malformed: per_endpoint(&|e| fired(e).malformed.load(Ordering::Relaxed)),
                untyped: per_endpoint(&|e| fired(e).untyped.load(Ordering::Relaxed)),
                refused_past_end: per_endpoint(&|e| {
                    fired(e).refused_past_end.load(Ordering::Relaxed)
                }),
            },
        }
    }
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct TrafficSnapshot {
    /// Requests seen per endpoint (endpoints with none are left out).
    pub requests: BTreeMap<String, u64>,
    pub in_flight: u64,
    pub peak_in_flight: u64,
    /// When the first request since start or reset arrived (Unix microseconds).
    pub first_request_unix_us: Option<u64>,
    pub faults_fired: FaultsFired,
}

impl TrafficSnapshot {
    pub fn requests_to(&self, endpoint: Endpoint) -> u64 {
        self.requests.get(endpoint.name()).copied().unwrap_or(0)
    }
}

#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct FaultsFired {
    pub rate_limited: BTreeMap<String, u64>,
    pub server_errors: BTreeMap<String, u64>,
    pub forbidden: BTreeMap<String, u64>,
    pub resets: BTreeMap<String, u64>,
    pub truncated: BTreeMap<String, u64>,
    pub malformed: BTreeMap<String, u64>,
    #[serde(default)]
    pub untyped: BTreeMap<String, u64>,
    /// Pages past the end refused (the fault `past-end`).
    #[serde(default)]
    pub refused_past_end: BTreeMap<String, u64>,
}
