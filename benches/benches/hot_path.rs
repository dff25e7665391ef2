//! The proxy's per-request work, each part alone: finding the route, deciding the side,
//! recording what happened; and compiling a large config, which a reload pays once.
//!
//!     cargo bench -p weir-benches --bench hot_path
//!
//! Targets (issue "Performance"): the split decision under 50 ns, a lookup among 1000 routes
//! under 200 ns, a 10000-route config compiled in under 100 ms.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use prometheus_client::registry::Registry;
use weir_proxy::config;
use weir_proxy::metrics::{CodeClass, ProxyMetrics};
use weir_proxy::route::{HostMatch, RouteIndex};
use weir_proxy::split::{KeySource, Override, Side, SplitPolicy, VariantWeight, Variants, Weight};
use weir_proxy::table::Table;
use weir_proxy::upstream::discovery::Discovery;

/// `count` routes, one host each with two prefixes, as a gateway of many model services has.
fn index(count: usize) -> RouteIndex<usize> {
    RouteIndex::new((0..count).flat_map(|i| {
        [
            (
                HostMatch::parse(Some(&format!("model-{i}.models.svc"))),
                "/v1/generate".to_owned(),
                2 * i,
            ),
            (
                HostMatch::parse(Some(&format!("model-{i}.models.svc"))),
                "/".to_owned(),
                2 * i + 1,
            ),
        ]
    }))
}

fn route_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("route lookup");
    for count in [10, 1000, 10_000] {
        let routes = index(count);
        let host = format!("model-{}.models.svc:8080", count / 2);
        group.bench_with_input(BenchmarkId::from_parameter(count), &host, |b, host| {
            b.iter(|| routes.find(black_box(host), black_box("/v1/generate/stream")));
        });
    }
    group.finish();
}

fn split_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("split decision");
    let weight = Weight::new(500).expect("500 basis points is a weight");
    let sequence = AtomicU64::new(0);
    let next = || sequence.fetch_add(1, Ordering::Relaxed);
    let plain = SplitPolicy {
        route: "sentiment".into(),
        weight,
        overrides: Vec::new(),
        sticky: None,
        variants: None,
    };
    let user = HeaderName::from_static("x-user-id");
    let sticky = SplitPolicy {
        sticky: Some(KeySource::Header(user.clone())),
        ..plain.clone()
    };
    let overridden = SplitPolicy {
        overrides: vec![
            Override {
                key: KeySource::Header(HeaderName::from_static("x-weir-override")),
                equals: "candidate".into(),
                side: Side::Candidate,
            },
            Override {
                key: KeySource::Cookie("beta".into()),
                equals: "1".into(),
                side: Side::Candidate,
            },
        ],
        ..sticky.clone()
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::HOST, HeaderValue::from_static("sentiment.models.svc"));
    headers.insert(http::header::ACCEPT, HeaderValue::from_static("application/json"));
    headers.insert(
        http::header::COOKIE,
        HeaderValue::from_static("session=abc; theme=dark"),
    );
    let mut with_user = headers.clone();
    with_user.insert(user, HeaderValue::from_static("user-4711"));

    group.bench_function("weight", |b| b.iter(|| plain.decide(black_box(&headers), next)));
    group.bench_function("sticky", |b| b.iter(|| sticky.decide(black_box(&with_user), next)));
    // Both overrides looked for and missed (the common case), then the sticky key.
    group.bench_function("overrides missed, then sticky", |b| {
        b.iter(|| overridden.decide(black_box(&with_user), next))
    });
    // An experiment's route: three variants, by the weight pattern and by sticky user.
    let arms = ["control", "fast", "better"].iter().zip([4000, 3000, 3000]);
    let three_way = SplitPolicy {
        variants: Some(Variants::new(
            arms.map(|(name, w)| VariantWeight {
                name: (*name).into(),
                weight: Weight::new(w).expect("in range"),
            })
            .collect(),
        )),
        ..sticky.clone()
    };
    group.bench_function("three variants, weight", |b| {
        b.iter(|| three_way.decide(black_box(&headers), next))
    });
    group.bench_function("three variants, sticky", |b| {
        b.iter(|| three_way.decide(black_box(&with_user), next))
    });
    group.finish();
}

fn record_observation(c: &mut Criterion) {
    let mut registry = Registry::default();
    let metrics = ProxyMetrics::register(&mut registry);
    let route = metrics.route("sentiment");
    let side = route.side(Side::Candidate);
    c.bench_function("record one request (count, duration, first byte)", |b| {
        b.iter(|| {
            side.count(black_box(CodeClass::Success));
            side.observe_duration(black_box(0.042));
            side.observe_first_byte(black_box(0.011));
        })
    });
}

/// A config of `count` routes, each with its two backends and a sticky key.
fn config_text(count: usize) -> String {
    let mut text = String::from("listen: 127.0.0.1:8080\nadmin: 127.0.0.1:9901\nroutes:\n");
    for i in 0..count {
        text.push_str(&format!(
            "  - {{ name: model-{i}, match: {{ host: model-{i}.models.svc }}, stable: {{ backend: m{i}-v1 }}, \
             candidate: {{ backend: m{i}-v2 }}, candidateWeight: 500, sticky: {{ header: x-user-id }} }}\n"
        ));
    }
    text.push_str("backends:\n");
    for i in 0..count {
        text.push_str(&format!(
            "  m{i}-v1: {{ endpoints: [\"10.0.{}.{}:8000\"] }}\n  m{i}-v2: {{ endpoints: [\"10.1.{}.{}:8000\"] }}\n",
            i / 250,
            i % 250 + 1,
            i / 250,
            i % 250 + 1
        ));
    }
    text
}

fn compile_config(c: &mut Criterion) {
    let mut group = c.benchmark_group("config of 10000 routes");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    let text = config_text(10_000);
    group.bench_function("parse and validate", |b| {
        b.iter(|| config::parse(black_box(&text)).expect("a valid config"))
    });
    let parsed = Arc::new(config::parse(&text).expect("a valid config"));
    let mut registry = Registry::default();
    let metrics = ProxyMetrics::register(&mut registry);
    let discovery = Discovery::default();
    group.bench_function("compile the route table (a reload: its routes' metrics exist)", |b| {
        b.iter(|| Table::compile(Arc::clone(&parsed), 1, &metrics, None, &BTreeMap::new(), &discovery))
    });
    group.finish();
}

criterion_group!(
    benches,
    route_lookup,
    split_decision,
    record_observation,
    compile_config
);
criterion_main!(benches);
