//! Gives each test its own namespace on the shared cluster and a `kube::Client`
//! whose default namespace is that one. Creates; never deletes: the cluster
//! and everything in it go away with the test binary.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::cluster;
use crate::wait::{Check, eventually};

/// Bound on every single API call the harness makes.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A namespace owned by one test.
#[derive(Clone)]
pub struct TestNamespace {
    /// The namespace's name.
    pub name: String,
    /// A client whose default namespace is `name` (admin rights).
    pub client: kube::Client,
}

impl TestNamespace {
    /// Creates a namespace named after `test` on the shared cluster (starting
    /// it, and building its binary, on first use) and waits until Pods can be
    /// created in it (its `default` ServiceAccount exists).
    pub async fn create(test: &str) -> Result<TestNamespace> {
        install_crypto_provider();
        let shared = tokio::task::spawn_blocking(cluster::shared).await??;
        let name = namespace_name(test);
        let admin = client(&shared.cluster.kubeconfig, None).await?;
        let namespaces: Api<Namespace> = Api::all(admin.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("weir.dev/test".to_owned(), label_value(test))].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        tokio::time::timeout(CALL_TIMEOUT, namespaces.create(&PostParams::default(), &ns))
            .await
            .context("create namespace: timed out")?
            .with_context(|| format!("create namespace {name}"))?;

        let accounts: Api<ServiceAccount> = Api::namespaced(admin, &name);
        eventually(
            &format!("service account {name}/default"),
            Duration::from_secs(60),
            || async {
                Ok(match accounts.get_opt("default").await? {
                    Some(_) => Check::Done(()),
                    None => Check::Waiting("not created yet".to_owned()),
                })
            },
        )
        .await?;

        let client = client(&shared.cluster.kubeconfig, Some(&name)).await?;
        Ok(TestNamespace { name, client })
    }
}

/// A client from `kubeconfig`, with `namespace` as its default namespace when
/// given.
pub async fn client(kubeconfig: &Path, namespace: Option<&str>) -> Result<kube::Client> {
    install_crypto_provider();
    let raw = Kubeconfig::read_from(kubeconfig).with_context(|| format!("read kubeconfig {}", kubeconfig.display()))?;
    let mut config = kube::Config::from_custom_kubeconfig(raw, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("load kubeconfig {}", kubeconfig.display()))?;
    if let Some(ns) = namespace {
        config.default_namespace = ns.to_owned();
    }
    kube::Client::try_from(config).context("build kube client")
}

/// Installs ring as rustls's process-wide crypto provider, unless one is
/// installed already. kube's client needs one, and with more than one rustls
/// provider compiled into the workspace rustls cannot pick one by itself.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// `t-<test name, DNS-label safe>-<n>`, unique within this test binary and at
/// most 63 characters.
fn namespace_name(test: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("-{n}");
    let mut base: String = label_value(test).to_ascii_lowercase().replace(['_', '.'], "-");
    base.truncate(63 - 2 - suffix.len());
    let base = base.trim_matches('-');
    format!("t-{base}{suffix}")
}

/// `test` reduced to what a label value may hold (alphanumerics, `-_.`,
/// at most 63 characters, alphanumeric at both ends).
fn label_value(test: &str) -> String {
    let mut value: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    value.truncate(63);
    value.trim_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_are_dns_labels() {
        let name = namespace_name("deployment_rolls_out::with a very long name that goes on and on and on");
        assert!(name.len() <= 63, "{name}");
        assert!(name.starts_with("t-deployment-rolls-out"), "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}"
        );
        assert!(!name.ends_with('-'));
    }
}
