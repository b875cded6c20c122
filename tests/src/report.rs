//! Support for the report's tests: a real Prometheus scraping in-test
//! exporters whose exposition text the test controls, so every count the
//! report prints can be checked exactly.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use crate::process::Process;

use crate::{free_port, tool, wait_for};

pub use crate::mesh::meshctl_bin;

pub fn prometheus_bin() -> PathBuf {
    tool("PROMETHEUS_BIN", "/usr/bin/prometheus")
}

pub fn chromium_bin() -> PathBuf {
    tool("CHROMIUM_BIN", "/usr/bin/chromium")
}

/// An HTTP server on 127.0.0.1 answering every request with the current
/// exposition text. Stops when dropped.
pub struct Exporter {
    pub port: u16,
    text: Arc<Mutex<String>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn answer(mut stream: TcpStream, text: &Mutex<String>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut request = Vec::new();
    let mut buffer = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buffer) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buffer[..n]),
        }
    }
    let body = text.lock().map(|t| t.clone()).unwrap_or_default();
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

impl Exporter {
    pub fn start(text: &str) -> Exporter {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the exporter on 127.0.0.1");
        listener
            .set_nonblocking(true)
            .expect("non-blocking exporter listener");
        let port = listener.local_addr().expect("exporter address").port();
        let text = Arc::new(Mutex::new(text.to_string()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (text, stop) = (text.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = stream.set_nonblocking(false);
                            answer(stream, &text);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Exporter {
            port,
            text,
            stop,
            thread: Some(thread),
        }
    }

    /// Serves `text` from the next scrape on.
    pub fn serve(&self, text: &str) {
        *self.text.lock().expect("exporter text lock") = text.to_string();
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A Prometheus scraping `targets` every second, its data in `dir`.
pub struct Prometheus {
    pub url: String,
    _process: Process,
}

impl Prometheus {
    pub fn start(dir: &Path, targets: &[u16]) -> Prometheus {
        let port = free_port();
        let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\nscrape_configs:\n  - job_name: exporters\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .expect("write prometheus.yml");
        let mut command = Command::new(prometheus_bin());
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let process = Process::spawn("prometheus", command, &dir.join("prometheus.log"));
        let url = format!("http://127.0.0.1:{port}");
        let ready = format!("{url}/-/ready");
        wait_for("Prometheus to be ready", Duration::from_secs(30), || {
            ureq::get(&ready).call().ok().map(|_| ())
        });
        Prometheus {
            url,
            _process: process,
        }
    }

    /// The `data.result` of an instant query at `time` (now if `None`).
    pub fn query(&self, query: &str, time: Option<f64>) -> Vec<Value> {
        let mut request = ureq::get(format!("{}/api/v1/query", self.url)).query("query", query);
        if let Some(time) = time {
            request = request.query("time", format!("{time:.3}"));
        }
        let body = request
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .unwrap_or_else(|e| panic!("query {query:?}: {e}"));
        let value: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("query {query:?}: {e}: {body}"));
        value["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The single value of a scalar-valued instant query, if any.
    pub fn value(&self, query: &str, time: Option<f64>) -> Option<f64> {
        let result = self.query(query, time);
        let first = result.first()?;
        first["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `query` (at now) equals `expected`.
    pub fn wait_for_value(&self, query: &str, expected: f64) {
        wait_for(
            &format!("{query} == {expected} in Prometheus"),
            Duration::from_secs(30),
            || (self.value(query, None) == Some(expected)).then_some(()),
        );
    }
}

/// Seconds since the Unix epoch, as Prometheus timestamps them.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// The row of a report's JSON list whose fields equal `keys`, e.g. the
/// `version_cohorts` row of v3 and stable. Panics, showing the list, if none.
pub fn report_row<'a>(rows: &'a Value, keys: &[(&str, &str)]) -> &'a Value {
    rows.as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|row| keys.iter().all(|(key, value)| row[*key] == *value))
        })
        .unwrap_or_else(|| panic!("no row with {keys:?} in {rows}"))
}

/// A rollout's event log (`--events`): one JSON object per line.
pub fn rollout_events(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("no event log at {}: {err}", path.display()))
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Per-second traffic of the exporter's world.
#[derive(Clone, Copy)]
pub struct Traffic {
    pub canary: u64,
    pub stable: u64,
    /// Percent of canary requests answered 503.
    pub canary_error_percent: u64,
}

/// The exposition text after `ticks` tenths of a second of `traffic`.
pub fn exposition(traffic: Traffic, ticks: u64) -> String {
    let canary = traffic.canary * ticks / 10;
    let stable = traffic.stable * ticks / 10;
    let errors = canary * traffic.canary_error_percent / 100;
    let mut text = String::from("# TYPE sms_cohort_requests_total counter\n");
    for (cohort, class, n) in [
        ("canary", "2xx", canary - errors),
        ("canary", "5xx", errors),
        ("stable", "2xx", stable),
    ] {
        text.push_str(&format!(
            "sms_cohort_requests_total{{cohort=\"{cohort}\",response_class=\"{class}\"}} {n}\n"
        ));
    }
    text.push_str("# TYPE sms_cohort_users_total counter\n");
    for (cohort, n) in [("canary", canary / 4), ("stable", stable / 4)] {
        text.push_str(&format!(
            "sms_cohort_users_total{{cohort=\"{cohort}\",user=\"new\"}} {n}\n"
        ));
    }
    text.push_str("# TYPE sms_cohort_request_duration_milliseconds histogram\n");
    for (cohort, n) in [("canary", canary), ("stable", stable)] {
        // 80 % within 5 ms, the rest within 10.
        for (le, count) in [("5", n * 8 / 10), ("10", n), ("+Inf", n)] {
            text.push_str(&format!(
                "sms_cohort_request_duration_milliseconds_bucket{{cohort=\"{cohort}\",le=\"{le}\"}} {count}\n"
            ));
        }
        text.push_str(&format!(
            "sms_cohort_request_duration_milliseconds_count{{cohort=\"{cohort}\"}} {n}\n"
        ));
    }
    text.push_str("# TYPE sms_model_requests_total counter\n");
    for (version, cohort, answered) in [("v2", "canary", canary - errors), ("v1", "stable", stable)]
    {
        let spam = answered * 13 / 100;
        for (prediction, n) in [("spam", spam), ("ham", answered - spam)] {
            text.push_str(&format!(
                "sms_model_requests_total{{version=\"{version}\",cohort=\"{cohort}\",response_class=\"2xx\",prediction=\"{prediction}\",mirrored=\"false\"}} {n}\n"
            ));
        }
    }
    text
}

/// An exporter whose counters grow every 100 ms, scraped by Prometheus.
pub struct World {
    pub prometheus: Prometheus,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl World {
    /// Prometheus scrapes the exporter and any `also` ports (a rollout's
    /// own metrics).
    pub fn start(dir: &Path, traffic: Traffic, also: &[u16]) -> World {
        let exporter = Exporter::start(&exposition(traffic, 0));
        let mut targets = vec![exporter.port];
        targets.extend(also);
        let prometheus = Prometheus::start(dir, &targets);
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut ticks = 0;
                while !stop.load(Ordering::Relaxed) {
                    ticks += 1;
                    exporter.serve(&exposition(traffic, ticks));
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        prometheus.wait_for_value(
            r#"count(sms_cohort_requests_total{cohort="stable"} > 0)"#,
            1.0,
        );
        World {
            prometheus,
            stop,
            ticker: Some(ticker),
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}
