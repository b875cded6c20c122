//! The router, its shared state, request bookkeeping and graceful serving.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

use crate::error::LoggedError;
use crate::headers::{HeaderNames, REQUEST_ID_HEADER};
use crate::metrics::Metrics;
use crate::model::Model;
use crate::routes;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub model: Arc<Model>,
    /// Behind an `Arc`: the state is cloned for every request, and the
    /// registry's handles are many.
    pub metrics: Arc<Metrics>,
    /// False until serving starts and again from the shutdown signal on.
    pub ready: Arc<AtomicBool>,
    pub version_header: HeaderValue,
    pub headers: Arc<HeaderNames>,
    /// The `/sms` page, told which headers to read (cheap to clone).
    pub page: Bytes,
}

impl AppState {
    pub fn new(model: Model, headers: HeaderNames) -> Result<AppState, prometheus::Error> {
        let metrics = Metrics::new(&model)?;
        let version_header = HeaderValue::from_static(model.version.as_str());
        Ok(AppState {
            model: Arc::new(model),
            metrics: Arc::new(metrics),
            ready: Arc::new(AtomicBool::new(false)),
            version_header,
            page: routes::sms_page_html(&headers),
            headers: Arc::new(headers),
        })
    }
}

pub fn router(state: AppState) -> Router {
    let request_id = axum::http::HeaderName::from_static(REQUEST_ID_HEADER);
    Router::new()
        .route("/", get(routes::usage))
        .route("/predict", post(routes::predict))
        .route("/health", get(routes::health))
        .route("/ready", get(routes::ready))
        .route("/version", get(routes::version))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(routes::openapi))
        .route("/sms", get(routes::sms_page))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, RequestIds::new()))
        .with_state(state)
}

/// Ids for requests that arrive without one (behind the mesh, Envoy sets
/// them): a random 64-bit prefix per process and a counter, in the UUID
/// layout. A fresh random UUID would cost a `getrandom` system call on
/// every request.
#[derive(Clone)]
pub struct RequestIds {
    prefix: u64,
    counter: Arc<std::sync::atomic::AtomicU64>,
}

impl RequestIds {
    pub fn new() -> RequestIds {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS once per process.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        RequestIds {
            prefix: hasher.finish(),
            counter: Arc::default(),
        }
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds::new()
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let p = self.prefix;
        let id = format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            p >> 32,
            (p >> 16) & 0xffff,
            p & 0xffff,
            (n >> 48) & 0xffff,
            n & 0xffff_ffff_ffff
        );
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// Counts every request by route template (never the raw path, which would
/// let clients create unbounded label values) and logs it with its
/// `x-request-id`: at debug level when it succeeded, info otherwise.
async fn record(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let request_id = request.headers().get(REQUEST_ID_HEADER).cloned();
    let response = next.run(request).await;
    let status = response.status();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let request_id = request_id
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    state
        .metrics
        .observe_request(route, method.as_str(), status);
    let micros = started.elapsed().as_micros() as u64;
    if status.is_success() {
        tracing::debug!(request_id, %method, route, status = status.as_u16(), micros, "request");
    } else {
        let (error, detail) = response
            .extensions()
            .get::<LoggedError>()
            .map_or(("", ""), |e| (e.code, e.message.as_str()));
        tracing::info!(
            request_id,
            %method,
            route,
            status = status.as_u16(),
            micros,
            error,
            detail,
            "request"
        );
    }
    response
}

/// Serves until `shutdown` resolves; then readiness turns false, the
/// service keeps answering for `drain` (so load balancers stop sending),
/// stops accepting, and waits for the requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> std::io::Result<()> {
    let ready = state.ready.clone();
    let app = router(state);
    ready.store(true, Ordering::Release);
    let signal = async move {
        shutdown.await;
        ready.store(false, Ordering::Release);
        tracing::info!(
            drain_seconds = drain.as_secs_f64(),
            "shutdown requested: not ready, draining"
        );
        tokio::time::sleep(drain).await;
        tracing::info!("no longer accepting; finishing requests in flight");
    };
    // Responses are small and written at once: never wait on Nagle.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM (Kubernetes, `docker stop`) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
