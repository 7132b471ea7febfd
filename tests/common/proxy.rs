//! A loopback HTTP/1.1 proxy in front of a real store server, for tests of
//! what the broker does when one call of several fails or is redirected:
//! every request is forwarded unless the test's rule refuses it (an error
//! status) or redirects it (a 307 to a [`Sink`]). And the sink: a listener
//! that records whatever reaches it, so a test can assert that nothing did.
//!
//! One request per connection (answers carry `connection: close`), bodies
//! by `content-length` (every store client here sends one).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request as the proxy saw it.
pub struct Request {
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_has(&self, needle: &str) -> bool {
        String::from_utf8_lossy(&self.body).contains(needle)
    }
}

/// What the proxy does with a request.
pub enum Answer {
    Forward,
    /// Answer this status (a server error) without forwarding.
    Refuse(u16),
    /// Answer `307` with this `Location`, without forwarding.
    Redirect(String),
}

type Rule = dyn Fn(&Request) -> Answer + Send + Sync;

/// The proxy; its rule can be swapped while it runs.
pub struct Proxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    rule: Arc<Mutex<Arc<Rule>>>,
    /// `METHOD target` of every request refused or redirected.
    pub intercepted: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    /// Forwards to `upstream` (`http://host:port`), everything at first.
    pub fn start(upstream: &str) -> Self {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let forward_all: Arc<Rule> = Arc::new(|_: &Request| Answer::Forward);
        let rule = Arc::new(Mutex::new(forward_all));
        let intercepted = Arc::new(Mutex::new(Vec::new()));
        let (r, seen) = (Arc::clone(&rule), Arc::clone(&intercepted));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (r, seen, up) = (Arc::clone(&r), Arc::clone(&seen), upstream.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &up, &r, &seen);
                });
            }
        });
        Self {
            url,
            rule,
            intercepted,
        }
    }

    /// Replaces the rule.
    pub fn set(&self, rule: impl Fn(&Request) -> Answer + Send + Sync + 'static) {
        *self.rule.lock().unwrap() = Arc::new(rule);
    }

    /// Forwards everything again.
    pub fn forward_all(&self) {
        self.set(|_| Answer::Forward);
    }

    pub fn intercepted(&self) -> Vec<String> {
        self.intercepted.lock().unwrap().clone()
    }
}

/// Reads one request: head and `content-length` body.
fn read_request(conn: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            return Ok(None);
        }
        buf.push(byte[0]);
        assert!(buf.len() < 64 * 1024, "request head too long");
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_owned();
    let target = first.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut req = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    assert!(
        req.header("transfer-encoding").is_none(),
        "the test proxy reads content-length bodies only"
    );
    let len: usize = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    req.body = vec![0; len];
    conn.read_exact(&mut req.body)?;
    Ok(Some(req))
}

fn serve(
    mut conn: TcpStream,
    upstream: &str,
    rule: &Mutex<Arc<Rule>>,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let Some(req) = read_request(&mut conn)? else {
        return Ok(());
    };
    let rule = Arc::clone(&rule.lock().unwrap());
    match rule(&req) {
        Answer::Refuse(status) => {
            seen.lock()
                .unwrap()
                .push(format!("{} {}", req.method, req.target));
            let body = br#"{"errors":["refused by the test proxy"]}"#;
            write!(
                conn,
                "HTTP/1.1 {status} Refused\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            )?;
            conn.write_all(body)?;
        }
        Answer::Redirect(location) => {
            seen.lock()
                .unwrap()
                .push(format!("{} {}", req.method, req.target));
            write!(
                conn,
                "HTTP/1.1 307 Temporary Redirect\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )?;
        }
        Answer::Forward => {
            let mut up = TcpStream::connect(upstream)?;
            up.set_read_timeout(Some(Duration::from_secs(30)))?;
            let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
            for (k, v) in &req.headers {
                if !k.eq_ignore_ascii_case("connection") {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
            }
            head.push_str("connection: close\r\n\r\n");
            up.write_all(head.as_bytes())?;
            up.write_all(&req.body)?;
            let mut resp = Vec::new();
            up.read_to_end(&mut resp)?;
            // The answer's head with `connection: close`, then the rest as is.
            let end = resp
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(resp.len(), |p| p + 4);
            let head = String::from_utf8_lossy(&resp[..end]).into_owned();
            let mut out = String::new();
            for line in head.trim_end().split("\r\n") {
                if !line.to_ascii_lowercase().starts_with("connection:") {
                    out.push_str(line);
                    out.push_str("\r\n");
                }
            }
            out.push_str("connection: close\r\n\r\n");
            conn.write_all(out.as_bytes())?;
            conn.write_all(&resp[end..])?;
        }
    }
    conn.flush()?;
    let _ = conn.shutdown(std::net::Shutdown::Write);
    Ok(())
}

/// A listener that records every byte sent to it (and answers `500`).
pub struct Sink {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    received: Arc<Mutex<Vec<u8>>>,
    connections: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (rec, n, halt) = (
            Arc::clone(&received),
            Arc::clone(&connections),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                *n.lock().unwrap() += 1;
                let rec = Arc::clone(&rec);
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
                    let mut buf = [0u8; 4096];
                    while let Ok(k) = conn.read(&mut buf) {
                        if k == 0 {
                            break;
                        }
                        rec.lock().unwrap().extend_from_slice(&buf[..k]);
                    }
                    let _ = conn.write_all(
                        b"HTTP/1.1 500 Sink\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                });
            }
        });
        Self {
            url,
            received,
            connections,
            stop,
        }
    }

    /// Connections made to the sink so far.
    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }

    /// Everything sent to the sink so far, as text.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so its thread ends.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}
