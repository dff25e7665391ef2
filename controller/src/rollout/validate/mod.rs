//! Checks a [`RolloutSpec`] whole and turns it into a [`ValidSpec`] with parsed durations and
//! weights in basis points, or lists every bad field with its path. Pure: no I/O.

use std::time::Duration;

use weir_proxy::config::PartialConfig;

mod experiment;

pub use experiment::{ValidExperiment, ValidVariant};

use super::{CheckMetric, MetricsSource, RolloutSpec, SideSpec, proxy_route};

/// A Rollout spec that passed validation.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidSpec {
    /// The proxy fleet.
    pub gateway: String,
    /// The proxy route's name.
    pub route: String,
    /// The route and its two backends as the proxy reads them, at weight 0.
    pub route_config: PartialConfig,
    /// Most replicas beyond stable's own the fleet may run.
    pub max_surge: Option<u32>,
    /// Stable Deployment.
    pub stable: String,
    /// Candidate Deployment.
    pub candidate: String,
    /// The strategy.
    pub strategy: ValidStrategy,
    /// The analysis.
    pub analysis: ValidAnalysis,
}

/// A validated strategy.
#[derive(Clone, Debug, PartialEq)]
pub enum ValidStrategy {
    /// Canary steps in ascending weight.
    Canary(Vec<ValidStep>),
    /// Blue-green.
    BlueGreen {
        /// Header that routes preview requests to the candidate.
        preview_header: String,
        /// Its value that does.
        preview_value: String,
        /// Preview time.
        hold_before_switch: Duration,
        /// Time on the candidate before promotion.
        keep_old_for: Duration,
    },
    /// An A/B/n experiment.
    Experiment(ValidExperiment),
}

impl ValidStrategy {
    /// Number of steps: canary steps, or 2 for blue-green (preview, switched).
    pub fn step_count(&self) -> usize {
        match self {
            ValidStrategy::Canary(steps) => steps.len(),
            ValidStrategy::BlueGreen { .. } => 2,
            ValidStrategy::Experiment(_) => 1,
        }
    }

    /// The candidate weight of step `index`, in basis points; blue-green's preview is 0.
    pub fn weight(&self, index: usize) -> u16 {
        match self {
            ValidStrategy::Canary(steps) => steps.get(index).map_or(0, |s| s.weight),
            ValidStrategy::BlueGreen { .. } if index == 0 => 0,
            ValidStrategy::BlueGreen { .. } => weir_proxy::split::BASIS_POINTS,
            // An experiment has no candidate: its arms' weights are in the strategy.
            ValidStrategy::Experiment(_) => 0,
        }
    }

    /// Whether some step gives the candidate all traffic, so that stable's own numbers are
    /// missing there and the candidate is judged against stable's from before.
    pub fn has_full_weight_step(&self) -> bool {
        (0..self.step_count()).any(|i| self.weight(i) == weir_proxy::split::BASIS_POINTS)
    }
}

/// A validated canary step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidStep {
    /// Candidate weight in basis points.
    pub weight: u16,
    /// Hold time.
    pub hold: Duration,
}

/// Validated analysis settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidAnalysis {
    /// Time between analyses.
    pub interval: Duration,
    /// Candidate requests a window needs.
    pub min_requests: u64,
    /// Consecutive failed checks that abort.
    pub failure_limit: u32,
    /// Bound on aborting an equal candidate.
    pub false_abort_rate: f64,
    /// Observed, not judged, after each weight change.
    pub warmup: Duration,
    /// What a passing step must have been able to catch.
    pub detect: ValidDetect,
    /// No conclusive analysis for this long pauses the step.
    pub progress_deadline: Duration,
    /// Checks; never empty.
    pub checks: Vec<ValidCheck>,
    /// Metrics source.
    pub source: MetricsSource,
    /// Whether the strategy has a step at full weight, where the candidate is judged against
    /// an upper bound on stable's rates from before (which takes part of the error budget).
    pub full_weight_step: bool,
}

/// Validated `analysis.detect`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValidDetect {
    /// Error ratio to catch.
    pub error_ratio: f64,
    /// Latency ratio to catch.
    pub latency_ratio: f64,
    /// Least error rate assumed of stable when sizing.
    pub error_rate_floor: f64,
}

/// A validated check.
#[derive(Clone, Debug, PartialEq)]
pub enum ValidCheck {
    /// A built-in metric, compared with stable and with optional fixed limits.
    Metric {
        /// Which metric.
        metric: CheckMetric,
        /// Error ratio: limit of the candidate's ratio.
        max: Option<f64>,
        /// Error ratio: limit of candidate minus stable.
        max_over_stable: Option<f64>,
        /// Latency: limit of the candidate's p99, in milliseconds.
        max_ms: Option<f64>,
        /// Latency: limit of candidate p99 over stable p99.
        max_ratio_to_stable: Option<f64>,
    },
    /// A PromQL query with an upper limit.
    Promql {
        /// The query.
        query: String,
        /// Upper limit of its value.
        max: f64,
    },
}

