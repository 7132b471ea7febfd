//! The README's 60-second tour, walked: every `$ ` command of its second
//! console block runs against a real `serve --dev` broker (with `cargo run
//! -q --` standing for the built binary), and what it prints must be what
//! the README shows, timestamps and request ids aside. So the README cannot
//! drift from what a newcomer sees.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One command of the tour and the lines the README shows it printing.
struct Step {
    command: String,
    expected: Vec<String>,
}

/// The tour's console blocks after the one that starts the broker.
fn tour_steps(readme: &str) -> Vec<Step> {
    let tour = readme
        .split("## 60-second tour")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("the README has a tour");
    let blocks: Vec<&str> = tour
        .split("```console\n")
        .skip(1)
        .filter_map(|b| b.split("\n```").next())
        .collect();
    assert!(blocks.len() >= 2, "the tour has its two console blocks");
    let mut steps: Vec<Step> = Vec::new();
    let mut continued = false;
    for line in blocks[1].lines() {
        if continued {
            let step = steps.last_mut().unwrap();
            step.command.push(' ');
            step.command.push_str(line.trim().trim_end_matches('\\'));
            continued = line.ends_with('\\');
        } else if let Some(cmd) = line.strip_prefix("$ ") {
            continued = cmd.ends_with('\\');
            steps.push(Step {
                command: cmd.trim_end_matches('\\').to_owned(),
                expected: Vec::new(),
            });
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            steps
                .last_mut()
                .expect("output follows a command")
                .expected
                .push(line.to_owned());
        }
    }
    steps
}

/// Replaces what differs from run to run: RFC 3339 timestamps with
/// milliseconds, and request ids (`"request_id":"…"`, `request …)`).
fn normalize(line: &str) -> String {
    let mut out = String::new();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // `dddd-dd-ddTdd:dd:dd.dddZ`
        let ts = b.len() >= i + 24
            && b[i..i + 24].iter().enumerate().all(|(k, c)| match k {
                4 | 7 => *c == b'-',
                10 => *c == b'T',
                13 | 16 => *c == b':',
                19 => *c == b'.',
                23 => *c == b'Z',
                _ => c.is_ascii_digit(),
            });
        if ts {
            out.push_str("<ts>");
            i += 24;
        } else {
            out.push(char::from(b[i]));
            i += 1;
        }
    }
    for (open, close) in [("\"request_id\":\"", '"'), ("request ", ')')] {
        if let Some(start) = out.find(open) {
            let from = start + open.len();
            if let Some(len) = out[from..].find(close) {
                out.replace_range(from..from + len, "...");
            }
        }
    }
    out
}

#[test]
fn the_tour_runs_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let steps = tour_steps(&readme);
    assert!(steps.len() >= 8, "{} steps", steps.len());
    if Command::new("curl").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the README walk needs curl"
        );
        eprintln!("*** SKIPPED the_tour_runs_as_written: no curl ***");
        return;
    }

    let mut broker = Command::new(common::BIN)
        .args(["serve", "--dev"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(broker.stderr.take().unwrap());
    let (mut socket, mut token) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut line = String::new();
    while (socket.is_none() || token.is_none()) && Instant::now() < deadline {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let l = line.trim();
        if let Some(s) = l.strip_prefix("export SECRET_BROKER_SOCKET=") {
            socket = Some(s.to_owned());
        }
        if let Some(t) = l.strip_prefix("export PLATFORM_TOKEN=") {
            token = Some(t.to_owned());
        }
    }
    let (socket, token) = (
        socket.expect("banner names the socket"),
        token.expect("banner prints a token"),
    );

    for step in &steps {
        let command = step.command.replace("cargo run -q --", common::BIN);
        let out = Command::new("sh")
            .arg("-c")
            .arg(&command)
            .env("SECRET_BROKER_SOCKET", &socket)
            .env("PLATFORM_TOKEN", &token)
            .env_remove("SECRET_BROKER_TOKEN")
            .env_remove("SECRET_BROKER_TOKEN_FILE")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        // The console shows stdout and stderr together; each of these
        // commands writes one of them.
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        let got: Vec<String> = text.lines().map(normalize).collect();
        let want: Vec<String> = step.expected.iter().map(|l| normalize(l)).collect();
        assert_eq!(got, want, "README tour step `$ {}`", step.command);
    }

    Command::new("kill")
        .args(["-TERM", &broker.id().to_string()])
        .status()
        .unwrap();
    assert!(broker.wait().unwrap().success());
}

#[test]
fn normalizing_keeps_all_but_timestamps_and_request_ids() {
    assert_eq!(
        normalize(r#"{"created_at":"2026-11-22T01:02:03.456Z","path":"dev/db","version":1}"#),
        r#"{"created_at":"<ts>","path":"dev/db","version":1}"#
    );
    assert_eq!(
        normalize(r#"{"error":{"code":"forbidden","request_id":"0a1b2c3d-1f"}}"#),
        r#"{"error":{"code":"forbidden","request_id":"..."}}"#
    );
    assert_eq!(
        normalize("error: x (status 403, request 0a1b2c3d-1f)"),
        "error: x (status 403, request ...)"
    );
    assert_eq!(
        normalize("dev/db\tv2\t2026-11-22T01:02:09.120Z"),
        "dev/db\tv2\t<ts>"
    );
}
