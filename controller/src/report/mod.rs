//! `weir report NAME`: an A/B/n experiment's `status.experiment` rendered for people, as a
//! plain-text table for the terminal ([`table`]) or as one self-contained HTML page with the
//! table, the verdict and four inline SVG plots ([`html`]). Pure rendering of the status the
//! controller wrote: no I/O, no kube access, no clock; the CLI fetches the Rollout and writes
//! the result wherever the user asked.
//!
//! Submodules by job: `metrics` (units and number formats), `table` (the table and the
//! verdict line, shared by both outputs), `html` (the page), `figures` (status to charts),
//! `plot` (charts to SVG with plotters), `markup` (escaping).

use crate::experiment::status::ExperimentStatus;

mod figures;
mod html;
mod markup;
mod metrics;
mod plot;
mod table;

#[cfg(test)]
mod tests;

/// The terminal table of experiment `name`: a line naming the plan, one row per arm (control
/// first) with weight, users, requests and each judged metric's value and difference with
/// control, then `winner: <arm>` or `inconclusive: <reason>`. Plain text without colour codes.
pub fn table(name: &str, experiment: &ExperimentStatus) -> String {
    table::text(name, experiment)
}

/// One self-contained HTML page for experiment `name`: the table, the verdict, each arm's
/// latency CDF, error ratio and mean score over time with their bands, and each variant's
/// difference with control on the primary metric over time. Inline CSS and SVG only: no
/// script, nothing fetched.
pub fn html(name: &str, experiment: &ExperimentStatus) -> String {
    html::page(name, experiment)
}