/// One invalid field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// Path from `spec`, like `spec.strategy.canary.steps[1].weight`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every error of an invalid spec, joined for a condition message.
pub fn describe(errors: &[SpecError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Longest duration a spec may name: far beyond any sensible hold or deadline, and far from
/// the limits of time arithmetic.
const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

struct Errors(Vec<SpecError>);

impl Errors {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: &str, text: &str) -> Duration {
        match humantime::parse_duration(text) {
            Ok(d) if d > MAX_DURATION => {
                self.add(path, format!("{text:?} is longer than 30 days"));
                Duration::ZERO
            }
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.add(path, format!("{text:?} is zero"));
                Duration::ZERO
            }
            Err(e) => {
                self.add(path, format!("{text:?} is not a duration like 60s ({e})"));
                Duration::ZERO
            }
        }
    }

    /// A duration that may be zero.
    fn duration_or_zero(&mut self, path: &str, text: &str) -> Duration {
        match humantime::parse_duration(text) {
            Ok(d) if d > MAX_DURATION => {
                self.add(path, format!("{text:?} is longer than 30 days"));
                Duration::ZERO
            }
            Ok(d) => d,
            Err(e) => {
                self.add(path, format!("{text:?} is not a duration like 15s or 0s ({e})"));
                Duration::ZERO
            }
        }
    }

    /// A ratio above 1 and at most `max`.
    fn ratio(&mut self, path: &str, value: f64, max: f64) -> f64 {
        if !(value > 1.0 && value <= max) {
            self.add(path, format!("{value} is not above 1 and at most {max}"));
        }
        value
    }
}

