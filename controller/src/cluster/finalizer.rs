//! The finalizer `weir.dev/restore-stable`: a Rollout under `maxSurge` holds stable's pods
//! below its count, and deleting the Rollout mid-rollout must not leave them there. The
//! finalizer is on the Rollout exactly while its status records a surge (added before stable
//! is first scaled down, which needs a look after the one that records it), and its removal on
//! deletion waits for stable's replicas to be restored.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::{FIELD_MANAGER, api_error};
use crate::ports::BoxError;
use crate::rollout::Rollout;

/// The finalizer's name.
pub const FINALIZER: &str = "weir.dev/restore-stable";

/// Whether `rollout` carries the finalizer.
pub fn has(rollout: &Rollout) -> bool {
    rollout.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds or removes the finalizer, onto the version read (other finalizers are kept, and one
/// added meanwhile makes this a conflict to read again). True if it changed the Rollout, whose
/// version read is then out of date.
pub async fn set(api: &Api<Rollout>, rollout: &Rollout, present: bool) -> Result<bool, BoxError> {
    if has(rollout) == present {
        return Ok(false);
    }
    let mut finalizers: Vec<String> = rollout
        .finalizers()
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(FINALIZER.to_owned());
    }
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": rollout.meta().resource_version,
        }
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    api.patch(&rollout.name_any(), &params, &Patch::Merge(&patch))
        .await
        .map_err(|e| api_error(e, "patch", "rollouts"))?;
    Ok(true)
}
