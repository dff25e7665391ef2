//! Endpoints of Kubernetes Services, for backends named `{ service, port }`: one
//! [`EndpointCell`] per Service port, shared by every backend (of every table) that names it,
//! and kept current by the EndpointSlice watcher in `source::kube`. What counts as an endpoint
//! is decided here, purely ([`ready_endpoints`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use http::uri::Authority;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::sync::Notify;

use super::EndpointCell;
use crate::config::ServiceRef;

/// The label an EndpointSlice carries with its Service's name.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Every Service port some backend follows, with its endpoints now.
#[derive(Debug, Default)]
pub struct Discovery {
    cells: Mutex<HashMap<ServiceRef, EndpointCell>>,
    /// Woken when a Service port is asked for the first time.
    wanted: Notify,
}

impl Discovery {
    /// The cell of `service`, created empty (no endpoint until the watcher fills it) the first
    /// time it is asked for.
    pub fn cell(&self, service: &ServiceRef) -> EndpointCell {
        let mut cells = self.cells.lock().expect("no panics while holding the cells");
        if let Some(cell) = cells.get(service) {
            return Arc::clone(cell);
        }
        let cell = super::fixed(Vec::new());
        cells.insert(service.clone(), Arc::clone(&cell));
        self.wanted.notify_one();
        cell
    }

    /// Waits until a Service port is asked for that was not before.
    pub async fn newly_wanted(&self) {
        self.wanted.notified().await;
    }

    /// Forgets the Service ports no routing table names any more (only this registry holds
    /// their cell), so that a gateway whose routes come and go does not follow, and list in
    /// `/config`, every Service it ever saw. A table being compiled holds its cells, so none is
    /// forgotten under it; one named again later is filled from the watcher's store at once.
    pub fn prune(&self) {
        let mut cells = self.cells.lock().expect("no panics while holding the cells");
        cells.retain(|_, cell| Arc::strong_count(cell) > 1);
    }

    /// The Service ports followed.
    pub fn services(&self) -> Vec<ServiceRef> {
        let cells = self.cells.lock().expect("no panics while holding the cells");
        cells.keys().cloned().collect()
    }

    /// Sets the endpoints of `service`, if anything follows it; unchanged lists are not stored.
    pub fn set(&self, service: &ServiceRef, endpoints: Vec<Authority>) {
        let cells = self.cells.lock().expect("no panics while holding the cells");
        if let Some(cell) = cells.get(service)
            && **cell.load() != endpoints
        {
            tracing::info!(%service, endpoints = endpoints.len(), "discovered endpoints changed");
            cell.store(Arc::new(endpoints));
        }
    }

    /// Every followed Service port (`namespace/name:port`) with its endpoints, for `/config`.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<String>> {
        let cells = self.cells.lock().expect("no panics while holding the cells");
        cells
            .iter()
            .map(|(service, cell)| {
                (
                    service.to_string(),
                    cell.load().iter().map(ToString::to_string).collect(),
                )
            })
            .collect()
    }
}

/// The endpoints of `port` of `service` in `slices` (the Service's EndpointSlices): the Service
/// port's name picks the slice port of the same name, and only endpoints that are ready and not
/// terminating take requests. Sorted, without duplicates. No Service, or no such port: none.
pub fn ready_endpoints(service: Option<&Service>, port: u16, slices: &[&EndpointSlice]) -> Vec<Authority> {
    let Some(ports) = service.and_then(|s| s.spec.as_ref()).and_then(|s| s.ports.as_ref()) else {
        return Vec::new();
    };
    let Some(service_port) = ports.iter().find(|p| p.port == i32::from(port)) else {
        return Vec::new();
    };
    let name = service_port.name.clone().unwrap_or_default();
    let mut endpoints = Vec::new();
    for slice in slices {
        let Some(target) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.clone().unwrap_or_default() == name)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            // An unset `ready` means ready (the API's convention); terminating ones finish
            // what they have but get nothing new.
            if conditions.ready == Some(false) || conditions.terminating == Some(true) {
                continue;
            }
            for address in &endpoint.addresses {
                let host = if address.contains(':') {
                    format!("[{address}]")
                } else {
                    address.clone()
                };
                if let Ok(authority) = format!("{host}:{target}").parse::<Authority>() {
                    endpoints.push(authority);
                }
            }
        }
    }
    endpoints.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    endpoints.dedup();
    endpoints
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "m-v2", "namespace": "models" },
            "spec": { "ports": [
                { "name": "http", "port": 8000, "targetPort": 9000 },
                { "name": "metrics", "port": 9090 }
            ] }
        }))
        .expect("a Service")
    }

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "m-v2-abc", "labels": { SERVICE_NAME_LABEL: "m-v2" } },
            "addressType": "IPv4",
            "ports": [ { "name": "metrics", "port": 9090 }, { "name": "http", "port": 9000 } ],
            "endpoints": endpoints
        }))
        .expect("an EndpointSlice")
    }

    #[test]
    fn only_ready_endpoints_that_are_not_terminating_take_requests_on_the_named_port() {
        let slices = [
            slice(serde_json::json!([
                { "addresses": ["10.0.0.2"], "conditions": { "ready": true } },
                { "addresses": ["10.0.0.1"] },
                { "addresses": ["10.0.0.3"], "conditions": { "ready": false } },
                { "addresses": ["10.0.0.4"], "conditions": { "ready": true, "terminating": true } }
            ])),
            slice(serde_json::json!([ { "addresses": ["10.0.0.2", "fd00::5"] } ])),
        ];
        let slices: Vec<&EndpointSlice> = slices.iter().collect();
        let found: Vec<String> = ready_endpoints(Some(&service()), 8000, &slices)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(found, ["10.0.0.1:9000", "10.0.0.2:9000", "[fd00::5]:9000"]);
        assert!(
            ready_endpoints(Some(&service()), 8001, &slices).is_empty(),
            "no such port"
        );
        assert!(ready_endpoints(None, 8000, &slices).is_empty(), "no Service");
    }

    #[test]
    fn a_cell_is_shared_and_changes_in_place() {
        let discovery = Discovery::default();
        let service = ServiceRef {
            namespace: "models".into(),
            name: "m-v2".into(),
            port: 8000,
        };
        let cell = discovery.cell(&service);
        assert!(cell.load().is_empty());
        discovery.set(&service, vec!["10.0.0.1:9000".parse().expect("valid")]);
        assert_eq!(discovery.cell(&service).load().len(), 1, "the same cell");
        assert_eq!(cell.load().len(), 1);
        assert_eq!(discovery.snapshot()["models/m-v2:8000"], ["10.0.0.1:9000".to_owned()]);
    }

    #[test]
    fn a_service_no_table_names_is_forgotten_and_one_still_named_is_kept() {
        let discovery = Discovery::default();
        let port = |name: &str| ServiceRef {
            namespace: "models".into(),
            name: name.into(),
            port: 8000,
        };
        let kept = discovery.cell(&port("m-v1"));
        drop(discovery.cell(&port("m-v2")));
        discovery.prune();
        assert_eq!(discovery.services(), [port("m-v1")]);
        assert!(discovery.snapshot().contains_key("models/m-v1:8000"));
        drop(kept);
        discovery.prune();
        assert!(discovery.services().is_empty());
    }
}
