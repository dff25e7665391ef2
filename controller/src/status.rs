//! The controller's record of a rollout: `Rollout.status` and everything it holds, in one low
//! module so that the spec, the judge and `decide` all import it and it imports none of them.
//! Plain data; no I/O.
//!
//! Times are Kubernetes' own types: `Time` (whole seconds) in conditions, as the API
//! convention has it, and `MicroTime` wherever `decide` reasons about intervals, which in a
//! test or the demo are a second or less.

use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime};
use k8s_openapi::jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::counters::{Counters, SideCounters, Snapshot};
use crate::stats::SequentialTest;

/// Where a rollout is.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Default)]
pub enum Phase {
    /// No rollout: the candidate matches stable, or is not available yet.
    #[default]
    Idle,
    /// Steps are running.
    Progressing,
    /// Held (by a person, or by the progress deadline); weight stays where it is, and a
    /// candidate shown to be worse is still aborted.
    Paused,
    /// Passed: stable is taking the analysed template.
    Promoting,
    /// Stable runs the analysed template; the candidate is scaled to zero.
    Succeeded,
    /// Stopped: all traffic on stable, the candidate scaled to zero.
    Aborted,
}

impl Phase {
    /// Whether the rollout has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Aborted)
    }
}

/// Stages of a promotion, in order.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PromotionStage {
    /// Stable's template is being replaced by the analysed one; waiting for stable to roll out.
    RollingStable,
    /// As `RollingStable`, with all traffic moved to stable: the candidate tripped the proxy's
    /// fail-fast, or stable did not roll out within the progress deadline.
    StableOnly,
    /// Under `maxSurge`, before stable's template is replaced: all traffic moves to the
    /// candidate within the budget, so that stable's pods carry nothing while they roll.
    FillingCandidate,
    /// Stable runs the analysed template but was scaled down under `maxSurge`: it grows back
    /// as the candidate gives up pods, and traffic moves to it as its pods become ready.
    GrowingStable,
}

/// Analysis verdict.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum VerdictKind {
    /// Enough data, no check failed, and enough candidate requests for the test's power.
    Pass,
    /// A check failed.
    Fail,
    /// Not enough data, no data, or a warm-up: hold, never advance.
    Inconclusive,
}

/// What a person asked the controller to do (the `weir.dev/request` annotation).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Verb {
    /// Hold the rollout where it is until `resume`.
    Pause,
    /// Go on after a pause (a person's, or the progress deadline's).
    Resume,
    /// Promote now, whatever the analysis says.
    Promote,
    /// Abort now.
    Abort,
    /// Start again after an abort.
    Retry,
}

impl Verb {
    /// The verb as the annotation writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Pause => "pause",
            Verb::Resume => "resume",
            Verb::Promote => "promote",
            Verb::Abort => "abort",
            Verb::Retry => "retry",
        }
    }
}

/// One request: its verb and when it was made. Each new value is obeyed once.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserRequest {
    /// What to do.
    pub verb: Verb,
    /// When it was asked, RFC 3339, as the annotation writes it; it tells two requests with
    /// the same verb apart.
    pub at: String,
}

/// The controller's record of a rollout.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// Where the rollout is.
    #[serde(default)]
    pub phase: Phase,
    /// Index of the current step (0-based; blue-green: 0 preview, 1 switched).
    #[serde(default)]
    pub step: u32,
    /// Candidate weight the controller set, in basis points.
    #[serde(default)]
    pub candidate_weight: u16,
    /// Whether the preview override (blue-green) is on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preview: bool,
    /// When the rollout began; requests made before it are not obeyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<MicroTime>,
    /// Stable's replicas when the rollout began: the candidate is sized from at least these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_replicas: Option<u32>,
    /// The `maxSurge` this rollout runs under, set before stable is first scaled down: while
    /// set, stable's replicas are weir's to set, and every way out of the rollout (abort,
    /// promotion, a new candidate) restores them to `stableReplicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<u32>,
    /// The replicas weir last set on stable under `maxSurge`; another value seen there means
    /// another manager changed them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_scaled_to: Option<u32>,
    /// Revision (template hash) of stable when the rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    /// Revision of the candidate this rollout analyses, and the one promotion copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_revision: Option<String>,
    /// When the current step (or pause, or phase) began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<MicroTime>,
    /// Whether the latest analysis of the current step passed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub step_passed: bool,
    /// When the current step last had a conclusive analysis (pass or fail), or began; the
    /// progress deadline counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_conclusive_at: Option<MicroTime>,
    /// The last analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis: Option<AnalysisRecord>,
    /// Consecutive failed guardrail checks.
    #[serde(default)]
    pub failed_checks: u32,
    /// Promotion stage, while promoting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionStage>,
    /// The judge's memory, so that a restarted controller resumes the same tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
    /// The last request obeyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request: Option<UserRequest>,
    /// An experiment's arms, verdict and history (the `experiment` strategy only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<crate::experiment::status::ExperimentStatus>,
    /// The Rollout generation this status was written for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions: `Ready`, `SpecValid`, `Progressing`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// One line saying where the rollout is and why.
    #[serde(default)]
    pub message: String,
}

