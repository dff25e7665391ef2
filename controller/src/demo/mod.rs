//! `weir demo`: a whole rollout in one process, on loopback, with no cluster. Two model
//! servers (stable and candidate, their behaviour set by flags), the real proxy, a load
//! generator, and the controller's reconcile loop running the real `decide` and `judge` on
//! metrics scraped from the proxy's `/metrics` (or, with `--metrics-source prometheus`, read
//! from a local Prometheus scraping it).

pub mod backend;
pub mod load;
pub mod prometheus;
pub mod report;
pub mod world;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;
use weir_proxy::{Proxy, ProxyConfig};

use crate::reconcile::{Input, Reconciler};
use crate::rollout::validate::validate;
use crate::rollout::{
    Analysis, BlueGreen, Canary, Check, CheckMetric, Detect, Experiment, ExperimentDecide, KeySpec, Metric,
    MetricsSource, PrometheusSource, RolloutSpec, RouteSpec, Scaling, SideSpec, Step, Strategy, VariantSpec,
};
use crate::source::Source;
use crate::source::prometheus::PrometheusSource as PrometheusClient;
use crate::source::proxies::ProxyScrape;
use crate::status::{Phase, Power, RolloutStatus};
use backend::{Behavior, DemoBackend};
use report::{Mode, Reporter, Summary, TerminalReport};

/// The route the demo drives.
const ROUTE: &str = "model";
/// The header the demo's preview testers send.
pub const PREVIEW_HEADER: &str = "x-weir-preview";
/// The error ratio a demo step must have been able to catch.
const DEMO_DETECT: f64 = 3.0;
/// Stable replicas; the candidate's follow its share.
const STABLE_REPLICAS: u32 = 4;
/// Time between streamed tokens of the demo's model servers, in milliseconds.
const TOKEN_GAP_MS: f64 = 2.0;
/// The experiment's variants and their scores (control's, and the better one's).
const FAST: &str = "fast";
const BETTER: &str = "better";
const CONTROL_SCORE: f64 = 0.70;
const BETTER_SCORE: f64 = 0.78;

/// The rollout strategy to demonstrate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoStrategy {
    /// Weight steps 5 %, 25 %, 50 %.
    Canary,
    /// Preview by header, then switch all traffic.
    BlueGreen,
    /// A/B/n: control and two variants (one faster, one better-scoring) split by sticky
    /// user; the better-scoring one is promoted.
    Experiment,
}

/// Where the demo's controller reads the proxy's numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DemoMetricsSource {
    /// Scrape the proxy's `/metrics`.
    Proxy,
    /// Query a local Prometheus (the installed `prometheus`) that scrapes the proxy.
    Prometheus,
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Progress for people.
    Text,
    /// One JSON event per line.
    Json,
}

/// Flags of `weir demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Share of candidate requests that fail (0..1) [default: stable's].
    #[arg(long, value_parser = rate)]
    pub candidate_error_rate: Option<f64>,
    /// Median candidate latency in milliseconds [default: stable's].
    #[arg(long, value_parser = latency)]
    pub candidate_latency_ms: Option<f64>,
    /// Share of stable requests that fail (0..1).
    #[arg(long, value_parser = rate, default_value_t = 0.02)]
    pub stable_error_rate: f64,
    /// Median stable latency in milliseconds.
    #[arg(long, value_parser = latency, default_value_t = 40.0)]
    pub stable_latency_ms: f64,
    /// Rollout strategy.
    #[arg(long, value_enum, default_value_t = DemoStrategy::Canary)]
    pub strategy: DemoStrategy,
    /// Short holds and intervals: a healthy run takes about 20 s instead of about a minute.
    #[arg(long)]
    pub fast: bool,
    /// Requests per second [default: 400, or 600 with --fast].
    #[arg(long, value_parser = clap::value_parser!(u32).range(50..=5000))]
    pub rate: Option<u32>,
    /// Seed of the backends' and load generator's randomness.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where the controller reads the proxy's numbers.
    #[arg(long, value_enum, default_value_t = DemoMetricsSource::Proxy)]
    pub metrics_source: DemoMetricsSource,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

fn rate(text: &str) -> Result<f64, String> {
    let r: f64 = text.parse().map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(format!("{r} is not between 0 and 1"))
    }
}

fn latency(text: &str) -> Result<f64, String> {
    let ms: f64 = text.parse().map_err(|_| format!("{text:?} is not a number"))?;
    if ms > 0.0 && ms <= 10_000.0 {
        Ok(ms)
    } else {
        Err(format!("{ms} is not above 0 and at most 10000 ms"))
    }
}

