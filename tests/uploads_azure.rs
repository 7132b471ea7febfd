//! Task output uploads to Azure end to end: the real broker mints a service
//! SAS with `[uploads] backend = "azure"`, and Azurite (from npm; it checks
//! SAS signatures, expiry and permissions, and refuses a `PUT` over an
//! existing blob with `sp=c`) is the bucket. The test reads the bytes back
//! with an account SAS of its own, signed here from the account key.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/broker.rs"]
mod common;

#[path = "common/servers.rs"]
mod servers;

use base64::Engine as _;
use hmac::Mac as _;

use common::{Broker, PLATFORM_TOKEN, Resp, TASK_TOKEN, default_principals};

/// Azurite's one account and its published key.
const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// Azurite 3.35.0, the last release that runs on Debian's node 20.
const AZURITE: &str = "azurite@3.35.0";
const TASK_B_TOKEN: &str = "task-b-token-0011223344556677";

/// Azurite's blob service on a free loopback port, with its data in a temp
/// dir; killed (by PID) when dropped. `$SB_AZURITE` names the package's
/// directory, else `.backends/azurite` (scripts/backends install azure).
struct Azurite {
    child: std::process::Child,
    /// `http://127.0.0.1:PORT/devstoreaccount1`.
    service: String,
    _dir: tempfile::TempDir,
}

