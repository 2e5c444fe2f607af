//! A small fault-injecting HTTP proxy on 127.0.0.1 for the sync tests.
//!
//! It reads each HTTP/1.1 request (headers plus a Content-Length body),
//! then, by a seeded coin, resets the connection, delays, answers 500 or 503,
//! answers 429 with `Retry-After` or S3's 503 `SlowDown`, forwards and drops the answer, or forwards the request to the real server
//! over a fresh connection and relays the response verbatim. During an
//! "outage" it accepts and immediately closes every connection, like a
//! stopped server behind a load balancer, and counts the attempts. While
//! PUTs are *held*, it reads each upload but forwards nothing: the request
//! waits until the hold ends and is then dropped, never completed (so a test
//! can kill the uploader while its uploads are in flight).
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Fault probabilities, each per request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Close the connection without answering.
    pub reset: f64,
    /// Wait 300 ms before forwarding.
    pub delay: f64,
    /// Answer 500 or 503 without forwarding.
    pub server_error: f64,
    /// Answer 429 with `Retry-After: 1` without forwarding.
    pub too_many: f64,
    /// Forward the request, then drop the server's answer (the server did
    /// the work; the client never hears of it).
    pub lost_response: f64,
    /// Answer 503 `SlowDown` (S3's throttling answer, XML) with
    /// `Retry-After: 1` without forwarding.
    pub slow_down: f64,
}

/// Counters of what the proxy did.
#[derive(Debug, Default)]
pub struct Counts {
    /// Requests forwarded to the server.
    pub forwarded: AtomicUsize,
    /// Requests answered with a fault (reset, 5xx, 429).
    pub faulted: AtomicUsize,
    /// Connections refused during an outage.
    pub refused: AtomicUsize,
    /// PUT requests the server answered (the uploads that arrived).
    pub puts_forwarded: AtomicUsize,
    /// PUT requests held (and then dropped) while PUTs were held.
    pub held: AtomicUsize,
    /// `runs/create` requests delayed (and then forwarded).
    pub creates_delayed: AtomicUsize,
    /// `METHOD path` of every request forwarded, in the order the server
    /// answered them.
    pub log: Mutex<Vec<String>>,
    /// Requests answered 503 SlowDown.
    pub slowed: AtomicUsize,
    /// When each connection was accepted.
    pub accepted: Mutex<Vec<std::time::Instant>>,
}

/// A running proxy.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// What it did.
    pub counts: Arc<Counts>,
    outage: Arc<AtomicBool>,
    faults: Arc<Mutex<Faults>>,
    lose_next_create: Arc<AtomicBool>,
    hold_puts: Arc<AtomicBool>,
    delay_creates: Arc<AtomicBool>,
}

impl Proxy {
    /// Starts a proxy in front of `upstream` (`http://host:port`).
    pub fn start(upstream: &str, faults: Faults, seed: u64) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Proxy::start_on(listener, upstream, faults, seed)
    }

    /// Like [`Proxy::start`] on a listener bound by the caller (in another
    /// network namespace, say: the listener stays there, the connections to
    /// `upstream` are made from here).
    pub fn start_on(listener: TcpListener, upstream: &str, faults: Faults, seed: u64) -> Proxy {
        let up = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let counts = Arc::new(Counts::default());
        let outage = Arc::new(AtomicBool::new(false));
        let faults = Arc::new(Mutex::new(faults));
        let lose_next_create = Arc::new(AtomicBool::new(false));
        let hold_puts = Arc::new(AtomicBool::new(false));
        let delay_creates = Arc::new(AtomicBool::new(false));
        let (c, o, f, l, h, d) = (
            Arc::clone(&counts),
            Arc::clone(&outage),
            Arc::clone(&faults),
            Arc::clone(&lose_next_create),
            Arc::clone(&hold_puts),
            Arc::clone(&delay_creates),
        );
        std::thread::spawn(move || {
            for (i, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { continue };
                c.accepted.lock().unwrap().push(std::time::Instant::now());
                if o.load(Ordering::SeqCst) {
                    c.refused.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.shutdown(Shutdown::Both);
                    continue;
                }
                let sw = Switches {
                    outage: Arc::clone(&o),
                    faults: Arc::clone(&f),
                    lose_create: Arc::clone(&l),
                    hold_puts: Arc::clone(&h),
                    delay_creates: Arc::clone(&d),
                };
                let (c, up) = (Arc::clone(&c), up.clone());
                std::thread::spawn(move || {
                    serve(stream, &up, &c, &sw, seed.wrapping_add(i as u64))
                });
            }
        });
        Proxy {
            url,
            counts,
            outage,
            faults,
            lose_next_create,
            hold_puts,
            delay_creates,
        }
    }

    /// Starts or ends delaying `runs/create`: a delayed create is forwarded
    /// when the delay ends, whether or not its client is still there (a
    /// request in flight when its uploader was killed).
    pub fn delay_creates(&self, on: bool) {
        self.delay_creates.store(on, Ordering::SeqCst);
    }

    /// Starts or ends holding PUTs: held uploads are dropped when it ends.
    pub fn hold_puts(&self, on: bool) {
        self.hold_puts.store(on, Ordering::SeqCst);
    }

    /// Starts or ends an outage.
    pub fn set_outage(&self, on: bool) {
        self.outage.store(on, Ordering::SeqCst);
    }

    /// Forwards the next `runs/create` to the server but drops its answer.
    pub fn lose_next_create(&self) {
        self.lose_next_create.store(true, Ordering::SeqCst);
    }

    /// Changes the fault rates.
    pub fn set_faults(&self, f: Faults) {
        *self.faults.lock().unwrap() = f;
    }
}

