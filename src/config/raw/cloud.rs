//! Validation of the `gcp` and `azure` store keys (`[store]` in DESIGN.md).

use std::path::Path;

use super::{RawStore, url};
use crate::config::{
    AzureConfig, AzureCredentials, ConfigError, GcpConfig, GcpCredentials, invalid, resolve,
};

impl RawStore {
    pub(super) fn gcp(self) -> Result<GcpConfig, ConfigError> {
        let remote = self.remote()?;
        let project = self.project.ok_or_else(|| {
            invalid(
                "store.project",
                "the gcp store needs the project id, e.g. \"my-project\"",
            )
        })?;
        // Project ids: 6-30 of lowercase letters, digits and hyphens; older
        // projects may carry a `domain.com:` prefix.
        let id = project
            .rsplit_once(':')
            .map_or(project.as_str(), |(_, id)| id);
        let ok = !id.is_empty()
            && project.len() <= 64
            && project.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b':')
            });
        if !ok {
            return Err(invalid(
                "store.project",
                format!("`{project}` is not a project id such as \"my-project\""),
            ));
        }
        let endpoint = self
            .endpoint
            .map(|u| url("store.endpoint", u))
            .transpose()?;
        let credentials = match self.credentials.as_deref().unwrap_or("default") {
            "default" => GcpCredentials::Default,
            "anonymous" => GcpCredentials::Anonymous,
            other => {
                return Err(invalid(
                    "store.credentials",
                    format!("`{other}` is not one of default, anonymous"),
                ));
            }
        };
        if credentials == GcpCredentials::Anonymous && endpoint.is_none() {
            // SECURITY: Google's endpoint refuses anonymous calls anyway;
            // saying so here beats a start-up failure.
            return Err(invalid(
                "store.credentials",
                "\"anonymous\" is only for a local test server; set store.endpoint, or use \"default\"",
            ));
        }
        Ok(GcpConfig {
            project,
            endpoint,
            credentials,
            remote,
        })
    }

    pub(super) fn azure(self, base: &Path) -> Result<AzureConfig, ConfigError> {
        let remote = self.remote()?;
        let vault_url = url(
            "store.vault_url",
            self.vault_url.ok_or_else(|| {
                invalid(
                    "store.vault_url",
                    "the azure store needs the vault's URL, e.g. \"https://NAME.vault.azure.net\"",
                )
            })?,
        )?;
        if !vault_url.starts_with("https://") {
            return Err(invalid(
                "store.vault_url",
                format!("`{vault_url}`: Key Vault is reached over https only"),
            ));
        }
        let method = self.credentials.as_deref().unwrap_or("default");
        let not_for = |key: &str, set: bool| -> Result<(), ConfigError> {
            if set {
                Err(invalid(
                    format!("store.{key}"),
                    format!("does not apply to credentials = \"{method}\"; remove it"),
                ))
            } else {
                Ok(())
            }
        };
        let credentials = match method {
            "default" | "workload" => {
                not_for("tenant_id", self.tenant_id.is_some())?;
                not_for("client_id", self.client_id.is_some())?;
                not_for("client_secret_file", self.client_secret_file.is_some())?;
                if method == "default" {
                    AzureCredentials::Default
                } else {
                    AzureCredentials::Workload
                }
            }
            "client_secret" => {
                let guid = |key: &str, v: Option<String>| -> Result<String, ConfigError> {
                    let v = v.ok_or_else(|| {
                        invalid(
                            format!("store.{key}"),
                            "credentials = \"client_secret\" needs it",
                        )
                    })?;
                    let ok = !v.is_empty()
                        && v.len() <= 64
                        && v.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.'));
                    if ok {
                        Ok(v)
                    } else {
                        Err(invalid(
                            format!("store.{key}"),
                            format!("`{v}` is not an id such as a GUID"),
                        ))
                    }
                };
                AzureCredentials::ClientSecret {
                    tenant_id: guid("tenant_id", self.tenant_id)?,
                    client_id: guid("client_id", self.client_id)?,
                    client_secret_file: self
                        .client_secret_file
                        .map(|p| resolve(base, &p))
                        .ok_or_else(|| {
                            invalid(
                                "store.client_secret_file",
                                "credentials = \"client_secret\" needs the file holding the secret",
                            )
                        })?,
                }
            }
            other => {
                return Err(invalid(
                    "store.credentials",
                    format!("`{other}` is not one of default, workload, client_secret"),
                ));
            }
        };
        Ok(AzureConfig {
            vault_url,
            credentials,
            remote,
        })
    }
}
