//! Serving the rollout's metrics on `/metrics` while it runs.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;

use super::RolloutMetrics;

/// `/metrics` on a thread of its own; stops when dropped.
pub struct MetricsServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Binds `addr` now (so a taken port fails before the rollout starts) and
/// serves `metrics` from a background thread.
pub fn serve(
    addr: SocketAddr,
    metrics: std::sync::Arc<RolloutMetrics>,
) -> anyhow::Result<MetricsServer> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("--metrics-addr: cannot listen on {addr}"))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("start the metrics server's runtime")?;
    let thread = std::thread::Builder::new()
        .name("rollout-metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let router = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(move || {
                        let text = metrics.encode();
                        async move {
                            (
                                [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
                                text,
                            )
                        }
                    }),
                );
                let _ = axum::serve(listener, router)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        })?;
    Ok(MetricsServer {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Bounded: graceful shutdown waits only for requests in flight.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}
