//! The real binary on a real listener: start-up refusal, and graceful
//! shutdown on SIGTERM with a request in flight.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The service process; killed on drop so a failing test leaves nothing.
struct Service {
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Service {
    fn start(args: &[&str]) -> Service {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_model-service"))
            .args(args)
            .env_remove("MODEL_VERSION")
            .env_remove("MODELS_DIR")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("start model-service");
        Service { child, log }
    }

    /// `serve` on 127.0.0.1 and a free port, then `args`.
    fn serve(args: &[&str]) -> Service {
        let port = free_port().to_string();
        let mut all = vec!["serve", "--host", "127.0.0.1", "--port", &port];
        all.extend_from_slice(args);
        Service::start(&all)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "model-service still running after {timeout:?}; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// One HTTP/1.1 exchange on a fresh connection; `None` if refused.
fn http(addr: SocketAddr, request: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(request.as_bytes()).ok()?;
    read_response(&mut stream)
}

fn read_response(stream: &mut TcpStream) -> Option<(u16, String)> {
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    Some((status, text))
}

fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"),
    )
    .map(|(status, _)| status)
}

fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn missing_artifact_stops_start_up_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().to_str().unwrap();
    let mut service = Service::serve(&["--model-version", "v3", "--models-dir", models]);
    let status = service.wait(Duration::from_secs(20));
    assert!(!status.success());
    let log = service.log();
    let file = dir.path().join("v3.json");
    assert!(log.contains(&file.display().to_string()), "{log}");
    assert!(log.contains("cannot read"), "{log}");
}

/// Two response headers under one name would hide one of them (the
/// sidecar would count a cohort as the prediction): refused at start-up.
#[test]
fn response_headers_sharing_a_name_stop_start_up() {
    let mut service = Service::serve(&[
        "--prediction-header",
        "x-answer",
        "--cohort-response-header",
        "X-Answer",
    ]);
    let status = service.wait(Duration::from_secs(20));
    assert!(!status.success());
    let log = service.log();
    assert!(
        log.contains("both x-answer: each needs its own name"),
        "{log}"
    );
}

#[test]
fn sigterm_turns_readiness_off_then_finishes_requests_in_flight() {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // No subcommand means serve; the env twins configure it.
    let mut service = {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_model-service"))
            .env("MODEL_VERSION", "v2")
            .env("SERVER_HOST", "127.0.0.1")
            .env("SERVER_PORT", port.to_string())
            .env("SHUTDOWN_DRAIN_SECONDS", "1.5")
            .env_remove("MODELS_DIR")
            .stdin(Stdio::null())
            .stdout(log.reopen().unwrap())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap();
        Service { child, log }
    };
    wait_until("readiness", Duration::from_secs(20), || {
        get(addr, "/ready") == Some(200)
    });

    // A request whose body is only half sent: the handler is waiting for it.
    let body = r#"{"sms":"URGENT! You have won a 1 week FREE membership in our £100,000 Prize Jackpot! Txt CLAIM to 81010"}"#;
    let (head, tail) = body.split_at(body.len() / 2);
    let mut in_flight = TcpStream::connect(addr).unwrap();
    in_flight
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        in_flight,
        "POST /predict HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\nx-request-id: in-flight-1\r\ncontent-length: {}\r\n\r\n{head}",
        body.len()
    )
    .unwrap();
    in_flight.flush().unwrap();
    std::thread::sleep(Duration::from_millis(100));

    kill(Pid::from_raw(service.child.id() as i32), Signal::SIGTERM).unwrap();

    // Readiness goes false first, while the service still answers.
    wait_until("readiness to turn false", Duration::from_secs(5), || {
        get(addr, "/ready") == Some(503)
    });
    assert_eq!(
        get(addr, "/health"),
        Some(200),
        "still answering while draining"
    );
    // Then the listener closes; the half-sent request is still open.
    wait_until("the listener to close", Duration::from_secs(10), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err()
    });
    assert!(
        service.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );

    in_flight.write_all(tail.as_bytes()).unwrap();
    let (status, response) = read_response(&mut in_flight).expect("a response");
    assert_eq!(status, 200, "{response}");
    assert!(response.contains("x-model-version: v2"), "{response}");
    assert!(response.contains("x-model-prediction: spam"), "{response}");
    assert!(response.contains("x-request-id: in-flight-1"), "{response}");

    let status = service.wait(Duration::from_secs(10));
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        service.log()
    );
    let log = service.log();
    assert!(log.contains("shutdown requested"), "{log}");
    // Structured logs: one JSON object per line.
    for line in log.lines() {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("log line is not JSON ({err}): {line}"));
        assert!(
            event["level"].is_string() && event["message"].is_string(),
            "{line}"
        );
    }
}

#[test]
fn request_logs_carry_the_request_id() {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let port = port.to_string();
    let mut service = Service::start(&[
        "--host",
        "127.0.0.1",
        "--port",
        &port,
        "--model-version",
        "v1",
    ]);
    wait_until("readiness", Duration::from_secs(20), || {
        get(addr, "/ready") == Some(200)
    });
    let (status, _) = http(
        addr,
        "POST /predict HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\nx-request-id: trace-me-42\r\ncontent-length: 9\r\nconnection: close\r\n\r\n{\"sms\":1}",
    )
    .unwrap();
    assert_eq!(status, 400);
    kill(Pid::from_raw(service.child.id() as i32), Signal::SIGTERM).unwrap();
    assert!(service.wait(Duration::from_secs(10)).success());
    let log = service.log();
    let line = log
        .lines()
        .find(|l| l.contains("trace-me-42"))
        .unwrap_or_else(|| panic!("no log line with the request id:\n{log}"));
    let event: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(event["request_id"], "trace-me-42");
    assert_eq!(event["status"], 400);
    assert_eq!(event["route"], "/predict");
    assert_eq!(event["error"], "invalid_field");
    assert_eq!(event["message"], "request");
    assert!(
        event["detail"]
            .as_str()
            .unwrap()
            .contains("expected a string"),
        "{line}"
    );
}
