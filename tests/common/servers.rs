//! Private store servers for tests that must not touch the shared ones: a
//! server binary from `scripts/backends`, a free loopback port, and a
//! process handle that restarts, signals and kills what it started (by PID,
//! on drop).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A server binary from `scripts/backends`, or a loud skip (a failure in CI).
pub fn server_bin(env: &str, name: &str, test: &str) -> Option<PathBuf> {
    let bin = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(".backends/bin/{name}"))
    });
    if bin.exists() {
        return Some(bin);
    }
    let msg = format!(
        "`{}` is missing; install it with `scripts/backends install`",
        bin.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg} (CI is set, so a missing server is a failure)");
    }
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED {test}: {msg} ***\n");
    None
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process we started, killed when dropped.
pub struct Server {
    child: Option<Child>,
    start: Box<dyn Fn() -> Child>,
    ready: String,
}

impl Server {
    pub fn launch(start: Box<dyn Fn() -> Child>, ready: String) -> Self {
        let mut s = Self {
            child: None,
            start,
            ready,
        };
        s.restart();
        s
    }

    pub fn pid(&self) -> String {
        self.child.as_ref().unwrap().id().to_string()
    }

    pub fn signal(&self, sig: &str) {
        assert!(
            Command::new("kill")
                .args(["-s", sig, &self.pid()])
                .status()
                .unwrap()
                .success()
        );
        if sig == "STOP" {
            self.wait_stopped();
        }
    }

    /// `kill` returns once the signal is queued; each thread stops when it
    /// next runs. Wait until every thread is really stopped (state `T`), so
    /// the next request cannot slip through on a loaded machine.
    pub fn wait_stopped(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let tasks = format!("/proc/{}/task", self.pid());
        loop {
            let all_stopped = std::fs::read_dir(&tasks).unwrap().all(|t| {
                let stat =
                    std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap_or_default();
                let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
                matches!(state, Some(Some('T' | 't')))
            });
            if all_stopped {
                return;
            }
            assert!(Instant::now() < deadline, "server threads did not stop");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.child = Some((self.start)());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new("curl")
                // `-k`: readiness only; the brokers verify TLS against the test CA.
                .args(["-skf", "-o", "/dev/null", &self.ready])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "server at {} not ready",
                self.ready
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A stopped process must be continued to die cleanly.
            let _ = Command::new("kill")
                .args(["-s", "CONT", &self.pid()])
                .status();
        }
        self.kill();
    }
}

/// Runs `curl -s` with `args` (method, headers, data, URL) against a test
/// server; returns the status and the body.
pub fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// A private Key Vault test server (`tests/azure_kv_server.py`) on a free
/// port: the process, its URL, its CA file, and the temp dir holding its
/// TLS files (a restart reuses the certificate; tokens issued are lost).
pub struct PrivateAzure {
    /// The server process (declared first: it stops before its files go).
    pub server: Server,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The test CA the server's certificate is signed by.
    pub ca: String,
    _tls: tempfile::TempDir,
}

impl PrivateAzure {
    /// Starts one, or skips loudly (fails in CI) without the server's venv.
    pub fn start(test: &str) -> Option<Self> {
        let python = server_bin("SB_AZURE_PYTHON", "../azure/bin/python", test)?;
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/azure_kv_server.py");
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let tls = tempfile::tempdir().unwrap();
        let tls_dir = tls.path().to_owned();
        let server = Server::launch(
            Box::new(move || {
                Command::new(&python)
                    .arg(&script)
                    .args(["--port", &port.to_string(), "--tls-dir"])
                    .arg(&tls_dir)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            }),
            format!("{url}/healthz"),
        );
        let ca = tls.path().join("ca.pem").display().to_string();
        Some(Self {
            server,
            url,
            ca,
            _tls: tls,
        })
    }
}

/// A URL's query parameters, decoded.
pub fn url_query(url: &str) -> std::collections::BTreeMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `curl -X method` of `file` (or no body) to `url` with `headers`; the
/// status (what a task holding a signed URL could send to the bucket).
pub fn curl_send(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    file: Option<&std::path::Path>,
) -> u16 {
    let mut args: Vec<String> = vec!["-X".into(), method.into()];
    for (k, v) in headers {
        args.push("-H".into());
        args.push(format!("{k}: {v}"));
    }
    if let Some(f) = file {
        args.push("--data-binary".into());
        args.push(format!("@{}", f.display()));
    }
    args.push(url.into());
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(&refs).0
}

/// The `headers` of a mint's answer: what the `PUT` must send.
pub fn minted_headers<C: FromIterator<(String, String)>>(j: &serde_json::Value) -> C {
    j["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}