impl DemoArgs {
    fn stable(&self) -> Behavior {
        Behavior {
            version: "model-v1",
            error_rate: self.stable_error_rate,
            latency_ms: self.stable_latency_ms,
            score: (self.strategy == DemoStrategy::Experiment).then_some(CONTROL_SCORE),
            token_gap_ms: TOKEN_GAP_MS,
        }
    }

    fn candidate(&self) -> Behavior {
        Behavior {
            version: "model-v2",
            error_rate: self.candidate_error_rate.unwrap_or(self.stable_error_rate),
            latency_ms: self.candidate_latency_ms.unwrap_or(self.stable_latency_ms),
            score: None,
            token_gap_ms: TOKEN_GAP_MS,
        }
    }

    /// The experiment's variants: `fast` answers in half the time and streams twice as fast
    /// with control's quality; `better` is as fast as control and scores higher.
    fn variants(&self) -> [(&'static str, Behavior); 2] {
        let stable = self.stable();
        [
            (
                FAST,
                Behavior {
                    version: "model-fast",
                    latency_ms: stable.latency_ms / 2.0,
                    token_gap_ms: TOKEN_GAP_MS / 2.0,
                    ..stable
                },
            ),
            (
                BETTER,
                Behavior {
                    version: "model-better",
                    score: Some(BETTER_SCORE),
                    ..stable
                },
            ),
        ]
    }

    /// What the flags predict: a candidate clearly worse than stable is aborted, any other
    /// is promoted; an experiment promotes its better-scoring variant.
    pub fn expected(&self) -> Phase {
        if self.strategy == DemoStrategy::Experiment {
            return Phase::Succeeded;
        }
        let (s, c) = (self.stable(), self.candidate());
        let worse = c.error_rate > s.error_rate * 1.5 + 0.002 || c.latency_ms > s.latency_ms * 1.25;
        if worse { Phase::Aborted } else { Phase::Succeeded }
    }

    /// The arm the experiment should find better than every other.
    pub fn expected_winner(&self) -> Option<&'static str> {
        (self.strategy == DemoStrategy::Experiment).then_some(BETTER)
    }

    fn rate(&self) -> u32 {
        self.rate.unwrap_or(if self.fast { 800 } else { 400 })
    }

    /// The Rollout the demo runs, over the two model servers at `stable` and `candidate`.
    /// `variants` are the experiment's variants' addresses, in [`DemoArgs::variants`] order.
    pub fn spec(
        &self,
        stable: std::net::SocketAddr,
        candidate: std::net::SocketAddr,
        variants: &[std::net::SocketAddr],
    ) -> RolloutSpec {
        let (hold, interval, min_requests) = if self.fast { ("4s", "1s", 20) } else { ("15s", "2s", 30) };
        let side = |deployment: &str, addr: std::net::SocketAddr| SideSpec {
            deployment: deployment.into(),
            endpoints: vec![addr.to_string()],
            ..SideSpec::default()
        };
        let strategy = match self.strategy {
            DemoStrategy::Experiment => Strategy {
                experiment: Some(Experiment {
                    variants: self
                        .variants()
                        .iter()
                        .zip(variants)
                        .map(|((name, behavior), addr)| VariantSpec {
                            name: (*name).into(),
                            weight: 33.0,
                            side: side(behavior.version, *addr),
                        })
                        .collect(),
                    primary: Metric::Score,
                    guardrails: vec![Metric::ErrorRatio, Metric::P99],
                    duration: if self.fast { "40s" } else { "90s" }.into(),
                    min_users_per_variant: 100,
                    confidence: 0.95,
                    decide: ExperimentDecide::PromoteWinner,
                    stop_when_conclusive: true,
                    min_effect: None,
                    score_header: backend::SCORE_HEADER.into(),
                }),
                ..Strategy::default()
            },
            DemoStrategy::Canary => Strategy {
                canary: Some(Canary {
                    steps: [10.0, 25.0, 50.0]
                        .iter()
                        .map(|w| Step {
                            weight: *w,
                            hold: hold.into(),
                        })
                        .collect(),
                }),
                blue_green: None,
                experiment: None,
            },
            DemoStrategy::BlueGreen => Strategy {
                canary: None,
                blue_green: Some(BlueGreen {
                    preview_header: PREVIEW_HEADER.into(),
                    preview_value: "candidate".into(),
                    hold_before_switch: hold.into(),
                    keep_old_for: hold.into(),
                }),
                experiment: None,
            },
        };
        let experiment = self.strategy == DemoStrategy::Experiment;
        RolloutSpec {
            gateway: "weir".into(),
            route: RouteSpec {
                name: Some(ROUTE.into()),
                sticky: Some(KeySpec {
                    header: Some("x-user-id".into()),
                    cookie: None,
                }),
                timeout: Some("10s".into()),
                ..RouteSpec::default()
            },
            stable: side("model-v1", stable),
            candidate: if experiment {
                SideSpec::default()
            } else {
                side("model-v2", candidate)
            },
            scaling: Scaling::default(),
            strategy,
            analysis: Analysis {
                interval: interval.into(),
                min_requests,
                failure_limit: 2,
                false_abort_rate: 0.01,
                // Sized for the demo's few hundred requests a second: a step passes once it
                // could have caught a candidate with DEMO_DETECT times stable's errors.
                detect: Detect {
                    error_ratio: DEMO_DETECT,
                    ..Detect::default()
                },
                source: match self.metrics_source {
                    DemoMetricsSource::Proxy => MetricsSource::default(),
                    DemoMetricsSource::Prometheus => MetricsSource {
                        prometheus: Some(PrometheusSource {
                            url: "http://prometheus.invalid".into(),
                        }),
                    },
                },
                checks: vec![
                    Check {
                        metric: Some(CheckMetric::ErrorRatio),
                        max: Some(0.25),
                        ..Check::default()
                    },
                    Check {
                        metric: Some(CheckMetric::LatencyP99),
                        max_ms: Some(5000.0),
                        ..Check::default()
                    },
                ],
                ..Analysis::default()
            },
        }
    }
}