/// One analysis, with its numbers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRecord {
    /// When.
    pub at: MicroTime,
    /// The verdict.
    pub verdict: VerdictKind,
    /// Whether the window was judged; a warm-up window after a weight change is only shown.
    #[serde(default = "yes")]
    pub judged: bool,
    /// Why, in one line.
    pub reason: String,
    /// The numbers behind it.
    pub values: AnalysisValues,
}

fn yes() -> bool {
    true
}

/// Where a window starts: the moment, and for the proxy source each instance's counters then.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowMark {
    /// When.
    pub at: MicroTime,
    /// Every proxy instance's cumulative counters (the proxy source); absent for Prometheus,
    /// which takes `increase` over the time since `at` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Snapshot>,
}

/// The judge's memory across windows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    /// Where the next window starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<WindowMark>,
    /// Whether the window running now is the warm-up after a weight change.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warming_up: bool,
    /// Errors, candidate against stable.
    #[serde(default)]
    pub errors: SequentialTest,
    /// Cancellations (clients that gave up before the response ended), candidate against stable.
    #[serde(default)]
    pub cancellations: SequentialTest,
    /// Requests slower than stable's p99, candidate against stable.
    #[serde(default)]
    pub latency: SequentialTest,
    /// First bytes later than stable's p99, candidate against stable.
    #[serde(default)]
    pub first_byte: SequentialTest,
    /// Stable's p99 latency bucket bound as of the last analysis: the next window's "slow".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_threshold: Option<f64>,
    /// Stable's p99 first-byte bucket bound as of the last analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_threshold: Option<f64>,
    /// Both sides' judged windows of the current step, summed: the sample the step's power is
    /// measured on.
    #[serde(default)]
    pub step: Counters,
    /// Stable's judged windows of the last step in which it took traffic: what the candidate
    /// is compared with once stable takes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<SideCounters>,
    /// Stable's share of the traffic in the reference step: latency is held to the reference
    /// only when stable carried nearly all of it there, at the load the candidate now carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_share: Option<f64>,
}

/// One side's numbers of a window.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct SideValues {
    /// Requests in the window.
    pub requests: u64,
    /// Errors in the window.
    pub errors: u64,
    /// Requests whose client gave up before the response ended.
    #[serde(default)]
    pub cancelled: u64,
    /// Errors over requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<f64>,
    /// p99 of request duration, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// p99 of time to first byte, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_p99_ms: Option<f64>,
}

/// How far the step is toward a sample with power.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Power {
    /// Candidate requests judged in the step so far.
    pub requests: u64,
    /// Candidate requests the step needs: the largest of what each comparison needs.
    pub needed: u64,
    /// What sets `needed`, like `2x errors at stable's 0.50%`.
    pub against: String,
}

/// The numbers behind a verdict.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisValues {
    /// Stable's window, or at full weight the reference from before the switch.
    pub stable: SideValues,
    /// The candidate's window.
    pub candidate: SideValues,
    /// Whether `stable` is the reference from before the switch (stable takes no traffic).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub against_reference: bool,
    /// Evidence (Bayes factor) that the candidate has more errors; aborts at `threshold`.
    pub error_evidence: f64,
    /// Evidence that the candidate's clients give up more often.
    #[serde(default)]
    pub cancel_evidence: f64,
    /// Evidence that the candidate is slower.
    pub latency_evidence: f64,
    /// Evidence that the candidate's first byte is later.
    pub first_byte_evidence: f64,
    /// The evidence at which a comparison aborts.
    pub threshold: f64,
    /// The step's progress toward a sample with power, when it can be sized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<Power>,
    /// The values of the custom PromQL checks, in check order (`None`: no value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promql: Vec<Option<f64>>,
}

/// `t` as status stores it (microseconds; earlier than the epoch is the epoch).
pub fn micro_time(t: SystemTime) -> MicroTime {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let seconds = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
    let nanos = i32::try_from(since.subsec_micros() * 1000).unwrap_or(0);
    MicroTime(Timestamp::new(seconds, nanos).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// A stored time as a `SystemTime`.
pub fn system_time(t: &MicroTime) -> SystemTime {
    let seconds = u64::try_from(t.0.as_second()).unwrap_or(0);
    let nanos = u32::try_from(t.0.subsec_nanosecond()).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos)
}

/// Sets `condition` in `conditions`, replacing the one of its type but keeping that one's
/// transition time when the status is unchanged.
pub fn set_condition(conditions: &mut Vec<Condition>, condition: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(old) => {
            let since = if old.status == condition.status {
                old.last_transition_time.clone()
            } else {
                condition.last_transition_time.clone()
            };
            *old = Condition {
                last_transition_time: since,
                ..condition
            };
        }
        None => conditions.push(condition),
    }
}
