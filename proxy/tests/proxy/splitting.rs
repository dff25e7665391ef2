use std::collections::HashSet;
use std::sync::Arc;

use http::HeaderValue;
use weir_proxy::config;

use crate::support::*;

/// Sends `n` requests over `concurrency` keep-alive connections; returns how many the
/// candidate served, by the side header.
async fn count_candidate(addr: std::net::SocketAddr, n: usize, concurrency: usize) -> usize {
    let client = Arc::new(h1_client());
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let client = Arc::clone(&client);
        tasks.spawn(async move {
            let mut candidate = 0;
            for _ in (worker..n).step_by(concurrency) {
                let (parts, _, _) = send(&client, get(addr, "/")).await;
                candidate += usize::from(parts.headers["x-weir-side"] == "candidate");
            }
            candidate
        });
    }
    let mut total = 0;
    while let Some(done) = within(tasks.join_next()).await {
        total += done.expect("request task");
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_split_is_exact_at_half_a_percent_and_a_quarter() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = start_proxy(&config_yaml(stable.addr, candidate.addr, 50, "")).await;
    let got = count_candidate(proxy.listen_addr(), 10_000, 8).await;
    assert!((49..=51).contains(&got), "at 50 bp the candidate got {got} of 10000");
    assert_eq!(candidate.hits(), got, "the side header and the backend agree");

    proxy
        .apply(config::parse(&config_yaml(stable.addr, candidate.addr, 2500, "")).expect("valid"))
        .expect("applies");
    let got = count_candidate(proxy.listen_addr(), 10_000, 8).await;
    assert!(
        (2499..=2501).contains(&got),
        "at 2500 bp the candidate got {got} of 10000"
    );
    proxy.shutdown().await;
}

async fn side_of(client: &TestClient, addr: std::net::SocketAddr, user: &str, force: Option<&'static str>) -> String {
    let mut req = get(addr, "/");
    req.headers_mut()
        .insert("x-user-id", HeaderValue::from_str(user).expect("ascii user id"));
    if let Some(side) = force {
        req.headers_mut().insert("x-force", HeaderValue::from_static(side));
    }
    let (parts, _, _) = send(client, req).await;
    parts.headers["x-weir-side"].to_str().expect("ascii").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_beat_stickiness_and_sticky_users_never_move_back() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let rules = "    overrides:\n      - { header: x-force, equals: stable, side: stable }\n      - { header: x-force, equals: candidate, side: candidate }\n    sticky: { header: x-user-id }\n";
    let yaml = |w| config_yaml(stable.addr, candidate.addr, w, rules);
    let proxy = start_proxy(&yaml(100)).await;
    let client = h1_client();
    let users: Vec<String> = (0..1500).map(|i| format!("user-{i}")).collect();

    let mut on_candidate = HashSet::new();
    for weight in [100u16, 5000, 10_000] {
        proxy
            .apply(config::parse(&yaml(weight)).expect("valid"))
            .expect("applies");
        let mut now = HashSet::new();
        for user in &users {
            let side = side_of(&client, proxy.listen_addr(), user, None).await;
            // The same user lands on the same side on every request at one weight.
            assert_eq!(
                side_of(&client, proxy.listen_addr(), user, None).await,
                side,
                "{user} flapped"
            );
            if side == "candidate" {
                now.insert(user.clone());
            }
        }
        let moved_back: Vec<_> = on_candidate.difference(&now).collect();
        assert!(
            moved_back.is_empty(),
            "at {weight} bp these users moved back to stable: {moved_back:?}"
        );
        let share = now.len() as f64 / users.len() as f64;
        let expected = f64::from(weight) / 10_000.0;
        assert!(
            (share - expected).abs() < 0.05,
            "at {weight} bp {share} of users are on the candidate"
        );
        on_candidate = now;
    }
    assert_eq!(on_candidate.len(), users.len());

    // At 10000 every sticky user is on the candidate, yet an override still wins.
    assert_eq!(
        side_of(&client, proxy.listen_addr(), "user-1", Some("stable")).await,
        "stable"
    );
    proxy.apply(config::parse(&yaml(0)).expect("valid")).expect("applies");
    assert_eq!(
        side_of(&client, proxy.listen_addr(), "user-1", Some("candidate")).await,
        "candidate"
    );
    assert_eq!(side_of(&client, proxy.listen_addr(), "user-1", None).await, "stable");
    proxy.shutdown().await;
}
