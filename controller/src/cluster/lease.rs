//! Leader election with the Lease `weir-controller`: one controller replica acts, the others
//! wait and take over when the holder stops renewing. The choice of what to do with a Lease is
//! pure ([`next_step`]); [`Election::run`] carries it out.
//!
//! The holder counts itself leader only until its last renewal plus two thirds of the lease
//! time, by its own clock, so it has stopped acting before any other replica may take over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;

use super::FIELD_MANAGER;

/// The Lease's name unless `--lease-name` says otherwise.
pub const DEFAULT_LEASE_NAME: &str = "weir-controller";

/// What to do with the Lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// There is none: create it, held by us.
    Create,
    /// We hold it: renew it.
    Renew,
    /// Its holder stopped renewing (or released it): take it over.
    TakeOver,
    /// Someone else holds it.
    Follow(String),
}

/// What to do with `lease` (as read), being `me`, at `now`.
pub fn next_step(lease: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Step {
    let Some(spec) = lease else {
        return Step::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return Step::Renew;
    }
    if holder.is_empty() {
        return Step::TakeOver;
    }
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let renewed = spec.renew_time.as_ref().map_or(0, |t| t.0.as_second());
    if now.as_second() > renewed + duration {
        Step::TakeOver
    } else {
        Step::Follow(holder)
    }
}

/// Whether this replica leads, as the reconciler asks it.
#[derive(Clone, Debug, Default)]
pub struct Leadership(Arc<AtomicBool>);

impl Leadership {
    /// Whether this replica may act.
    pub fn is_leader(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    pub(super) fn set(&self, leader: bool) {
        self.0.store(leader, Ordering::SeqCst);
    }
}

/// One replica's part in the election.
pub struct Election {
    /// Leases of the lease namespace.
    pub api: Api<Lease>,
    /// The Lease's name: one per gateway, so that two installs in one namespace do not share
    /// a leader.
    pub name: String,
    /// This replica's identity (its pod name, or host and process).
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub duration: Duration,
    /// Shared with the reconciler.
    pub leadership: Leadership,
}

impl Election {
    /// Gives the Lease up, if this replica holds it, so that another takes over at its next
    /// try instead of waiting out the lease time (a rolling update of the controller). The
    /// caller has stopped acting, and stopped [`Election::run`], first.
    pub async fn release(&self) -> Result<(), kube::Error> {
        self.leadership.set(false);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        lease.metadata.managed_fields = None;
        let params = PostParams {
            dry_run: false,
            field_manager: Some(FIELD_MANAGER.to_owned()),
        };
        // Onto the version read: a Lease taken over meanwhile is not given away.
        match self.api.replace(&self.name, &params, &lease).await {
            Ok(_) => {
                tracing::info!(identity = %self.identity, lease = %self.name, "released the Lease");
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Takes part until the process ends: renews every fifth of the lease time, and stops
    /// counting itself leader once two thirds of it passed since the last renewal.
    pub async fn run(self: Arc<Self>) {
        let period = self.duration / 5;
        let deadline = self.duration * 2 / 3;
        let mut renewed_at: Option<Instant> = None;
        loop {
            let attempt = Instant::now();
            match self.try_once().await {
                Ok(true) => {
                    if !self.leadership.is_leader() {
                        tracing::info!(identity = %self.identity, lease = %self.name, "leading: acquired the Lease");
                    }
                    renewed_at = Some(attempt);
                    self.leadership.set(true);
                }
                Ok(false) => {
                    if self.leadership.is_leader() {
                        tracing::warn!(identity = %self.identity, lease = %self.name, "lost the Lease; no longer acting");
                    }
                    renewed_at = None;
                    self.leadership.set(false);
                }
                Err(error) => {
                    tracing::warn!(%error, lease = %self.name, "reading or renewing the Lease failed");
                    if renewed_at.is_none_or(|at| at.elapsed() >= deadline) {
                        self.leadership.set(false);
                    }
                }
            }
            tokio::time::sleep(period).await;
        }
    }

    /// One read and write; `Ok(true)` when we hold the Lease after it.
    async fn try_once(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let lease = self.api.get_opt(&self.name).await?;
        let step = next_step(lease.as_ref().and_then(|l| l.spec.as_ref()), &self.identity, now);
        let params = PostParams {
            dry_run: false,
            field_manager: Some(FIELD_MANAGER.to_owned()),
        };
        let seconds = i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let write = match (step, lease) {
            (Step::Follow(_), _) => return Ok(false),
            (Step::Create, _) | (_, None) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&params, &lease).await
            }
            (step, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if step == Step::TakeOver {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(MicroTime(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(MicroTime(now));
                lease.metadata.managed_fields = None;
                // The resourceVersion read makes this a compare-and-swap: of two replicas
                // taking over at once, one gets a conflict.
                self.api.replace(&self.name, &params, &lease).await
            }
        };
        match write {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(Timestamp::new(renewed, 0).expect("time"))),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_lease_is_renewed_by_its_holder_and_taken_over_only_once_expired() {
        let at = |s| Timestamp::new(s, 0).expect("time");
        assert_eq!(next_step(None, "a", at(100)), Step::Create);
        assert_eq!(next_step(Some(&lease("a", 90, 15)), "a", at(100)), Step::Renew);
        assert_eq!(
            next_step(Some(&lease("b", 90, 15)), "a", at(105)),
            Step::Follow("b".into())
        );
        assert_eq!(next_step(Some(&lease("b", 90, 15)), "a", at(106)), Step::TakeOver);
        assert_eq!(
            next_step(Some(&lease("", 100, 15)), "a", at(100)),
            Step::TakeOver,
            "released"
        );
    }
}
