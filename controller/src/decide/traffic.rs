//! What a step asks of traffic and of the candidate's scale. Pure.

use crate::rollout::validate::{ValidSpec, ValidStrategy};
use weir_proxy::split::BASIS_POINTS;

/// The preview override of a blue-green rollout: requests whose `header` equals `value` reach
/// the candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preview {
    /// The request header, lowercase.
    pub header: String,
    /// Its value that reaches the candidate.
    pub value: String,
}

/// The whole intent for the rollout's route, applied as one change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrafficIntent {
    /// Candidate weight in basis points.
    pub weight: u16,
    /// The preview override, while previewing.
    pub preview: Option<Preview>,
    /// Whether the route's own overrides that send requests to the candidate stay on. Off
    /// whenever the candidate is not under rollout (idle, aborted, promoted): nobody reaches
    /// an aborted or unjudged version by a header.
    pub candidate_overrides: bool,
    /// The candidate's revision, written into the route so the proxy keeps a fail-fast trip
    /// until the candidate really changes.
    pub candidate_revision: Option<String>,
    /// An experiment's weights, in basis points per arm in route order (control first).
    pub arms: Option<Vec<u16>>,
    /// The running experiment's start, written into the route as its `usersEpoch` so that the
    /// proxies count each arm's distinct users from the start, not from the last experiment's.
    pub users_epoch: Option<String>,
}

impl TrafficIntent {
    /// Everything to stable, and no way to the candidate.
    pub fn none(candidate_revision: Option<String>) -> Self {
        TrafficIntent {
            weight: 0,
            preview: None,
            candidate_overrides: false,
            candidate_revision,
            arms: None,
            users_epoch: None,
        }
    }

    /// An experiment's split: each arm its weight, the route's overrides to variants on.
    pub fn experiment(arms: Vec<u16>) -> Self {
        TrafficIntent {
            weight: 0,
            preview: None,
            candidate_overrides: true,
            candidate_revision: None,
            arms: Some(arms),
            users_epoch: None,
        }
    }

    /// This intent with the users of the experiment that started at `started_at` counted.
    pub fn counting_users_since(self, started_at: Option<String>) -> Self {
        TrafficIntent {
            users_epoch: started_at,
            ..self
        }
    }

    /// An experiment's route with everything on control (arm 0), and no way to a variant.
    pub fn control_only(arm_count: usize) -> Self {
        let mut arms = vec![0; arm_count.max(1)];
        arms[0] = BASIS_POINTS;
        TrafficIntent {
            candidate_overrides: false,
            ..TrafficIntent::experiment(arms)
        }
    }

    /// The traffic of step `step` of `spec`.
    pub fn step(spec: &ValidSpec, step: usize, candidate_revision: Option<String>) -> Self {
        let preview = match &spec.strategy {
            ValidStrategy::BlueGreen {
                preview_header,
                preview_value,
                ..
            } if step == 0 => Some(Preview {
                header: preview_header.clone(),
                value: preview_value.clone(),
            }),
            _ => None,
        };
        TrafficIntent {
            weight: spec.strategy.weight(step),
            preview,
            candidate_overrides: true,
            candidate_revision,
            arms: None,
            users_epoch: None,
        }
    }
}

/// Candidate replicas that carry `weight` of the traffic at the same load per pod as stable's
/// `stable_replicas` carry the rest: `ceil(stable x w / (1 - w))`, capped at stable's count (at
/// half the traffic and above, stable's count carries it) and never below one.
///
/// Equal load per pod is what makes the comparison fair: a candidate with half the pods for
/// half the traffic would be slower and err more for no fault of its own.
pub fn candidate_replicas(stable_replicas: u32, weight: u16) -> u32 {
    let stable = u64::from(stable_replicas.max(1));
    let weight = u64::from(weight.min(BASIS_POINTS));
    let rest = u64::from(BASIS_POINTS) - weight;
    let replicas = if rest == 0 {
        stable
    } else {
        (stable * weight).div_ceil(rest).min(stable)
    };
    u32::try_from(replicas).unwrap_or(u32::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_candidate_gets_the_same_load_per_pod_as_stable() {
        assert_eq!(candidate_replicas(10, 500), 1, "0.53 rounds up");
        assert_eq!(candidate_replicas(10, 2500), 4, "3.33 rounds up");
        assert_eq!(candidate_replicas(10, 5000), 10, "half the traffic, stable's count");
        assert_eq!(candidate_replicas(10, 7500), 10, "capped at stable's");
        assert_eq!(candidate_replicas(10, 10_000), 10);
        assert_eq!(candidate_replicas(0, 5000), 1);
        assert_eq!(candidate_replicas(4, 1), 1);
        // Load per pod: the candidate's is never above stable's.
        for stable in 1..40u32 {
            for weight in (100..=9900u16).step_by(100) {
                let c = candidate_replicas(stable, weight);
                let (w, s) = (f64::from(weight) / 1e4, f64::from(stable));
                assert!(
                    w / f64::from(c) <= (1.0 - w) / s + 1e-9 || c == stable,
                    "{stable} {weight} {c}"
                );
            }
        }
    }
}
