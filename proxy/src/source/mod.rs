//! Where configs come from: a file ([`file`]), and with `--kube-routes` the route ConfigMaps
//! of a Kubernetes cluster ([`kube`]), merged over the file's config ([`layers`]). The
//! in-process handle (`Proxy::apply`) needs no source. Each source only reads; what a text
//! means is decided by `config`, and what serves by `state`.

pub mod endpoints;
pub mod file;
pub mod kube;
pub mod layers;

use crate::config::ConfigErrors;
use crate::state::ConfigState;

/// Where a source hands the whole configs it reads: the live state itself, or, when route
/// ConfigMaps are merged in, the base they are merged over.
pub trait Sink: Send + Sync {
    /// Parses and validates `text` and, if valid, publishes it; a rejection is recorded
    /// (logged, counted, shown in `/config`) and the previous config keeps serving.
    fn apply_text(&self, text: &str, source: &str);
    /// Records a config that could not even be read.
    fn reject(&self, errors: &ConfigErrors, source: &str);
}

impl Sink for ConfigState {
    fn apply_text(&self, text: &str, source: &str) {
        let _ = ConfigState::apply_text(self, text, source);
    }

    fn reject(&self, errors: &ConfigErrors, source: &str) {
        ConfigState::reject(self, errors, source);
    }
}
