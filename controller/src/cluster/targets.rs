//! Which proxy admin endpoints the `proxy` metrics source scrapes: the `--proxy-admin-url`s as
//! given, or the ready endpoints of `--proxy-admin-service`'s EndpointSlices, each kept only
//! if inside `--scrape-allow` (an EndpointSlice can name any address; the controller must not
//! be made to fetch from one it was not meant to). `/targets` lists them with the verdict.

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use weir_proxy::upstream::discovery::{SERVICE_NAME_LABEL, ready_endpoints};

/// An address range, like `10.244.0.0/16` or `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not address/prefix, like 10.244.0.0/16"))?;
        let addr: IpAddr = addr.parse().map_err(|e| format!("{addr:?}: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{prefix:?} is not a prefix length from 0 to {max}"))?;
        Ok(Cidr { addr, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// The ranges scraped when `--scrape-allow` is not given: loopback, and the /16 of the pod the
/// controller runs in (`$POD_IP`).
pub fn default_allow(pod_ip: Option<&str>) -> Vec<Cidr> {
    let mut allow = vec![
        Cidr {
            addr: IpAddr::from([127, 0, 0, 1]),
            prefix: 8,
        },
        Cidr {
            addr: IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            prefix: 128,
        },
    ];
    if let Some(IpAddr::V4(ip)) = pod_ip.and_then(|p| p.parse().ok()) {
        allow.push(Cidr {
            addr: IpAddr::V4(ip),
            prefix: 16,
        });
    }
    allow
}

/// One admin endpoint and whether it is scraped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Its base URL, like `http://10.244.1.7:9901`.
    pub url: String,
    /// Why it is not scraped, if it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// Targets for the discovered `endpoints` (`ip:port`), each refused unless inside `allow`.
pub fn classify(endpoints: &[http::uri::Authority], allow: &[Cidr]) -> Vec<Target> {
    endpoints
        .iter()
        .map(|e| {
            let ip: Option<IpAddr> = e.host().trim_start_matches('[').trim_end_matches(']').parse().ok();
            let inside = ip.is_some_and(|ip| allow.iter().any(|c| c.contains(ip)));
            Target {
                url: format!("http://{e}"),
                refused: (!inside).then(|| format!("{} is outside --scrape-allow", e.host())),
            }
        })
        .collect()
}

/// The targets now, shared with the reconciler and `/targets`.
pub type SharedTargets = Arc<ArcSwap<Vec<Target>>>;

/// Follows the admin Service `namespace/name` until the process ends, keeping `targets` to its
/// ready endpoints on the Service's first port.
pub async fn follow(client: kube::Client, namespace: String, name: String, allow: Vec<Cidr>, targets: SharedTargets) {
    let (services, service_writer) = reflector::store::<Service>();
    let (slices, slice_writer) = reflector::store::<EndpointSlice>();
    let service_changes = reflector::reflector(
        service_writer,
        watcher::watcher(
            Api::<Service>::namespaced(client.clone(), &namespace),
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        ),
    )
    .default_backoff();
    let slice_changes = reflector::reflector(
        slice_writer,
        watcher::watcher(
            Api::<EndpointSlice>::namespaced(client, &namespace),
            watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={name}")),
        ),
    )
    .default_backoff();
    tokio::pin!(service_changes, slice_changes);
    loop {
        tokio::select! {
            change = service_changes.next() => match change {
                None => return,
                Some(Err(error)) => { tracing::warn!(%error, "watching the proxy admin Service failed; retrying"); continue; }
                Some(Ok(_)) => {}
            },
            change = slice_changes.next() => match change {
                None => return,
                Some(Err(error)) => { tracing::warn!(%error, "watching the proxy admin EndpointSlices failed; retrying"); continue; }
                Some(Ok(_)) => {}
            },
        }
        let next = current(&services, &slices, &namespace, &name, &allow);
        if **targets.load() != next {
            tracing::info!(targets = next.len(), "proxy admin targets changed");
            targets.store(Arc::new(next));
        }
    }
}

fn current(
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    namespace: &str,
    name: &str,
    allow: &[Cidr],
) -> Vec<Target> {
    let service = services.get(&ObjectRef::new(name).within(namespace));
    let port = service
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.ports.as_ref())
        .and_then(|p| p.first())
        .and_then(|p| u16::try_from(p.port).ok());
    let Some(port) = port else {
        return Vec::new();
    };
    let all = slices.state();
    let own: Vec<&EndpointSlice> = all.iter().map(AsRef::as_ref).collect();
    classify(&ready_endpoints(service.as_deref(), port, &own), allow)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_contain_what_they_should_and_bad_ones_say_why() {
        let net: Cidr = "10.244.0.0/16".parse().expect("valid");
        assert!(net.contains("10.244.3.7".parse().expect("ip")));
        assert!(!net.contains("10.245.0.1".parse().expect("ip")));
        assert!(!net.contains("::1".parse().expect("ip")));
        let all: Cidr = "0.0.0.0/0".parse().expect("valid");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));
        let v6: Cidr = "fd00::/8".parse().expect("valid");
        assert!(v6.contains("fd12::1".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<Cidr>().unwrap_err().contains("0 to 32"));
        assert!("10.0.0.0".parse::<Cidr>().unwrap_err().contains("address/prefix"));
    }

    #[test]
    fn discovered_targets_outside_the_allowed_ranges_are_refused_by_name() {
        let allow = default_allow(Some("10.244.1.5"));
        let endpoints: Vec<http::uri::Authority> = ["10.244.9.9:9901", "192.168.0.1:9901", "127.0.0.1:9901"]
            .iter()
            .map(|e| e.parse().expect("valid"))
            .collect();
        let targets = classify(&endpoints, &allow);
        assert_eq!(targets[0].refused, None);
        assert_eq!(
            targets[1].refused.as_deref(),
            Some("192.168.0.1 is outside --scrape-allow")
        );
        assert_eq!(targets[2].refused, None, "loopback is always allowed");
    }
}
