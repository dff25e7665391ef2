//! Reasons of conditions and Events, in one place so that users can match on them.

/// The spec passed validation.
pub const SPEC_VALID: &str = "SpecValid";
/// The spec failed validation; the message names every bad field.
pub const INVALID_SPEC: &str = "InvalidSpec";
/// A rollout began.
pub const ROLLOUT_STARTED: &str = "RolloutStarted";
/// The candidate's template changed mid-rollout; the rollout starts again.
pub const CANDIDATE_CHANGED: &str = "CandidateChanged";
/// The next step began.
pub const STEP_ADVANCED: &str = "StepAdvanced";
/// An analysis failed a check without aborting yet.
pub const ANALYSIS_FAILED: &str = "AnalysisFailed";
/// The rollout was paused.
pub const ROLLOUT_PAUSED: &str = "RolloutPaused";
/// The rollout was resumed.
pub const ROLLOUT_RESUMED: &str = "RolloutResumed";
/// Promotion began: stable takes the candidate's template.
pub const ROLLOUT_PROMOTING: &str = "RolloutPromoting";
/// Promotion finished.
pub const ROLLOUT_SUCCEEDED: &str = "RolloutSucceeded";
/// The rollout was aborted; all traffic is on stable.
pub const ROLLOUT_ABORTED: &str = "RolloutAborted";
/// A step had no conclusive analysis for `progressDeadline`; the rollout is paused.
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
/// A promotion moved all traffic to stable before stable finished: a fail-fast trip, or
/// stable not rolled out within `progressDeadline`.
pub const PROMOTION_STALLED: &str = "PromotionStalled";
/// A Deployment the spec names does not exist.
pub const DEPLOYMENT_MISSING: &str = "DeploymentMissing";
/// Both Deployments the spec names exist (again).
pub const DEPLOYMENTS_FOUND: &str = "DeploymentsFound";
/// `maxSurge` is set while a HorizontalPodAutoscaler scales stable: the two would fight over
/// stable's replicas.
pub const SURGE_WITH_AUTOSCALER: &str = "SurgeWithAutoscaler";
/// An experiment began splitting traffic between control and its variants.
pub const EXPERIMENT_STARTED: &str = "ExperimentStarted";
/// An experiment ended without a promotion: all traffic back on control.
pub const EXPERIMENT_CONCLUDED: &str = "ExperimentConcluded";