impl Azurite {
    fn start() -> Option<Self> {
        let pkg = std::env::var("SB_AZURITE").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/.backends/azurite/node_modules/azurite"
            )
            .to_owned()
        });
        let main = std::path::Path::new(&pkg).join("dist/src/blob/main.js");
        if !main.exists() {
            eprintln!(
                "\n*** SKIPPED uploads through Azurite: `{pkg}` is missing; \
                 npm install --prefix .backends/azurite {AZURITE} ***\n"
            );
            // As for the store servers: under CI an absent server fails.
            assert!(
                std::env::var_os("CI").is_none(),
                "Azurite is missing and CI is set (scripts/backends install azure installs it)"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = servers::free_port();
        let child = std::process::Command::new("node")
            .arg(&main)
            .args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(port.to_string())
            .arg("--location")
            .arg(dir.path())
            .args(["--disableTelemetry", "--silent"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut a = Self {
            child,
            service: format!("http://127.0.0.1:{port}/{ACCOUNT}"),
            _dir: dir,
        };
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let (status, body) = servers::curl(&[
                    "-X",
                    "PUT",
                    &format!(
                        "{}/task-output?restype=container&{}",
                        a.service,
                        admin_sas()
                    ),
                ]);
                assert_eq!(status, 201, "cannot create the container: {body}");
                return Some(a);
            }
            assert!(a.child.try_wait().unwrap().is_none(), "Azurite exited");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("Azurite did not listen on {port}");
    }

    /// The blob's bytes read back with the test's own SAS, or the status.
    fn read(&self, blob: &str) -> Result<Vec<u8>, u16> {
        let out = std::process::Command::new("curl")
            .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
            .arg(format!(
                "{}/task-output/{blob}?{}",
                self.service,
                admin_sas()
            ))
            .output()
            .unwrap();
        let split = out.stdout.iter().rposition(|&b| b == b'\n').unwrap();
        let status: u16 = std::str::from_utf8(&out.stdout[split + 1..])
            .unwrap()
            .parse()
            .unwrap();
        if status == 200 {
            Ok(out.stdout[..split].to_vec())
        } else {
            Err(status)
        }
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hmac_b64(text: &str) -> String {
    let key = base64::engine::general_purpose::STANDARD
        .decode(KEY)
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(text.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An account SAS with every blob permission for an hour: the test's own
/// admin credential (create the container, read back), independent of the
/// broker's signer.
fn admin_sas() -> String {
    let se = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let (sp, ss, srt, spr, sv) = ("racwdl", "b", "sco", "https,http", "2022-11-02");
    // Account SAS string-to-sign, versions 2020-12-06 and later.
    let sig = hmac_b64(&format!(
        "{ACCOUNT}\n{sp}\n{ss}\n{srt}\n\n{se}\n\n{spr}\n{sv}\n\n"
    ));
    format!(
        "sv={sv}&ss={ss}&srt={srt}&sp={sp}&se={}&spr={}&sig={}",
        enc(&se),
        enc(spr),
        enc(&sig)
    )
}

fn start_broker(azurite: &str, expiry: &str) -> Broker {
    let dir = Broker::temp_dir();
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).unwrap();
    std::fs::write(dir.path().join("store.key"), key).unwrap();
    // As `az storage account keys list` prints it, with echo's newline.
    std::fs::write(dir.path().join("azure.key"), format!("{KEY}\n")).unwrap();
    let extra = format!(
        r#"{}
[[principal]]
name = "task-b"
type = "Task"
scope = "acme/tasks/t-43"
token_sha256 = "{}"

[uploads]
backend = "azure"
bucket = "task-output"
prefix = "tenant-a/"
expiry = "{expiry}"
max_size = "1MiB"
account = "{ACCOUNT}"
account_key_file = "azure.key"
endpoint = "{azurite}"
"#,
        default_principals(),
        common::sha256_hex(TASK_B_TOKEN)
    );
    Broker::start_isolated(
        dir,
        "backend = \"embedded\"\npath = \"store.redb\"\nkey_file = \"store.key\"",
        &extra,
        &[("RUST_LOG", "trace")],
    )
}

fn mint(b: &Broker, path: &str, token: &str, body: &str) -> Resp {
    b.mint_upload(path, token, body)
}

#[test]
fn a_task_uploads_to_azurite_once_and_the_url_does_nothing_else() {
    let Some(az) = Azurite::start() else { return };
    let b = start_broker(&az.service, "5m");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.tar");
    let data = b"the output of task 42, straight into the container";
    std::fs::write(&file, data).unwrap();
    let body = format!(
        r#"{{"size": {}, "content_type": "application/x-tar"}}"#,
        data.len()
    );

    let r = mint(&b, "acme/tasks/t-42/out.tar", TASK_TOKEN, &body);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let j = r.json();
    assert_eq!(j["object"], "tenant-a/acme/tasks/t-42/out.tar");
    assert_eq!(j["method"], "PUT");
    let url = j["url"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!(
            "{}/task-output/tenant-a/acme/tasks/t-42/out.tar?",
            az.service
        )),
        "{url}"
    );
    let q = servers::url_query(&url);
    // Create only, one blob, no start time; http allowed only because the
    // endpoint is loopback.
    assert_eq!(q["sp"], "c");
    assert_eq!(q["sr"], "b");
    assert_eq!(q["spr"], "https,http");
    assert!(!q.contains_key("st"), "{q:?}");
    let expires_at: jiff::Timestamp = j["expires_at"].as_str().unwrap().parse().unwrap();
    let se: jiff::Timestamp = q["se"].parse().unwrap();
    assert_eq!(se, expires_at);
    let headers = servers::minted_headers::<Vec<_>>(&j);
    assert_eq!(
        headers,
        [
            ("x-ms-blob-type".to_owned(), "BlockBlob".to_owned()),
            ("content-type".to_owned(), "application/x-tar".to_owned()),
        ]
    );

    // What the SAS pins, each refused by Azurite before anything is stored:
    // another method, another blob name, a wider permission.
    assert_eq!(
        servers::curl_send("GET", &url, &[], None),
        403,
        "GET with the create url"
    );
    let renamed = url.replacen("/out.tar?", "/other.tar?", 1);
    assert_eq!(
        servers::curl_send("PUT", &renamed, &headers, Some(&file)),
        403,
        "edited blob name"
    );
    let widened = url.replacen("&sp=c&", "&sp=cw&", 1);
    assert_ne!(widened, url);
    assert_eq!(
        servers::curl_send("PUT", &widened, &headers, Some(&file)),
        403,
        "permission widened to write"
    );
    assert_eq!(az.read("tenant-a/acme/tasks/t-42/out.tar"), Err(404));
    assert_eq!(az.read("tenant-a/acme/tasks/t-42/other.tar"), Err(404));

    // As minted, it uploads once, and the bytes arrive.
    assert_eq!(servers::curl_send("PUT", &url, &headers, Some(&file)), 201);
    assert_eq!(
        az.read("tenant-a/acme/tasks/t-42/out.tar").unwrap(),
        data.as_slice()
    );

    // The same URL cannot overwrite, delete or read what it uploaded.
    let other = dir.path().join("other");
    std::fs::write(&other, b"overwritten!").unwrap();
    assert_eq!(
        servers::curl_send("PUT", &url, &headers, Some(&other)),
        403,
        "overwrite"
    );
    assert_eq!(servers::curl_send("DELETE", &url, &[], None), 403, "DELETE");
    assert_eq!(
        servers::curl_send("GET", &url, &[], None),
        403,
        "GET after upload"
    );
    assert_eq!(
        az.read("tenant-a/acme/tasks/t-42/out.tar").unwrap(),
        data.as_slice(),
        "the first upload is intact"
    );

    // Another task cannot mint in this task's scope, nor the platform at
    // all; over max_size is 413 (the SAS itself cannot pin a size).
    for (token, path) in [
        (TASK_B_TOKEN, "acme/tasks/t-42/evil.tar"),
        (TASK_TOKEN, "acme/tasks/t-43/evil.tar"),
        (PLATFORM_TOKEN, "acme/tasks/t-42/evil.tar"),
    ] {
        let r = mint(&b, path, token, &body);
        assert_eq!((r.status, r.code().as_str()), (403, "forbidden"), "{path}");
        assert!(!r.text().contains("sig="), "{}", r.text());
    }
    let r = mint(&b, "acme/tasks/t-43/b.tar", TASK_B_TOKEN, &body);
    assert_eq!(r.status, 201, "task B in its own scope: {}", r.text());
    let r = mint(
        &b,
        "acme/tasks/t-42/big",
        TASK_TOKEN,
        r#"{"size": 1048577}"#,
    );
    assert_eq!((r.status, r.code().as_str()), (413, "too_large"));

    // The audit records the upload, never the URL; nothing of the URL or
    // the key is in the audit file or the broker's trace-level output.
    let lines = b.audit_lines();
    let minted: Vec<_> = lines
        .iter()
        .filter(|l| l["action"] == "upload" && l["status"] == 201)
        .collect();
    assert_eq!(minted.len(), 2, "{lines:?}");
    assert_eq!(
        minted[0]["upload"],
        serde_json::json!({
            "object": "tenant-a/acme/tasks/t-42/out.tar",
            "size": data.len(),
            "sha256": null,
            "expires_at": j["expires_at"],
        })
    );
    let audit = b.audit_text();
    let stderr = b.stderr_text();
    // The broker logged the mint (at debug; RUST_LOG=trace shows all), so
    // the check below means something.
    assert!(
        stderr.contains("minted an upload url")
            && stderr.contains("tenant-a/acme/tasks/t-42/out.tar"),
        "{stderr}"
    );
    let sig = q["sig"].clone();
    let sig_in_url = url.rsplit_once("sig=").unwrap().1.to_owned();
    for (name, text) in [("audit", &audit), ("stderr", &stderr)] {
        for canary in [
            sig.as_str(),
            sig_in_url.as_str(),
            KEY,
            &KEY[..20],
            "sig=",
            url.as_str(),
        ] {
            assert!(!text.contains(canary), "{name} holds `{canary}`");
        }
    }
}

#[test]
fn an_expired_azure_url_is_refused() {
    let Some(az) = Azurite::start() else { return };
    let b = start_broker(&az.service, "1s");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("late");
    let data = b"uploaded too late";
    std::fs::write(&file, data).unwrap();
    let r = mint(
        &b,
        "acme/tasks/t-42/late",
        TASK_TOKEN,
        &format!(r#"{{"size": {}}}"#, data.len()),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let j = r.json();
    // Past `se` (whole seconds; one more for the server's clock reading),
    // whatever the machine's load: time only moves on.
    let expires_at: jiff::Timestamp = j["expires_at"].as_str().unwrap().parse().unwrap();
    while jiff::Timestamp::now() <= expires_at + jiff::SignedDuration::from_secs(1) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        servers::curl_send(
            "PUT",
            j["url"].as_str().unwrap(),
            &servers::minted_headers::<Vec<_>>(&j),
            Some(&file)
        ),
        403
    );
    assert_eq!(az.read("tenant-a/acme/tasks/t-42/late"), Err(404));
}

/// A key file that is missing, empty or not base64 stops the broker at
/// start, naming the file and the key, never quoting what is in it.
#[test]
fn a_bad_account_key_file_stops_the_broker_without_quoting_it() {
    let dir = Broker::temp_dir();
    std::fs::write(dir.path().join("store.key"), [7u8; 32]).unwrap();
    let store = |key_file: &str| {
        format!(
            "backend = \"embedded\"\npath = \"{0}/store.redb\"\nkey_file = \"{0}/store.key\"\n\n\
             [uploads]\nbackend = \"azure\"\nbucket = \"task-output\"\naccount = \"{ACCOUNT}\"\n\
             account_key_file = \"{0}/{key_file}\"\n",
            dir.path().display()
        )
    };
    let err = Broker::start_refused_isolated(&dir, &store("missing.key"), &[]);
    assert!(
        err.contains("account_key_file") && err.contains("missing.key"),
        "{err}"
    );
    for (name, content) in [("text.key", "CANARY-not-a-key!"), ("empty.key", "\n")] {
        std::fs::write(dir.path().join(name), content).unwrap();
        let err = Broker::start_refused_isolated(&dir, &store(name), &[]);
        assert!(err.contains(name) && err.contains("base64"), "{err}");
        assert!(!err.contains("CANARY"), "{err}");
    }
}
