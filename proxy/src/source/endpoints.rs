//! The endpoints of the Services that route ConfigMaps' backends name (`{ service, port }`):
//! Services and EndpointSlices watched (in one namespace or all), and every followed Service
//! port's ready endpoints put in its cell whenever either changes. Only this module and
//! `kube` speak to the API server.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use crate::shutdown::{ShutdownSignal, stopped};
use crate::upstream::discovery::{Discovery, SERVICE_NAME_LABEL, ready_endpoints};

/// Follows Services and EndpointSlices in `namespace` (or all) until `shutdown`, keeping the
/// cells of `discovery` current.
pub async fn watch(
    client: kube::Client,
    namespace: Option<String>,
    discovery: Arc<Discovery>,
    shutdown: ShutdownSignal,
) {
    fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let (services, service_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let service_changes = reflector::reflector(
        service_writer,
        watcher::watcher(
            api::<Service>(&client, namespace.as_deref()),
            watcher::Config::default(),
        ),
    )
    .default_backoff();
    let slice_changes = reflector::reflector(
        slice_writer,
        watcher::watcher(
            api::<EndpointSlice>(&client, namespace.as_deref()),
            watcher::Config::default().labels(SERVICE_NAME_LABEL),
        ),
    )
    .default_backoff();
    tokio::pin!(service_changes, slice_changes);
    let stop = stopped(shutdown);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = discovery.newly_wanted() => {}
            change = service_changes.next() => match change {
                None => return,
                Some(Err(error)) => { tracing::warn!(%error, "watching Services failed; retrying"); continue; }
                Some(Ok(_)) => {}
            },
            change = slice_changes.next() => match change {
                None => return,
                Some(Err(error)) => { tracing::warn!(%error, "watching EndpointSlices failed; retrying"); continue; }
                Some(Ok(_)) => {}
            },
        }
        refresh(&discovery, &services, &slices);
    }
}

/// Recomputes every followed Service port from the stores, after forgetting those no table
/// names any more.
fn refresh(discovery: &Discovery, services: &Store<Service>, slices: &Store<EndpointSlice>) {
    discovery.prune();
    let all_slices = slices.state();
    for service in discovery.services() {
        let object = services.get(&ObjectRef::new(&service.name).within(&service.namespace));
        let own: Vec<&EndpointSlice> = all_slices
            .iter()
            .filter(|s| {
                s.namespace().as_deref() == Some(service.namespace.as_str())
                    && s.labels().get(SERVICE_NAME_LABEL) == Some(&service.name)
            })
            .map(AsRef::as_ref)
            .collect();
        discovery.set(&service, ready_endpoints(object.as_deref(), service.port, &own));
    }
}
