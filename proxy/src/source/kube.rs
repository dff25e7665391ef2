//! Route ConfigMaps from a Kubernetes cluster (`--kube-routes`): every ConfigMap matching a
//! label selector, in one namespace or all, watched and handed to [`Layers`]; each one that
//! is rejected gets a Warning Event naming its bad fields. Only this module speaks to the API
//! server; without `--kube-routes` none of it runs.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher::{self, Event as Change};
use kube::{Resource, ResourceExt};

use super::layers::{DATA_KEY, Layers, Rejection};
use crate::config::LayerId;
use crate::shutdown::{ShutdownSignal, stopped};
use crate::state::ConfigState;

/// The label selector of the route ConfigMaps when `--kube-routes` names none.
pub const DEFAULT_SELECTOR: &str = "weir.dev/gateway=weir";

/// The reason of the Event on a rejected ConfigMap.
pub const REJECTED_REASON: &str = "ConfigRejected";

/// What the readiness check says while the first list is awaited.
pub const WAITING_FOR: &str = "the route ConfigMaps' first list";

/// Where to look for route ConfigMaps.
#[derive(Clone, Debug)]
pub struct Selection {
    /// The label selector.
    pub selector: String,
    /// One namespace, or all of them.
    pub namespace: Option<String>,
}

/// Watches the selected ConfigMaps until `shutdown`, merging each change into `layers`.
/// Readiness waits (through `state`) until the first full list has been merged.
pub async fn watch(
    client: kube::Client,
    selection: Selection,
    layers: Arc<Layers>,
    state: Arc<ConfigState>,
    shutdown: ShutdownSignal,
) {
    let api: Api<ConfigMap> = match &selection.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let reporter = Reporter {
        controller: "weir-proxy".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let config = watcher::Config::default().labels(&selection.selector);
    let changes = watcher::watcher(api, config).default_backoff();
    tokio::pin!(changes);
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    // The ConfigMaps of a list in progress: merged at once when it ends, so a restarted
    // watch never publishes a half list.
    let mut listing: Option<Vec<(LayerId, Option<String>)>> = None;
    // The objects seen, for the Events' references.
    let mut seen: BTreeMap<(String, String), ConfigMap> = BTreeMap::new();
    loop {
        let change = tokio::select! {
            () = &mut stop => return,
            () = layers.rejections_waiting() => {
                for rejection in layers.take_rejections() {
                    report(&client, &reporter, &seen, &rejection).await;
                }
                continue;
            }
            change = changes.next() => change,
        };
        let rejections = match change {
            None => return,
            Some(Err(error)) => {
                tracing::warn!(%error, selector = %selection.selector, "watching route ConfigMaps failed; retrying");
                continue;
            }
            Some(Ok(Change::Init)) => {
                listing = Some(Vec::new());
                Vec::new()
            }
            Some(Ok(Change::InitApply(cm))) => {
                listing.get_or_insert_with(Vec::new).push(text_of(&cm));
                remember(&mut seen, cm);
                Vec::new()
            }
            Some(Ok(Change::InitDone)) => {
                let config_maps = listing.take().unwrap_or_default();
                seen.retain(|(ns, name), _| {
                    config_maps
                        .iter()
                        .any(|(id, _)| id.namespace == *ns && id.name == *name)
                });
                tracing::info!(
                    count = config_maps.len(),
                    selector = %selection.selector,
                    "route ConfigMaps listed"
                );
                let rejections = layers.replace_all(config_maps);
                state.wait_for(None);
                rejections
            }
            Some(Ok(Change::Apply(cm))) => {
                let (id, text) = text_of(&cm);
                remember(&mut seen, cm);
                layers.set(id, text.as_deref())
            }
            Some(Ok(Change::Delete(cm))) => {
                let (namespace, name) = (cm.namespace().unwrap_or_default(), cm.name_any());
                seen.remove(&(namespace.clone(), name.clone()));
                layers.remove(&namespace, &name)
            }
        };
        for rejection in rejections {
            report(&client, &reporter, &seen, &rejection).await;
        }
    }
}

/// A route ConfigMap's identity (its age first) and its `config.yaml`, if it has one: how the
/// proxies (and the controller, checking its own route against them) read one.
pub fn text_of(cm: &ConfigMap) -> (LayerId, Option<String>) {
    let id = LayerId {
        created: cm
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(i64::MAX, |t| t.0.as_second()),
        namespace: cm.metadata.namespace.clone().unwrap_or_default(),
        name: cm.metadata.name.clone().unwrap_or_default(),
    };
    let text = cm.data.as_ref().and_then(|d| d.get(DATA_KEY)).cloned();
    (id, text)
}

fn remember(seen: &mut BTreeMap<(String, String), ConfigMap>, cm: ConfigMap) {
    let key = (
        cm.metadata.namespace.clone().unwrap_or_default(),
        cm.metadata.name.clone().unwrap_or_default(),
    );
    seen.insert(key, cm);
}

/// How long posting one Event may take: the watch loop waits for it, and weight writes wait
/// for the watch loop.
const EVENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A Warning Event on the rejected ConfigMap, naming every bad field. A failure to post it is
/// logged: the rejection itself is already in the log, the metrics and `/config`.
///
/// Each Event is posted by a recorder of its own: a recorder that saw an Event of the same
/// reason on the same object would only count it again, keeping the first one's note, and a
/// second rejection's errors would never be shown.
async fn report(
    client: &kube::Client,
    reporter: &Reporter,
    seen: &BTreeMap<(String, String), ConfigMap>,
    rejection: &Rejection,
) {
    let key = (rejection.id.namespace.clone(), rejection.id.name.clone());
    let Some(cm) = seen.get(&key) else {
        return;
    };
    let serving = if rejection.kept_previous {
        "its previous version keeps serving"
    } else {
        "none of its routes serve"
    };
    let note = truncate(&format!("rejected, {serving}: {}", rejection.errors), 1000);
    let event = Event {
        type_: EventType::Warning,
        reason: REJECTED_REASON.into(),
        note: Some(note),
        action: "LoadRoutes".into(),
        secondary: None,
    };
    let recorder = Recorder::new(client.clone(), reporter.clone());
    match tokio::time::timeout(EVENT_TIMEOUT, recorder.publish(&event, &cm.object_ref(&()))).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, configmap = %rejection.id, "cannot post the Event on a rejected ConfigMap");
        }
        Err(_) => tracing::warn!(configmap = %rejection.id, "posting the Event on a rejected ConfigMap timed out"),
    }
}

/// `text` cut to at most `max` bytes on a character boundary, with an ellipsis if cut: an
/// Event's note is limited to 1 kB.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_notes_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate(&"é".repeat(600), 1000);
        assert!(cut.len() <= 1000 && cut.ends_with("..."), "{}", cut.len());
    }
}
