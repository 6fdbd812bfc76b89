//! A TCP proxy for fault tests: it forwards client connections to the server and, on command, delays
//! them, cuts them (FIN), resets them (RST), or blackholes them (stops forwarding with both sockets open,
//! like a peer that vanished without a FIN).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const RUN: u8 = 0;
const CUT: u8 = 1;
const RESET: u8 = 2;

#[derive(Default)]
struct Shared {
    delay_ms: AtomicU64,
    blackhole: AtomicBool,
    /// One control flag per proxied connection.
    conns: Mutex<Vec<Arc<AtomicU8>>>,
    accepted: AtomicU64,
}

/// See the module docs.
pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on a free local port and forwards to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                let flag = Arc::new(AtomicU8::new(RUN));
                s.conns.lock().unwrap().push(flag.clone());
                s.accepted.fetch_add(1, Ordering::Relaxed);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (shared_a, shared_b, flag_b) = (s.clone(), s.clone(), flag.clone());
                std::thread::spawn(move || pipe(client, server, &flag, &shared_a));
                std::thread::spawn(move || pipe(s2, c2, &flag_b, &shared_b));
            }
        });
        Proxy { addr, shared }
    }

    /// Holds every chunk this long before forwarding it.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    /// Stops (or resumes) forwarding, leaving the sockets open.
    pub fn set_blackhole(&self, on: bool) {
        self.shared.blackhole.store(on, Ordering::Relaxed);
    }

    /// Closes every proxied connection with a FIN both ways.
    pub fn cut(&self) {
        self.signal(CUT);
    }

    /// Resets every proxied connection (RST both ways).
    pub fn reset(&self) {
        self.signal(RESET);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    fn signal(&self, what: u8) {
        for flag in self.shared.conns.lock().unwrap().drain(..) {
            flag.store(what, Ordering::Relaxed);
        }
    }
}

/// Forwards `from` to `to` until either ends or the connection's flag says otherwise.
fn pipe(mut from: TcpStream, mut to: TcpStream, flag: &AtomicU8, shared: &Shared) {
    from.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match flag.load(Ordering::Relaxed) {
            CUT => {
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
            RESET => {
                // Linger 0 makes the close send RST; both sockets close once both pipes return.
                let _ = socket2::SockRef::from(&from).set_linger(Some(Duration::ZERO));
                let _ = socket2::SockRef::from(&to).set_linger(Some(Duration::ZERO));
                return;
            }
            _ => {}
        }
        if shared.blackhole.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        };
        let delay = shared.delay_ms.load(Ordering::Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
        if to.write_all(&buf[..n]).is_err() {
            let _ = from.shutdown(Shutdown::Both);
            return;
        }
    }
}
