//! The proxy-wasm layer: reads headers and properties from Envoy, hands them
//! to [`crate::logic`], writes the results back, and keeps metric ids.
//!
//! Only `proxy_wasm::hostcalls` are used, with every error handled: the SDK's
//! convenience getters unwrap host errors, and a panic would take down every
//! plugin sharing this VM.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

use crate::BUILD;
use crate::config::PluginConfig;
use crate::cookie::{self, NEW_ID_LEN};
use crate::logic::{
    CompiledRole, Filter, Gateway, GatewayRequest, Identity, OverrideOutcome, Sidecar,
};
use crate::metrics::{CohortLabel, Kind, Metric, MetricSet, Prediction, ResponseClass};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // After set_log_level, which installs the SDK's own hook (one that
    // unwraps the log call).
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(LogLevel::Critical, &format!("sms-checker-filter panicked: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { shared: None }) });
}}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// The compiled config and its metric-id cache, shared by every request of
/// one configuration.
struct Shared {
    filter: Filter,
    /// One defined metric id per [`MetricSet`] slot, defined on first use so
    /// that only series that happen show up in Prometheus.
    metric_ids: Vec<Cell<Option<u32>>>,
    /// Counter increments not yet handed to Envoy, per slot. Counting in Wasm
    /// memory and flushing once per tick takes two host calls off every
    /// request; Prometheus scrapes far less often than the flush.
    pending: Vec<Cell<u64>>,
    /// Set by the gateway's `clearRouteCache`; cleared after the first
    /// `NotFound`, so hosts without the foreign function are not asked on
    /// every request.
    clear_route_cache: Cell<bool>,
}

/// How often counted increments are flushed to Envoy's counters.
const FLUSH_PERIOD: Duration = Duration::from_secs(1);

impl Shared {
    fn metric_id(&self, metric: Metric) -> Option<u32> {
        let slot = self.filter.metrics.slot(metric);
        self.metric_id_at(slot, metric)
    }

    fn metric_id_at(&self, slot: usize, metric: Metric) -> Option<u32> {
        let cell = self.metric_ids.get(slot)?;
        if let Some(id) = cell.get() {
            return Some(id);
        }
        let kind = match MetricSet::kind(metric) {
            Kind::Counter => MetricType::Counter,
            Kind::Histogram => MetricType::Histogram,
        };
        let name = self.filter.metrics.name(metric);
        match hostcalls::define_metric(kind, &name) {
            Ok(id) => {
                cell.set(Some(id));
                Some(id)
            }
            Err(status) => {
                log(LogLevel::Warn, &format!("define metric {name}: {status:?}"));
                None
            }
        }
    }

    /// Counts one event; Envoy sees it at the next flush.
    fn increment(&self, metric: Metric) {
        if let Some(cell) = self.pending.get(self.filter.metrics.slot(metric)) {
            cell.set(cell.get().saturating_add(1));
        }
    }

    /// Hands every pending increment to Envoy.
    fn flush(&self) {
        for (slot, cell) in self.pending.iter().enumerate() {
            let delta = cell.get();
            if delta == 0 {
                continue;
            }
            let Some(metric) = self.filter.metrics.metric_at(slot) else {
                continue;
            };
            if let Some(id) = self.metric_id_at(slot, metric) {
                let offset = i64::try_from(delta).unwrap_or(i64::MAX);
                if hostcalls::increment_metric(id, offset).is_ok() {
                    cell.set(0);
                }
            }
        }
    }

