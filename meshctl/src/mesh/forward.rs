//! The port-forward to the ingress gateway: what `kubectl port-forward
//! svc/istio-ingressgateway 8080:80` does for a cluster, from 127.0.0.1 to
//! the gateway pod's listener. Bytes only: the gateway sees the client's
//! requests (Host header included) unchanged.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::Context;

pub struct Forward {
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Forward {
    /// Listens on `listen` and copies each connection to and from `target`.
    pub fn start(listen: SocketAddr, target: SocketAddr) -> anyhow::Result<Forward> {
        let listener = TcpListener::bind(listen)
            .with_context(|| format!("listen on {listen} for the gateway"))?;
        let local = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("port-forward".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if stopped.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    std::thread::spawn(move || {
                        let _ = relay(client, target);
                    });
                }
            })?;
        Ok(Forward {
            local,
            stop,
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.local.port()
    }
}

/// Copies both ways until either side closes; a refused upstream closes the
/// client's connection, as a port-forward to a pod that is down does.
fn relay(client: TcpStream, target: SocketAddr) -> io::Result<()> {
    let upstream = TcpStream::connect(target)?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let (mut client_read, mut upstream_write) = (client.try_clone()?, upstream.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = io::copy(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown(Shutdown::Write);
    });
    let (mut upstream_read, mut client_write) = (upstream, client);
    let _ = io::copy(&mut upstream_read, &mut client_write);
    let _ = client_write.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.local);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn bytes_go_both_ways_unchanged() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf.map(|b| b.to_ascii_uppercase())).unwrap();
        });
        let forward = Forward::start("127.0.0.1:0".parse().unwrap(), target).unwrap();
        let mut client = TcpStream::connect(("127.0.0.1", forward.port())).unwrap();
        client.write_all(b"hello").unwrap();
        let mut answer = String::new();
        client.read_to_string(&mut answer).unwrap();
        assert_eq!(answer, "HELLO");
    }
}