/// The request as bytes to forward upstream, on a connection of its own.
fn forwardable(req: &super::http::Request) -> Vec<u8> {
    let mut out = format!("{} {} HTTP/1.1\r\n", req.method, req.path).into_bytes();
    for (k, v) in &req.headers {
        // The upstream connection is used for one request only.
        if !k.eq_ignore_ascii_case("connection") {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    out.extend_from_slice(&req.body);
    out
}

fn respond(s: &mut TcpStream, status: &str, extra: &str) {
    let body = r#"{"error_code":"INTERNAL_ERROR","message":"injected fault"}"#;
    let _ = write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
        body.len()
    );
}

/// What the test can switch on and off while the proxy runs.
struct Switches {
    outage: Arc<AtomicBool>,
    faults: Arc<Mutex<Faults>>,
    lose_create: Arc<AtomicBool>,
    hold_puts: Arc<AtomicBool>,
    delay_creates: Arc<AtomicBool>,
}

fn serve(client: TcpStream, upstream: &str, c: &Counts, sw: &Switches, seed: u64) {
    let (outage, faults, lose_create) = (&sw.outage, &sw.faults, &sw.lose_create);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let Ok(write_half) = client.try_clone() else {
        return;
    };
    let mut w = write_half;
    let mut r = BufReader::new(client);
    while let Some(request) = super::http::read_request(&mut r) {
        let req = forwardable(&request);
        if outage.load(Ordering::SeqCst) {
            c.refused.fetch_add(1, Ordering::SeqCst);
            let _ = w.shutdown(Shutdown::Both);
            return;
        }
        if request.method == "PUT" && sw.hold_puts.load(Ordering::SeqCst) {
            c.held.fetch_add(1, Ordering::SeqCst);
            while sw.hold_puts.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(2));
            }
            // Dropped: the server never sees it.
            let _ = w.shutdown(Shutdown::Both);
            return;
        }
        if request.path.contains("/runs/create") && sw.delay_creates.load(Ordering::SeqCst) {
            c.creates_delayed.fetch_add(1, Ordering::SeqCst);
            while sw.delay_creates.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let f = *faults.lock().unwrap();
        let x: f64 = rng.random();
        if x < f.reset {
            c.faulted.fetch_add(1, Ordering::SeqCst);
            let _ = w.shutdown(Shutdown::Both);
            return;
        }
        let x = x - f.reset;
        if x < f.server_error {
            c.faulted.fetch_add(1, Ordering::SeqCst);
            respond(
                &mut w,
                if rng.random_bool(0.5) {
                    "500 Internal Server Error"
                } else {
                    "503 Service Unavailable"
                },
                "",
            );
            continue;
        }
        let x = x - f.server_error;
        if x < f.slow_down {
            c.faulted.fetch_add(1, Ordering::SeqCst);
            let body = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code>\
                        <Message>Please reduce your request rate.</Message></Error>";
            let _ = write!(
                w,
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nRetry-After: 1\r\n\r\n{body}",
                body.len()
            );
            c.slowed.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        let x = x - f.slow_down;
        if x < f.too_many {
            c.faulted.fetch_add(1, Ordering::SeqCst);
            respond(&mut w, "429 Too Many Requests", "Retry-After: 1\r\n");
            continue;
        }
        if rng.random::<f64>() < f.delay {
            std::thread::sleep(Duration::from_millis(300));
        }
        let Ok(mut up) = TcpStream::connect(upstream) else {
            let _ = w.shutdown(Shutdown::Both);
            return;
        };
        if up.write_all(&req).is_err() {
            return;
        }
        let mut resp = Vec::new();
        if up.read_to_end(&mut resp).is_err() {
            return;
        }
        c.forwarded.fetch_add(1, Ordering::SeqCst);
        c.log
            .lock()
            .unwrap()
            .push(format!("{} {}", request.method, request.path));
        if request.method == "PUT" {
            c.puts_forwarded.fetch_add(1, Ordering::SeqCst);
        }
        if resp.is_empty() {
            // The server closed without answering: so does the proxy.
            let _ = w.shutdown(Shutdown::Both);
            return;
        }
        let is_create = request.method == "POST" && request.path.contains("runs/create");
        let lose = is_create && lose_create.swap(false, Ordering::SeqCst);
        if lose || rng.random::<f64>() < f.lost_response {
            c.faulted.fetch_add(1, Ordering::SeqCst);
            let _ = w.shutdown(Shutdown::Both);
            return;
        }
        if w.write_all(&resp).is_err() {
            return;
        }
    }
}