    fn record(&self, metric: Metric, value: u64) {
        if let Some(id) = self.metric_id(metric) {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    fn clear_route_cache(&self) {
        if self.clear_route_cache.get()
            && hostcalls::call_foreign_function("clear_route_cache", None).is_err()
        {
            self.clear_route_cache.set(false);
        }
    }
}

struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        log(
            LogLevel::Info,
            &format!("sms-checker-filter {BUILD} starting"),
        );
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let config = match PluginConfig::from_json(&bytes) {
            Ok(config) => config,
            Err(err) => {
                log(LogLevel::Error, &format!("sms-checker-filter: {err}"));
                return false;
            }
        };
        let node_version = match config.role_kind() {
            crate::config::RoleKind::Sidecar => node_version_label(),
            crate::config::RoleKind::Gateway => None,
        };
        let filter = Filter::new(config, node_version.as_deref());
        log(
            LogLevel::Info,
            &format!(
                "sms-checker-filter {BUILD} configured: role={} experiment={} cohorts=[{}]{}",
                filter.config.role_kind().as_str(),
                filter.config.experiment,
                filter
                    .config
                    .cohorts
                    .iter()
                    .map(|c| format!("{}:{}", c.name, c.weight))
                    .collect::<Vec<_>>()
                    .join(", "),
                match filter.role {
                    CompiledRole::Sidecar(_) => format!(" version={}", filter.metrics.version()),
                    CompiledRole::Gateway(_) => String::new(),
                }
            ),
        );
        let slots = filter.metrics.len();
        let clear_route_cache = match &filter.role {
            CompiledRole::Gateway(gateway) => gateway.config.clear_route_cache,
            CompiledRole::Sidecar(_) => false,
        };
        // Counts of a previous configuration still belong to its series.
        if let Some(old) = &self.shared {
            old.flush();
        }
        self.shared = Some(Rc::new(Shared {
            filter,
            metric_ids: (0..slots).map(|_| Cell::new(None)).collect(),
            pending: (0..slots).map(|_| Cell::new(0)).collect(),
            clear_route_cache: Cell::new(clear_route_cache),
        }));
        if let Err(status) = hostcalls::set_tick_period(FLUSH_PERIOD) {
            log(
                LogLevel::Error,
                &format!(
                    "sms-checker-filter: no tick ({status:?}), counters would never be flushed"
                ),
            );
            return false;
        }
        true
    }

