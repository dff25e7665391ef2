//! Partial configs (routes and backends only, as Kubernetes ConfigMaps hold them) and their
//! merge with the `--config` file into one config. Pure: the ConfigMap watcher reads the texts,
//! keeps each ConfigMap's last accepted version, and calls in.
//!
//! Every proxy replica must build the same table from the same ConfigMaps, whatever order it
//! saw them in, so clashes are settled by age alone: the `--config` file is oldest, then
//! ConfigMaps by creation time, then by namespace/name. On a clash of a route name, a backend
//! name, or a route's host and path prefix, the older one wins and the newer ConfigMap is
//! rejected whole.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fmt;

use super::{BackendConfig, ConfigError, ConfigErrors, ProxyConfig, RouteConfig};
use crate::route::HostMatch;

/// The top-level fields of a whole config that a partial one may not set: they belong to the
/// listener and come from `--config` and flags.
pub const WHOLE_ONLY: [&str; 8] = [
    "listen",
    "reusePort",
    "admin",
    "drainTimeout",
    "tls",
    "limits",
    "sideHeader",
    "trustForwardedFrom",
];

/// Routes and backends from one ConfigMap, each route valid and naming only backends defined
/// beside it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartialConfig {
    /// Routes in document order.
    pub routes: Vec<RouteConfig>,
    /// Backends by name.
    pub backends: BTreeMap<String, BackendConfig>,
}

/// Parses and validates a partial config, YAML or JSON, listing every bad field: those of a
/// whole config, and any listener field, which a partial config may not set.
pub fn parse_partial(text: &str) -> Result<PartialConfig, ConfigErrors> {
    let mut document = super::read_document(text)?;
    let mut errors = Vec::new();
    if let Some(fields) = document.as_object_mut() {
        for field in WHOLE_ONLY {
            if fields.remove(field).is_some() {
                errors.push(ConfigError {
                    path: field.to_owned(),
                    message: "belongs to the listener: set it in --config or by flag, not here".into(),
                });
            }
        }
    }
    match super::validate_document(document) {
        Ok(config) if errors.is_empty() => Ok(PartialConfig {
            routes: config.routes,
            backends: config.backends,
        }),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(ConfigErrors(mut more)) => {
            errors.append(&mut more);
            Err(ConfigErrors(errors))
        }
    }
}

impl PartialConfig {
    /// The config in its written YAML form (`routes` and `backends`), which [`parse_partial`]
    /// reads back to an equal config: what a writer of route ConfigMaps puts under
    /// `config.yaml`.
    pub fn to_yaml(&self) -> String {
        #[derive(serde::Serialize)]
        struct Written {
            routes: Vec<super::raw::RawRoute>,
            backends: BTreeMap<String, super::raw::RawBackend>,
        }
        let written = Written {
            routes: self.routes.iter().map(super::raw_route).collect(),
            backends: super::raw_backends(&self.backends),
        };
        serde_saphyr::to_string(&written).expect("a config always serialises: it is plain data")
    }
}

/// Which ConfigMap a partial config came from; the order is age, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LayerId {
    /// The ConfigMap's `creationTimestamp`, in seconds since the Unix epoch.
    pub created: i64,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfigMap {}/{}", self.namespace, self.name)
    }
}

/// One ConfigMap as the watcher holds it.
#[derive(Clone, Debug)]
pub struct Layer {
    /// Where it came from.
    pub id: LayerId,
    /// Its text as now written, parsed.
    pub current: Result<PartialConfig, ConfigErrors>,
    /// The version accepted last time, if any: it keeps serving while `current` is rejected.
    pub previous: Option<PartialConfig>,
}

/// What became of one layer in a merge.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Its current version serves.
    Accepted,
    /// Its current version was rejected for these errors; its previous version serves.
    KeptPrevious(ConfigErrors),
    /// Its current version was rejected for these errors, and it has no previous version that
    /// fits: none of its routes serve.
    Rejected(ConfigErrors),
}

impl Outcome {
    /// The version that serves now, if any. Only an accepted one replaces the version a
    /// source keeps as the layer's `previous`: a rejected layer's kept version may fit again
    /// once a clash is gone.
    pub fn serving(&self, layer: &Layer) -> Option<PartialConfig> {
        match self {
            Outcome::Accepted => layer.current.as_ref().ok().cloned(),
            Outcome::KeptPrevious(_) => layer.previous.clone(),
            Outcome::Rejected(_) => None,
        }
    }
}

