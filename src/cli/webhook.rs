//! `secret-broker webhook`: the Kubernetes mutating admission webhook over
//! HTTPS, injecting the broker sidecar into annotated pods and workloads.

use std::path::PathBuf;

use clap::Args;

use super::Exit;
use crate::webhook::{WebhookError, WebhookOptions};

/// Arguments of `webhook`.
#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// PEM certificate chain (re-read when it changes).
    #[arg(long, value_name = "C")]
    tls_cert: PathBuf,
    /// PEM private key (re-read when it changes).
    #[arg(long, value_name = "K")]
    tls_key: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    addr: String,
    /// How often to look for a rotated certificate (e.g. `30s`, `500ms`).
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    reload_interval: std::time::Duration,
    /// Operational log level (a tracing filter; RUST_LOG overrides).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// The broker image where a pod sets no `secret-broker.io/image` (for a
    /// mirror in an air-gapped cluster) [default: the image of this release]
    #[arg(long, value_name = "IMAGE", env = "SECRET_BROKER_IMAGE", value_parser = super::inject::parse_image)]
    image: Option<String>,
}

fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    match crate::config::parse_duration(s)? {
        d if d.is_zero() => Err("must be more than 0".into()),
        d => Ok(d),
    }
}

/// Runs `webhook`.
pub async fn run(args: WebhookArgs) -> Exit {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&args.log_level));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let opts = WebhookOptions {
        cert: args.tls_cert,
        key: args.tls_key,
        reload_every: args.reload_interval,
        inject: crate::inject::InjectOptions {
            image: args
                .image
                .unwrap_or_else(|| crate::inject::InjectOptions::default().image),
        },
    };
    match crate::webhook::run(&args.addr, &opts).await {
        Ok(()) => Exit::Ok,
        Err(e) => {
            tracing::error!(error = %e, "secret-broker webhook could not start");
            eprintln!("error: {e}");
            match e {
                WebhookError::Read { .. } | WebhookError::Tls { .. } => Exit::Config,
                WebhookError::Bind { .. } | WebhookError::Signals(_) => Exit::Software,
            }
        }
    }
}