    fn on_tick(&mut self) {
        if let Some(shared) = &self.shared {
            shared.flush();
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = self.shared.clone()?;
        Some(Box::new(Stream {
            shared,
            started: false,
            start_ns: 0,
            cohort: 0,
            new_id: None,
            class: ResponseClass::None,
            sidecar_cohort: CohortLabel::None,
            mirrored: false,
            prediction: Prediction::None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The pod's `version` label, which Istio copies into node metadata.
///
/// Istio's proxy serves the node under `node`; upstream Envoy (1.40
/// included) only under `xds.node`. Both are tried, Istio's first.
fn node_version_label() -> Option<String> {
    const PATHS: [&[&str]; 2] = [
        &["node", "metadata", "LABELS", "version"],
        &["xds", "node", "metadata", "LABELS", "version"],
    ];
    PATHS.iter().find_map(|path| {
        let bytes = hostcalls::get_property(path.to_vec()).ok().flatten()?;
        String::from_utf8(bytes).ok().filter(|v| !v.is_empty())
    })
}

/// Per-request state.
struct Stream {
    shared: Rc<Shared>,
    /// Request headers were seen: the stream is one to count.
    started: bool,
    start_ns: u64,
    cohort: usize,
    new_id: Option<[u8; NEW_ID_LEN]>,
    class: ResponseClass,
    sidecar_cohort: CohortLabel,
    mirrored: bool,
    prediction: Prediction,
}

fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64)
}

// One host call per header read: in Envoy 1.40 this measured cheaper than
// fetching the whole map with proxy_get_header_map_pairs (about 0.7 against
// 2.5 microseconds of worker CPU per request), which serializes every header.
fn request_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
}

fn response_header(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
        .ok()
        .flatten()
}

/// A new id; if the random source fails, one derived from the clock and a
/// counter, still unique per VM and spread evenly by the assignment hash.
fn fresh_id() -> [u8; NEW_ID_LEN] {
    if let Some(id) = cookie::new_id() {
        return id;
    }
    thread_local!(static COUNTER: Cell<u64> = const { Cell::new(0) });
    let n = COUNTER.with(|c| {
        c.set(c.get().wrapping_add(1));
        c.get()
    });
    log(
        LogLevel::Warn,
        "random source failed; deriving a user id from the clock",
    );
    cookie::id_from_seed(now_ns(), n)
}

/// Milliseconds, rounded to nearest: proxy-wasm histograms take integers.
fn elapsed_ms(start_ns: u64) -> u64 {
    now_ns().saturating_sub(start_ns).saturating_add(500_000) / 1_000_000
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.started = true;
        self.start_ns = now_ns();
        let shared = Rc::clone(&self.shared);
        let filter = &shared.filter;
        match &filter.role {
            CompiledRole::Gateway(gateway) => self.gateway_request(&shared, gateway),
            CompiledRole::Sidecar(sidecar) => {
                let cohort = request_header(&filter.config.cohort_header);
                self.sidecar_cohort = Sidecar::cohort_label(&filter.config, cohort.as_deref());
                self.mirrored = sidecar.is_mirrored(request_header(":authority").as_deref());
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let shared = Rc::clone(&self.shared);
        match &shared.filter.role {
            CompiledRole::Gateway(gateway) => {
                let status =
                    hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, ":status");
                self.class = ResponseClass::from_status(status.ok().flatten().as_deref());
                let cohort = shared.filter.cohort_name(self.cohort);
                let _ = hostcalls::set_map_value(
                    MapType::HttpResponseHeaders,
                    &gateway.config.response_header,
                    Some(cohort),
                );
                if let Some(id) = &self.new_id {
                    let id = std::str::from_utf8(id).unwrap_or_default();
                    let _ = hostcalls::add_map_value(
                        MapType::HttpResponseHeaders,
                        "set-cookie",
                        &gateway.set_cookie.header_value(id),
                    );
                }
            }
            CompiledRole::Sidecar(sidecar) => {
                self.class = ResponseClass::from_status(response_header(":status").as_deref());
                self.prediction = Prediction::from_header(
                    response_header(&sidecar.config.prediction_header).as_deref(),
                );
            }
        }
        Action::Continue
    }
}

/// A stream is counted when Envoy deletes its context (`proxy_on_delete`,
/// after the access-log phase, for every stream, answered or reset). The
/// module exports no `proxy_on_log` (see `WASM_UNUSED_EXPORTS` in
/// `mk/filter.mk`), which spares Envoy one call into Wasm per request.
impl Drop for Stream {
    fn drop(&mut self) {
        if !self.started {
            return;
        }
        let ms = elapsed_ms(self.start_ns);
        let shared = &self.shared;
        match shared.filter.role {
            CompiledRole::Gateway(_) => {
                shared.increment(Metric::GatewayRequests {
                    cohort: self.cohort,
                    class: self.class,
                });
                shared.record(
                    Metric::GatewayDuration {
                        cohort: self.cohort,
                    },
                    ms,
                );
            }
            CompiledRole::Sidecar(_) => {
                shared.increment(Metric::SidecarRequests {
                    cohort: self.sidecar_cohort,
                    class: self.class,
                    prediction: self.prediction,
                    mirrored: self.mirrored,
                });
                shared.record(
                    Metric::SidecarDuration {
                        mirrored: self.mirrored,
                    },
                    ms,
                );
            }
        }
    }
}

impl Stream {
    fn gateway_request(&mut self, shared: &Shared, gateway: &Gateway) {
        let config = &shared.filter.config;
        let user_id = gateway
            .config
            .user_id_header
            .as_deref()
            .and_then(request_header);
        // Envoy hands over the first Cookie header (HTTP/2 cookie crumbs are
        // joined into one by its codec).
        let cookie = request_header("cookie");
        let override_cohort = gateway
            .config
            .override_
            .as_ref()
            .and_then(|o| request_header(&o.header));
        // The token matters only with an override request.
        let override_token = match (&gateway.config.override_, &override_cohort) {
            (Some(o), Some(_)) => request_header(&o.token_header),
            _ => None,
        };
        let decision = gateway.decide(
            config,
            GatewayRequest {
                user_id: user_id.as_deref(),
                cookie: cookie.as_deref(),
                override_cohort: override_cohort.as_deref(),
                override_token: override_token.as_deref(),
            },
            fresh_id,
        );
        self.cohort = decision.cohort;

        // Replace, never append: a client-sent value must not pick the route.
        let _ = hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            &config.cohort_header,
            Some(shared.filter.cohort_name(decision.cohort)),
        );
        if let Some(o) = &gateway.config.override_ {
            // The token is a secret: it goes no further than the gateway,
            // whether or not an override was asked for.
            if override_cohort.is_some() {
                let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, &o.header);
            }
            let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, &o.token_header);
        }
        shared.clear_route_cache();

        let returning = match decision.identity {
            Identity::New(id) => {
                self.new_id = Some(id);
                false
            }
            Identity::Header | Identity::Cookie => true,
        };
        shared.increment(Metric::GatewayUsers {
            cohort: decision.cohort,
            returning,
        });
        if let Some(outcome) = decision.override_outcome {
            shared.increment(Metric::GatewayOverrides {
                accepted: outcome == OverrideOutcome::Accepted,
            });
        }
    }
}