/// The merged config and what became of each layer, in age order.
#[derive(Clone, Debug)]
pub struct Merged {
    /// The file's config with every serving layer's routes and backends added.
    pub config: ProxyConfig,
    /// Each layer's outcome, oldest first.
    pub outcomes: Vec<(LayerId, Outcome)>,
}

/// Merges `layers`, in any order, into the file's config `base`: each layer, oldest first,
/// serves its current version if it is valid and clashes with nothing older, else its previous
/// version if that is clash-free, else nothing. The result depends only on the set of layers.
pub fn merge(base: &ProxyConfig, layers: &[Layer]) -> Merged {
    let mut owners = Owners::default();
    owners.claim(
        &Owner::File,
        &PartialConfig {
            routes: base.routes.clone(),
            backends: base.backends.clone(),
        },
    );
    let mut config = base.clone();
    let mut ordered: Vec<&Layer> = layers.iter().collect();
    ordered.sort_by(|a, b| a.id.cmp(&b.id));
    let mut outcomes = Vec::with_capacity(ordered.len());
    for layer in ordered {
        let owner = Owner::ConfigMap(&layer.id);
        let rejected = match &layer.current {
            Ok(current) => match owners.clashes(current) {
                None => {
                    owners.claim(&owner, current);
                    add(&mut config, current, &layer.id.namespace);
                    outcomes.push((layer.id.clone(), Outcome::Accepted));
                    continue;
                }
                Some(clashes) => clashes,
            },
            Err(errors) => errors.clone(),
        };
        let outcome = match &layer.previous {
            Some(previous) if owners.clashes(previous).is_none() => {
                owners.claim(&owner, previous);
                add(&mut config, previous, &layer.id.namespace);
                Outcome::KeptPrevious(rejected)
            }
            _ => Outcome::Rejected(rejected),
        };
        outcomes.push((layer.id.clone(), outcome));
    }
    Merged { config, outcomes }
}

/// Adds a layer's routes and backends; its Services are in its ConfigMap's `namespace`.
fn add(config: &mut ProxyConfig, partial: &PartialConfig, namespace: &str) {
    config.routes.extend(partial.routes.iter().cloned());
    config.backends.extend(partial.backends.iter().map(|(name, b)| {
        let mut backend = b.clone();
        if let Some(service) = backend.service.as_mut() {
            service.namespace = namespace.to_owned();
        }
        (name.clone(), backend)
    }));
}

/// Who defined a name first.
#[derive(Clone, Debug)]
enum Owner<'a> {
    File,
    ConfigMap(&'a LayerId),
}

impl fmt::Display for Owner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::File => f.write_str("the --config file"),
            Owner::ConfigMap(id) => write!(f, "{id}, which is older"),
        }
    }
}

/// The names and matches taken so far, each with who took it.
#[derive(Default)]
struct Owners<'a> {
    routes: HashMap<String, Owner<'a>>,
    backends: HashMap<String, Owner<'a>>,
    matches: HashMap<(HostMatch, String), Owner<'a>>,
}

impl<'a> Owners<'a> {
    fn claim(&mut self, owner: &Owner<'a>, partial: &PartialConfig) {
        for route in &partial.routes {
            self.routes.insert(route.name.clone(), owner.clone());
            self.matches
                .insert((route.host.clone(), route.path_prefix.clone()), owner.clone());
        }
        for name in partial.backends.keys() {
            self.backends.insert(name.clone(), owner.clone());
        }
    }

    /// Every name or match of `partial` that is already taken, with its path, or `None`.
    fn clashes(&self, partial: &PartialConfig) -> Option<ConfigErrors> {
        let mut errors = Vec::new();
        for (i, route) in partial.routes.iter().enumerate() {
            if let Some(owner) = self.routes.get(&route.name) {
                errors.push(ConfigError {
                    path: format!("routes[{i}].name"),
                    message: format!("route {:?} is already defined by {owner}", route.name),
                });
            }
            if let Some(owner) = self.matches.get(&(route.host.clone(), route.path_prefix.clone())) {
                errors.push(ConfigError {
                    path: format!("routes[{i}].match"),
                    message: format!("this host and path prefix are already routed by {owner}"),
                });
            }
        }
        for name in partial.backends.keys() {
            if let Some(owner) = self.backends.get(name) {
                errors.push(ConfigError {
                    path: format!("backends.{name}"),
                    message: format!("backend {name:?} is already defined by {owner}"),
                });
            }
        }
        (!errors.is_empty()).then_some(ConfigErrors(errors))
    }
}

#[cfg(test)]
mod tests;
