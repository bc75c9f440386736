//! A TCP proxy the test controls, standing for the network link from one server to another:
//! `cut` closes every open connection and refuses new ones, `stall` keeps connections open but
//! passes nothing (a server that hangs), `restore` heals the link, and byte counters say what
//! crossed the wire in each direction.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

struct Shared {
    up: AtomicBool,
    target: std::sync::Mutex<SocketAddr>,
    /// Bumped by `cut` so every open connection ends.
    cuts: watch::Sender<u64>,
    /// Bytes from the target back to the client (what the client received).
    down: AtomicU64,
    /// Bytes from the client to the target.
    up_bytes: AtomicU64,
    /// While true, bytes are held instead of passed on.
    stalled: watch::Sender<bool>,
    /// Client addresses whose connections are refused (one server cut off from this one).
    blocked: std::sync::Mutex<std::collections::HashSet<std::net::IpAddr>>,
}

/// A controllable link to one server.
pub struct LinkProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counter: Arc<Shared>,
    down: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if down {
            counter.down.fetch_add(n as u64, Ordering::SeqCst);
        } else {
            counter.up_bytes.fetch_add(n as u64, Ordering::SeqCst);
        }
        let mut stalled = counter.stalled.subscribe();
        if stalled.wait_for(|s| !*s).await.is_err() {
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

impl LinkProxy {
    pub async fn start(target: SocketAddr) -> LinkProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            up: AtomicBool::new(true),
            target: std::sync::Mutex::new(target),
            cuts: watch::Sender::new(0),
            down: AtomicU64::new(0),
            up_bytes: AtomicU64::new(0),
            stalled: watch::Sender::new(false),
            blocked: std::sync::Mutex::new(Default::default()),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, from)) = listener.accept().await else {
                    return;
                };
                if !s.up.load(Ordering::SeqCst) || s.blocked.lock().unwrap().contains(&from.ip()) {
                    drop(client);
                    continue;
                }
                let s = s.clone();
                tokio::spawn(async move {
                    let target = *s.target.lock().unwrap();
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let mut cut = s.cuts.subscribe();
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let mut a = tokio::spawn(pump(cr, sw, s.clone(), false));
                    let mut b = tokio::spawn(pump(sr, cw, s.clone(), true));
                    tokio::select! {
                        _ = cut.changed() => {}
                        _ = &mut a => {}
                        _ = &mut b => {}
                    }
                    // Either side closed or the link was cut: close both directions.
                    a.abort();
                    b.abort();
                });
            }
        });
        LinkProxy { addr, shared, task }
    }

    /// Base URL of the proxied server (with a trailing `/`).
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Closes open connections and refuses new ones.
    pub fn cut(&self) {
        self.shared.up.store(false, Ordering::SeqCst);
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// Keeps connections open but passes no byte either way until `restore`.
    pub fn stall(&self) {
        self.shared.stalled.send_replace(true);
    }

    pub fn restore(&self) {
        self.shared.up.store(true, Ordering::SeqCst);
        self.shared.stalled.send_replace(false);
    }

    /// Refuses connections from `ip` (and closes the open ones) until `unblock`.
    pub fn block(&self, ip: std::net::IpAddr) {
        self.shared.blocked.lock().unwrap().insert(ip);
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    pub fn unblock(&self, ip: std::net::IpAddr) {
        self.shared.blocked.lock().unwrap().remove(&ip);
    }

    /// Points the link at a server that came back on another port.
    pub fn retarget(&self, target: SocketAddr) {
        *self.shared.target.lock().unwrap() = target;
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// Bytes the client side has received through this link so far.
    pub fn bytes_down(&self) -> u64 {
        self.shared.down.load(Ordering::SeqCst)
    }

    /// Bytes the client side has sent through this link so far.
    pub fn bytes_up(&self) -> u64 {
        self.shared.up_bytes.load(Ordering::SeqCst)
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}
