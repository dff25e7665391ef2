//! A Deployment's revision: the first 16 hex digits of SHA-256 over its pod template's
//! canonical JSON, without the selector's labels and `pod-template-hash`, so that stable and
//! candidate (whose selectors differ) have the same revision when they run the same thing.
//! Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use sha2::{Digest, Sha256};

/// The label the Deployment controller adds to its ReplicaSets' pods.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The revision of `template` under a Deployment whose selector matches `selector`.
pub fn revision(template: &PodTemplateSpec, selector: &BTreeMap<String, String>) -> String {
    let canonical = serde_json::to_string(&comparable(template, selector))
        .expect("a pod template always serialises: it is plain data");
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// `template` without the selector's labels and `pod-template-hash`: what promotion copies.
pub fn comparable(template: &PodTemplateSpec, selector: &BTreeMap<String, String>) -> serde_json::Value {
    let mut template = template.clone();
    if let Some(meta) = template.metadata.as_mut() {
        if let Some(labels) = meta.labels.as_mut() {
            labels.retain(|k, v| k != POD_TEMPLATE_HASH && selector.get(k) != Some(v));
            if labels.is_empty() {
                meta.labels = None;
            }
        }
    }
    // serde_json's map is ordered, so equal templates give equal text.
    serde_json::to_value(&template).expect("a pod template always serialises: it is plain data")
}

/// `candidate`'s template as stable runs it: the candidate's selector labels swapped for
/// stable's, everything else as analysed.
pub fn for_stable(
    candidate: &PodTemplateSpec,
    candidate_selector: &BTreeMap<String, String>,
    stable_selector: &BTreeMap<String, String>,
) -> PodTemplateSpec {
    let mut template = candidate.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.retain(|k, v| k != POD_TEMPLATE_HASH && candidate_selector.get(k) != Some(v));
    labels.extend(stable_selector.iter().map(|(k, v)| (k.clone(), v.clone())));
    template
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(app: &str, image: &str) -> PodTemplateSpec {
        serde_json::from_value(serde_json::json!({
            "metadata": { "labels": { "app": app, "tier": "model", "pod-template-hash": "abc" } },
            "spec": { "containers": [{ "name": "server", "image": image }] }
        }))
        .expect("a template")
    }

    fn selector(app: &str) -> BTreeMap<String, String> {
        [("app".to_owned(), app.to_owned())].into()
    }

    #[test]
    fn the_same_template_under_different_selectors_is_one_revision() {
        let stable = revision(&template("m-v1", "m:2"), &selector("m-v1"));
        let candidate = revision(&template("m-v2", "m:2"), &selector("m-v2"));
        assert_eq!(stable, candidate);
        assert_eq!(stable.len(), 16);
        assert_ne!(stable, revision(&template("m-v2", "m:3"), &selector("m-v2")));
        assert_ne!(
            stable,
            revision(&template("m-v1", "m:2"), &selector("other")),
            "a label outside the selector is part of the template"
        );
    }

    #[test]
    fn stable_runs_the_candidates_template_with_its_own_selector_labels() {
        let copied = for_stable(&template("m-v2", "m:3"), &selector("m-v2"), &selector("m-v1"));
        let labels = copied
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        assert_eq!(labels.get("app").map(String::as_str), Some("m-v1"));
        assert_eq!(labels.get("tier").map(String::as_str), Some("model"));
        assert!(!labels.contains_key("pod-template-hash"));
        assert_eq!(
            revision(&copied, &selector("m-v1")),
            revision(&template("m-v2", "m:3"), &selector("m-v2"))
        );
    }
}
