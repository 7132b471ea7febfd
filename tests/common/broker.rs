//! Test harness: starts the real `secret-broker` binary with a config in a
//! temp dir and speaks raw HTTP/1.1 to it over its Unix socket.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_secret-broker");
pub const PLATFORM_TOKEN: &str = "platform-token-0123456789abcdef";
pub const TASK_TOKEN: &str = "task-token-fedcba9876543210";

pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Principals used by most tests: token principals (work as any user) and,
/// for uid tests, uid principals 2000 (task) and 2001 (platform).
pub fn default_principals() -> String {
    format!(
        r#"
[[principal]]
name = "provisioner"
type = "Component"
roles = ["platform"]
token_sha256 = "{}"

[[principal]]
name = "task-42"
type = "Task"
scope = "acme/tasks/t-42"
token_sha256 = "{}"

[[principal]]
name = "task-uid"
type = "Task"
scope = "acme/tasks/t-42"
uid = 2000

[[principal]]
name = "platform-uid"
type = "Component"
roles = ["platform"]
uid = 2001
"#,
        sha256_hex(PLATFORM_TOKEN),
        sha256_hex(TASK_TOKEN)
    )
}

pub struct Broker {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub audit: PathBuf,
    pub stderr: PathBuf,
    pub config: PathBuf,
    /// Extra environment for the broker process (empty unless a test sets it).
    pub env: Vec<(String, String)>,
    /// Whether the broker sees `env` only (plus `PATH`, and `HOME` = the
    /// temp dir) instead of inheriting the test's environment.
    pub isolated: bool,
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Broker {
    /// Starts a broker with the shipped policies and `extra` appended to the config.
    pub fn start(extra: &str) -> Self {
        Self::start_with_policies(
            extra,
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        )
    }

    pub fn start_with_policies(extra: &str, policies: &Path) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sb-test.")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let pdir = dir.path().join("policies");
        std::fs::create_dir(&pdir).unwrap();
        for e in std::fs::read_dir(policies).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), pdir.join(e.file_name())).unwrap();
            }
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).unwrap();
        std::fs::write(dir.path().join("store.key"), key).unwrap();
        let config = dir.path().join("config.toml");
        let text = format!(
            r#"
[listen]
socket = "api.sock"
mode = "0666"

[store]
backend = "embedded"
path = "store.redb"
key_file = "store.key"

[policy]
dir = "policies"

[audit]
sink = "file:audit.log"

[log]
format = "json"
level = "debug"
{extra}
"#
        );
        std::fs::write(&config, text).unwrap();
        let mut b = Broker {
            child: None,
            socket: dir.path().join("api.sock"),
            audit: dir.path().join("audit.log"),
            stderr: dir.path().join("stderr.log"),
            config,
            env: Vec::new(),
            isolated: false,
            dir,
        };
        b.spawn();
        b
    }

    /// A fresh temp dir for [`Broker::start_with_store`], so a test can put
    /// files (a token file, a CA) in it before the broker starts.
    pub fn temp_dir() -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("sb-test.")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        dir
    }

    /// Starts a broker in `dir` with the shipped policies, `store` as the
    /// whole `[store]` section's body (e.g. `backend = "vault"` and its
    /// keys), and `extra` appended to the config.
    pub fn start_with_store(dir: tempfile::TempDir, store: &str, extra: &str) -> Self {
        Self::start_with_store_env(dir, store, extra, &[])
    }

    /// [`Broker::start_with_store`] with extra environment variables for the
    /// broker process (kept for restarts).
    pub fn start_with_store_env(
        dir: tempfile::TempDir,
        store: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_store(dir, store, extra, env, false)
    }

    /// [`Broker::start_with_store_env`] with `env` as the broker's whole
    /// environment (plus `PATH`, and `HOME` = the temp dir): no credentials
    /// or config of the machine running the tests can reach the broker, so a
    /// test of a credential source sees that source alone.
    pub fn start_isolated(
        dir: tempfile::TempDir,
        store: &str,
        extra: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_store(dir, store, extra, env, true)
    }

    fn start_store(
        dir: tempfile::TempDir,
        store: &str,
        extra: &str,
        env: &[(&str, &str)],
        isolated: bool,
    ) -> Self {
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let pdir = dir.path().join("policies");
        std::fs::create_dir_all(&pdir).unwrap();
        for e in std::fs::read_dir(policies).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_file() {
                std::fs::copy(e.path(), pdir.join(e.file_name())).unwrap();
            }
        }
        let config = dir.path().join("config.toml");
        let text = format!(
            r#"
[listen]
socket = "api.sock"
mode = "0666"

[store]
{store}

[policy]
dir = "policies"

[audit]
sink = "file:audit.log"

[log]
format = "json"
level = "debug"
{extra}
"#
        );
        std::fs::write(&config, text).unwrap();
        let mut b = Broker {
            child: None,
            socket: dir.path().join("api.sock"),
            audit: dir.path().join("audit.log"),
            stderr: dir.path().join("stderr.log"),
            config,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            isolated,
            dir,
        };
        b.spawn();
        b
    }

    /// Runs `serve` as [`Broker::start_isolated`] would, for a start that
    /// must be refused: asserts the process fails and returns its stderr.
    pub fn start_refused_isolated(
        dir: &tempfile::TempDir,
        store: &str,
        env: &[(&str, &str)],
    ) -> String {
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[listen]\nsocket = \"api.sock\"\n\n[store]\n{store}\n\n[policy]\ndir = \"{}/policies\"\n",
                env!("CARGO_MANIFEST_DIR")
            ),
        )
        .unwrap();
        let out = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&config)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", dir.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "the broker started: {err}");
        err
    }

    /// `PUT` with any JSON body and extra headers, as the platform.
    pub fn put_json(
        &self,
        path: &str,
        token: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> Resp {
        let auth = format!("Bearer {token}");
        let mut h: Vec<(&str, &str)> = vec![
            ("authorization", &auth),
            ("content-type", "application/json"),
        ];
        h.extend_from_slice(headers);
        let body = body.to_string();
        self.try_request(
            "PUT",
            &format!("/v1/secrets/{path}"),
            &h,
            Some(body.as_bytes()),
        )
        .unwrap()
    }

    /// (Re)starts the process on the same dir and waits for `/healthz`.
    pub fn spawn(&mut self) {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr)
            .unwrap();
        let mut cmd = Command::new(BIN);
        if self.isolated {
            cmd.env_clear()
                .env("PATH", "/usr/bin:/bin")
                .env("HOME", self.dir.path());
        }
        let child = cmd
            .args(["serve", "--config"])
            .arg(&self.config)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("broker exited early ({status}): {}", self.stderr_text());
            }
            if let Ok(r) = self.try_request("GET", "/healthz", &[], None) {
                if r.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "broker not ready: {}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args(["-s", sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return s.code();
            }
            assert!(Instant::now() < deadline, "broker did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The audit file once it has stopped growing. With `[audit] spool`
    /// a request's line is appended right after its answer is written (it
    /// waits in the spool until then), so a client can read the file a
    /// moment before the line of the answer it just got is there. Without
    /// it, [`Broker::audit_lines`] reads the file as it is.
    pub fn audit_text(&self) -> String {
        let read = || std::fs::read_to_string(&self.audit).unwrap_or_default();
        let mut last = read();
        for _ in 0..200 {
            std::thread::sleep(Duration::from_millis(5));
            let now = read();
            if now == last {
                break;
            }
            last = now;
        }
        last
    }

    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad audit line {l:?}: {e}"))
            })
            .collect()
    }

    /// `POST /v1/uploads/{path}` with `body` as the bearer of `token`.
    pub fn mint_upload(&self, path: &str, token: &str, body: &str) -> Resp {
        let auth = format!("Bearer {token}");
        self.try_request(
            "POST",
            &format!("/v1/uploads/{path}"),
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/json"),
            ],
            Some(body.as_bytes()),
        )
        .unwrap()
    }

    pub fn try_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> std::io::Result<Resp> {
        request_on(&self.socket, method, path, headers, body)
    }

    /// Sends raw bytes on a fresh connection and returns all bytes read.
    pub fn raw(&self, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        raw_on(&self.socket, bytes)
    }

    pub fn req(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> Resp {
        let auth;
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(t) = token {
            auth = format!("Bearer {t}");
            headers.push(("authorization", &auth));
        }
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        self.try_request(method, path, &headers, body.map(str::as_bytes))
            .unwrap()
    }

    pub fn put(&self, path: &str, token: &str, value: &str) -> Resp {
        let body = serde_json::json!({ "value": value }).to_string();
        self.req(
            "PUT",
            &format!("/v1/secrets/{path}"),
            Some(token),
            Some(&body),
        )
    }

    pub fn get(&self, path: &str, token: &str) -> Resp {
        self.req("GET", &format!("/v1/secrets/{path}"), Some(token), None)
    }

    /// Runs `curl` against the socket as another uid/gid (root only).
    pub fn curl_as(
        &self,
        uid: u32,
        gid: u32,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, String) {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket"])
            .arg(&self.socket)
            .args(["-X", method]);
        if let Some(b) = body {
            cmd.args(["-H", "content-type: application/json", "--data-binary", b]);
        }
        cmd.arg(format!("http://sb{path}")).uid(uid).gid(gid);
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// Runs the CLI with the broker's socket set.
    pub fn cli(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("SECRET_BROKER_SOCKET", &self.socket)
            .env_remove("SECRET_BROKER_TOKEN")
            .env_remove("SECRET_BROKER_TOKEN_FILE")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        child.wait_with_output().unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One request on a fresh connection to `socket` (`connection: close`), for
/// tests that drive load from several threads.
pub fn request_on(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Resp> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nhost: sb\r\nconnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        raw.push_str(&format!("content-length: {}\r\n", b.len()));
    }
    raw.push_str("\r\n");
    let mut bytes = raw.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    let out = raw_on(socket, &bytes)?;
    Ok(parse_response(&out))
}

/// Sends raw bytes on a fresh connection to `socket`; returns all bytes read.
pub fn raw_on(socket: &Path, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    // A server that answers early (413) may close before reading it all.
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// Reads one `content-length` framed answer from a keep-alive connection
/// into `buf` (head and body) and returns its status (the benches' clients).
pub fn read_framed(s: &mut impl Read, buf: &mut Vec<u8>) -> u16 {
    buf.clear();
    let mut chunk = [0u8; 16384];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed mid-response");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if buf.len() >= end + 4 + len {
            return head[9..12].parse().unwrap();
        }
    }
}

pub fn parse_response(out: &[u8]) -> Resp {
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(out)));
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = out[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}
