//! A webhook receiver that fails on purpose, for the rollout's
//! notifications.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

/// A notification receiver on 127.0.0.1 that fails every other request:
/// the 1st, 3rd, 5th ... alternately get a 503 and a connection closed
/// without an answer, the others a 200. It keeps the bodies it accepted.
pub struct FlakyReceiver {
    port: u16,
    accepted: Arc<Mutex<Vec<Value>>>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FlakyReceiver {
    pub fn start() -> FlakyReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let port = listener.local_addr().expect("receiver address").port();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, requests, stop) = (accepted.clone(), requests.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((stream, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let _ = stream.set_nonblocking(false);
                    let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
                    answer_flaky(stream, n, &accepted);
                }
            })
        };
        FlakyReceiver {
            port,
            accepted,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// The bodies answered 200, in arrival order.
    pub fn accepted(&self) -> Vec<Value> {
        self.accepted.lock().expect("receiver records").clone()
    }

    /// Every request it got, answered or not.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FlakyReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer_flaky(stream: TcpStream, n: usize, accepted: &Mutex<Vec<Value>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut stream = reader.into_inner();
    let status = match n % 4 {
        1 => "503 Service Unavailable",
        3 => return, // dropped: closed without an answer
        _ => "200 OK",
    };
    if status.starts_with("200") {
        let value = serde_json::from_slice(&body).expect("a JSON notification");
        accepted.lock().expect("receiver records").push(value);
    }
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
}