/// The in-process proxy's own settings: loopback listeners, no routes until the Rollout's.
fn proxy_base() -> ProxyConfig {
    weir_proxy::config::parse("listen: 127.0.0.1:0\nadmin: 127.0.0.1:0\ndrainTimeout: 2s\n")
        .expect("the demo's proxy config is valid")
}

/// Runs the demo; the exit code says whether the outcome was the one the flags predict.
pub async fn run(args: DemoArgs) -> ExitCode {
    let mode = match args.output {
        Output::Json => Mode::Json,
        Output::Text if std::io::IsTerminal::is_terminal(&std::io::stdout()) => Mode::Live,
        Output::Text => Mode::Plain,
    };
    match run_inner(&args, mode).await {
        Ok(summary) => {
            let as_expected = summary.as_expected();
            Reporter::new(mode).summary(&summary);
            if as_expected {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("weir demo: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The demo itself, returning its summary.
pub async fn run_inner(args: &DemoArgs, mode: Mode) -> anyhow::Result<Summary> {
    // Shut down in the order traffic flows: load first, then the proxy, then the backends, so
    // that no request in flight is cut off and reported as an upstream failure.
    let (stop_backends, backends_stopped) = watch::channel(false);
    let (stop_load, load_stopped) = watch::channel(false);
    let stable_backend = DemoBackend::start(args.stable(), args.seed, backends_stopped.clone()).await?;
    let candidate_backend =
        DemoBackend::start(args.candidate(), args.seed.wrapping_add(1), backends_stopped.clone()).await?;
    let mut variant_backends = Vec::new();
    if args.strategy == DemoStrategy::Experiment {
        for (i, (_, behavior)) in args.variants().into_iter().enumerate() {
            let seed = args.seed.wrapping_add(10 + i as u64);
            variant_backends.push((
                behavior,
                DemoBackend::start(behavior, seed, backends_stopped.clone()).await?,
            ));
        }
    }
    let variant_addrs: Vec<std::net::SocketAddr> = variant_backends.iter().map(|(_, b)| b.addr).collect();
    let mut spec = args.spec(stable_backend.addr, candidate_backend.addr, &variant_addrs);
    let valid =
        validate(&spec).map_err(|e| anyhow::anyhow!("demo spec: {}", crate::rollout::validate::describe(&e)))?;
    let steps = valid.strategy.step_count();
    // The proxy starts with the route closed to the candidate, as the controller writes it
    // before any rollout.
    let base = proxy_base();
    let closed_intent = match &valid.strategy {
        crate::rollout::validate::ValidStrategy::Experiment(e) => {
            crate::decide::TrafficIntent::control_only(e.weights.len())
        }
        _ => crate::decide::TrafficIntent::none(None),
    };
    let closed = crate::route_layer::route_layer(&valid.route_config, &valid.route, &closed_intent)?;
    let proxy = Proxy::start(world::with_layer(&base, closed), "api").await?;
    let (metrics, _prometheus) = match args.metrics_source {
        DemoMetricsSource::Proxy => (
            Source::Proxies(ProxyScrape::new(vec![format!("http://{}", proxy.admin_addr())])),
            None,
        ),
        DemoMetricsSource::Prometheus => {
            let local = prometheus::LocalPrometheus::start(&[proxy.admin_addr()]).await?;
            if let Some(p) = spec.analysis.source.prometheus.as_mut() {
                p.url = local.url.clone();
            }
            (Source::Prometheus(PrometheusClient::new(&local.url)?), Some(local))
        }
    };
    let mut workloads = world::DemoWorkloads::new(
        stable_backend,
        candidate_backend,
        args.stable(),
        args.candidate(),
        STABLE_REPLICAS,
    );
    for (behavior, backend) in variant_backends {
        workloads = workloads.with_variant(behavior.version, backend, behavior, STABLE_REPLICAS);
    }
    let reconciler = Reconciler {
        workloads,
        traffic: world::DemoTraffic::new(&proxy, base, valid.route_config.clone(), &valid.route),
        metrics,
        report: TerminalReport::new(mode, Instant::now(), steps),
    };
    let tally = Arc::new(load::ClientTally::default());
    let preview_share = if args.strategy == DemoStrategy::BlueGreen {
        0.05
    } else {
        0.0
    };
    let load = tokio::spawn(load::run(
        proxy.listen_addr(),
        args.rate(),
        preview_share,
        args.seed.wrapping_add(2),
        Arc::clone(&tally),
        load_stopped,
    ));

    let limit = if args.fast {
        Duration::from_secs(90)
    } else {
        Duration::from_secs(240)
    };
    let mut status = RolloutStatus::default();
    let start = Instant::now();
    let mut step_started = start;
    let mut time_to_zero = None;
    let mut passed_steps = Vec::new();
    let result = loop {
        let input = Input {
            spec: &spec,
            status: &status,
            request: None,
            generation: Some(1),
            now: SystemTime::now(),
        };
        let decision = match reconciler.reconcile(input).await {
            Ok(decision) => decision,
            Err(error) => break Err(anyhow::Error::new(error)),
        };
        let next = &decision.status;
        let left_step =
            status.phase == Phase::Progressing && (next.step != status.step || next.phase == Phase::Promoting);
        if left_step && let Some(power) = next.last_analysis.as_ref().and_then(|a| a.values.power.clone()) {
            passed_steps.push(report::PassedStep {
                step: status.step + 1,
                power,
            });
        }
        if next.phase == Phase::Progressing && (status.phase != Phase::Progressing || next.step != status.step) {
            step_started = Instant::now();
        }
        if next.phase == Phase::Aborted && status.phase != Phase::Aborted {
            time_to_zero = Some(step_started.elapsed());
        }
        let requeue = decision.requeue_after;
        status = decision.status;
        if status.phase.is_terminal() || start.elapsed() > limit {
            break Ok(());
        }
        tokio::time::sleep(requeue.min(Duration::from_millis(250))).await;
    };
    let _ = stop_load.send(true);
    let _ = load.await;
    proxy.shutdown().await;
    let _ = stop_backends.send(true);
    let winner = status.experiment.as_ref().and_then(|e| e.winner.clone());
    result.map(|()| Summary {
        phase: status.phase,
        expected: args.expected(),
        winner,
        expected_winner: args.expected_winner().map(str::to_owned),
        experiment: status.experiment.clone(),
        message: if status.phase.is_terminal() {
            status.message.clone()
        } else {
            format!(
                "the rollout did not finish within {}s: {}",
                limit.as_secs(),
                status.message
            )
        },
        elapsed: start.elapsed(),
        time_to_zero,
        values: status.last_analysis.map(|a| a.values),
        steps: passed_steps,
        clients: (
            tally.stable.load(Ordering::Relaxed),
            tally.candidate.load(Ordering::Relaxed),
            tally.errors.load(Ordering::Relaxed),
            tally.skipped.load(Ordering::Relaxed),
        ),
    })
}

/// How each passed step's sample compared with what its power needed, for the summary.
pub fn describe_power(p: &Power) -> String {
    format!(
        "{} candidate requests, {} needed for 80% power against {}",
        p.requests, p.needed, p.against
    )
}