/// Validates `spec`, reporting every bad field.
pub fn validate(spec: &RolloutSpec) -> Result<ValidSpec, Vec<SpecError>> {
    let mut errors = Errors(Vec::new());
    if !is_label_value(&spec.gateway) {
        errors.add(
            "spec.gateway",
            format!(
                "{:?} is not a label value (1 to 63 letters, digits, '-', '_' or '.')",
                spec.gateway
            ),
        );
    }
    let route = spec.route.name.clone().unwrap_or_default();
    if route.is_empty() {
        errors.add("spec.route.name", "is empty");
    }
    side(&mut errors, "spec.stable", &spec.stable);
    if spec.strategy.experiment.is_none() {
        side(&mut errors, "spec.candidate", &spec.candidate);
    }
    match (spec.scaling.max_surge, &spec.strategy.blue_green) {
        (Some(0), _) => errors.add(
            "spec.scaling.maxSurge",
            "must be at least 1: the candidate needs a pod before stable can give one up",
        ),
        (Some(_), Some(_)) => errors.add(
            "spec.scaling.maxSurge",
            "cannot be used with blueGreen, whose switch needs the candidate at stable's full count \
             beside stable; use canary steps to roll out within a surge",
        ),
        _ => {}
    }
    let route_config = match proxy_route::template(spec, &route) {
        Ok(config) => config,
        Err(weir_proxy::config::ConfigErrors(bad)) => {
            for error in bad {
                errors.add(error.path, error.message);
            }
            PartialConfig::default()
        }
    };
    if spec.stable.deployment.is_empty() {
        errors.add("spec.stable.deployment", "is empty");
    }
    if spec.strategy.experiment.is_some() {
        if spec.candidate != SideSpec::default() {
            errors.add(
                "spec.candidate",
                "is not used by an experiment, whose variants are in spec.strategy.experiment.variants",
            );
        }
    } else if spec.candidate.deployment.is_empty() {
        errors.add("spec.candidate.deployment", "is empty");
    } else if spec.candidate.deployment == spec.stable.deployment {
        errors.add("spec.candidate.deployment", "names the stable Deployment");
    }

    let strategy = match (&spec.strategy.canary, &spec.strategy.blue_green) {
        _ if spec.strategy.experiment.is_some()
            && spec.strategy.canary.is_none()
            && spec.strategy.blue_green.is_none() =>
        {
            let experiment = spec.strategy.experiment.as_ref().expect("checked just above");
            ValidStrategy::Experiment(experiment::validate(spec, experiment, &mut errors))
        }
        (Some(canary), None) if spec.strategy.experiment.is_none() => {
            if canary.steps.is_empty() {
                errors.add("spec.strategy.canary.steps", "needs at least one step");
            }
            let mut steps = Vec::new();
            let mut previous = 0u16;
            for (i, step) in canary.steps.iter().enumerate() {
                let path = format!("spec.strategy.canary.steps[{i}]");
                let hold = errors.duration(&format!("{path}.hold"), &step.hold);
                let hundredths = step.weight * 100.0;
                if !(step.weight > 0.0 && step.weight <= 100.0) {
                    errors.add(
                        format!("{path}.weight"),
                        format!("{} is not above 0 and at most 100", step.weight),
                    );
                } else if (hundredths - hundredths.round()).abs() > 1e-6 {
                    errors.add(
                        format!("{path}.weight"),
                        format!("{} is finer than 0.01 percent", step.weight),
                    );
                } else {
                    let weight = hundredths.round() as u16;
                    if weight <= previous {
                        errors.add(
                            format!("{path}.weight"),
                            format!("{} is not above the previous step's weight", step.weight),
                        );
                    }
                    previous = weight;
                    steps.push(super::validate::ValidStep { weight, hold });
                }
            }
            ValidStrategy::Canary(steps)
        }
        (None, Some(bg)) if spec.strategy.experiment.is_none() => {
            match http::HeaderName::from_bytes(bg.preview_header.as_bytes()) {
                Err(_) => errors.add(
                    "spec.strategy.blueGreen.previewHeader",
                    format!("{:?} is not a header name", bg.preview_header),
                ),
                Ok(name) if name.as_str() == weir_proxy::config::DEFAULT_SIDE_HEADER => errors.add(
                    "spec.strategy.blueGreen.previewHeader",
                    "is the header the proxy names the serving side with; use a header of its own, like x-weir-preview",
                ),
                Ok(_) => {}
            }
            if bg.preview_value.is_empty() || http::HeaderValue::from_str(&bg.preview_value).is_err() {
                errors.add(
                    "spec.strategy.blueGreen.previewValue",
                    format!("{:?} is not a header value", bg.preview_value),
                );
            }
            ValidStrategy::BlueGreen {
                preview_header: bg.preview_header.to_ascii_lowercase(),
                preview_value: bg.preview_value.clone(),
                hold_before_switch: errors.duration("spec.strategy.blueGreen.holdBeforeSwitch", &bg.hold_before_switch),
                keep_old_for: errors.duration("spec.strategy.blueGreen.keepOldFor", &bg.keep_old_for),
            }
        }
        _ => {
            errors.add("spec.strategy", "needs exactly one of canary, blueGreen or experiment");
            ValidStrategy::Canary(Vec::new())
        }
    };

    let a = &spec.analysis;
    let interval = errors.duration("spec.analysis.interval", &a.interval);
    let warmup = match &a.warmup {
        Some(text) => errors.duration_or_zero("spec.analysis.warmup", text),
        None => interval,
    };
    let progress_deadline = errors.duration("spec.analysis.progressDeadline", &a.progress_deadline);
    if !progress_deadline.is_zero() && !interval.is_zero() && progress_deadline <= warmup + interval {
        errors.add(
            "spec.analysis.progressDeadline",
            format!(
                "{} leaves no time for an analysis after the warm-up ({}) and one interval ({})",
                a.progress_deadline,
                humantime::format_duration(warmup),
                a.interval
            ),
        );
    }
    let detect = ValidDetect {
        error_ratio: errors.ratio("spec.analysis.detect.errorRatio", a.detect.error_ratio, 100.0),
        latency_ratio: errors.ratio("spec.analysis.detect.latencyRatio", a.detect.latency_ratio, 100.0),
        error_rate_floor: a.detect.error_rate_floor,
    };
    if !(a.detect.error_rate_floor > 0.0 && a.detect.error_rate_floor <= 0.5) {
        errors.add(
            "spec.analysis.detect.errorRateFloor",
            format!("{} is not above 0 and at most 0.5", a.detect.error_rate_floor),
        );
    }
    if a.min_requests == 0 {
        errors.add("spec.analysis.minRequests", "must be at least 1");
    }
    if a.failure_limit == 0 {
        errors.add("spec.analysis.failureLimit", "must be at least 1");
    }
    if !(a.false_abort_rate > 0.0 && a.false_abort_rate <= 0.5) {
        errors.add(
            "spec.analysis.falseAbortRate",
            format!("{} is not above 0 and at most 0.5", a.false_abort_rate),
        );
    }
    if let Some(p) = &a.source.prometheus
        && !(p.url.starts_with("http://") || p.url.starts_with("https://"))
    {
        errors.add(
            "spec.analysis.source.prometheus.url",
            format!("{:?} is not an http(s) URL", p.url),
        );
    }
    let mut checks = Vec::new();
    for (i, check) in a.checks.iter().enumerate() {
        let path = format!("spec.analysis.checks[{i}]");
        for (name, value) in [
            ("max", check.max),
            ("maxOverStable", check.max_over_stable),
            ("maxMs", check.max_ms),
            ("maxRatioToStable", check.max_ratio_to_stable),
        ] {
            if value.is_some_and(|v| !(v >= 0.0 && v.is_finite())) {
                errors.add(format!("{path}.{name}"), "must be a number of at least 0");
            }
        }
        let misplaced = |errors: &mut Errors, name: &str, set: bool, what: &str| {
            if set {
                errors.add(format!("{path}.{name}"), format!("does not apply to {what}"));
            }
        };
        match (check.metric, &check.promql) {
            (Some(metric), None) => {
                match metric {
                    CheckMetric::ErrorRatio => {
                        misplaced(&mut errors, "maxMs", check.max_ms.is_some(), "error-ratio");
                        misplaced(
                            &mut errors,
                            "maxRatioToStable",
                            check.max_ratio_to_stable.is_some(),
                            "error-ratio",
                        );
                    }
                    CheckMetric::LatencyP99 | CheckMetric::FirstByteP99 => {
                        misplaced(&mut errors, "max", check.max.is_some(), metric.as_str());
                        misplaced(
                            &mut errors,
                            "maxOverStable",
                            check.max_over_stable.is_some(),
                            metric.as_str(),
                        );
                    }
                }
                if checks
                    .iter()
                    .any(|c| matches!(c, ValidCheck::Metric { metric: m, .. } if *m == metric))
                {
                    errors.add(
                        format!("{path}.metric"),
                        format!("{} is checked twice", metric.as_str()),
                    );
                }
                checks.push(ValidCheck::Metric {
                    metric,
                    max: check.max,
                    max_over_stable: check.max_over_stable,
                    max_ms: check.max_ms,
                    max_ratio_to_stable: check.max_ratio_to_stable,
                });
            }
            (None, Some(query)) => {
                if a.source.prometheus.is_none() {
                    errors.add(format!("{path}.promql"), "needs spec.analysis.source.prometheus");
                }
                if query.trim().is_empty() {
                    errors.add(format!("{path}.promql"), "is empty");
                }
                for (name, set) in [
                    ("maxOverStable", check.max_over_stable.is_some()),
                    ("maxMs", check.max_ms.is_some()),
                    ("maxRatioToStable", check.max_ratio_to_stable.is_some()),
                ] {
                    misplaced(&mut errors, name, set, "a promql check");
                }
                match check.max {
                    Some(max) => checks.push(ValidCheck::Promql {
                        query: query.clone(),
                        max,
                    }),
                    None => errors.add(format!("{path}.max"), "is required for a promql check"),
                }
            }
            _ => errors.add(path, "needs exactly one of metric or promql"),
        }
    }
    if checks.is_empty() && a.checks.is_empty() {
        checks = default_checks();
    }

    if errors.0.is_empty() {
        let full_weight_step = strategy.has_full_weight_step();
        Ok(ValidSpec {
            gateway: spec.gateway.clone(),
            route,
            route_config,
            max_surge: spec.scaling.max_surge,
            stable: spec.stable.deployment.clone(),
            candidate: spec.candidate.deployment.clone(),
            strategy,
            analysis: ValidAnalysis {
                interval,
                min_requests: a.min_requests,
                failure_limit: a.failure_limit,
                false_abort_rate: a.false_abort_rate,
                warmup,
                detect,
                progress_deadline,
                checks,
                source: a.source.clone(),
                full_weight_step,
            },
        })
    } else {
        Err(errors.0)
    }
}

/// A side names its traffic one way: a Service and its port, or static endpoints.
fn side(errors: &mut Errors, path: &str, side: &SideSpec) {
    match (&side.service, side.port, side.endpoints.is_empty()) {
        (Some(_), Some(0), true) => errors.add(format!("{path}.port"), "is 0"),
        (Some(_), Some(_), true) | (None, None, false) => {}
        (Some(_), None, true) => errors.add(format!("{path}.port"), "is needed with service"),
        (None, Some(_), _) => errors.add(format!("{path}.port"), "is set without service"),
        (Some(_), _, false) => errors.add(path, "sets both service and endpoints; name one"),
        (None, None, true) => errors.add(path, "needs service and port, or endpoints"),
    }
}

/// Whether `text` may be a label value that is not empty.
fn is_label_value(text: &str) -> bool {
    (1..=63).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// With no checks written, error ratio and p99 latency are compared with stable.
fn default_checks() -> Vec<ValidCheck> {
    [CheckMetric::ErrorRatio, CheckMetric::LatencyP99]
        .into_iter()
        .map(|metric| ValidCheck::Metric {
            metric,
            max: None,
            max_over_stable: None,
            max_ms: None,
            max_ratio_to_stable: None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
