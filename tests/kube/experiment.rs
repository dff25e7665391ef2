//! An A/B/n experiment on the real control plane: control and two variant Deployments, each
//! with a model server of its own on loopback, the route split three ways by a real proxy
//! watching the Rollout's ConfigMap, and the better-scoring variant found and promoted.

use super::*;

fn scored(version: &'static str, latency_ms: f64, score: f64) -> Behavior {
    Behavior {
        latency_ms,
        score: Some(score),
        ..model(version, 0.0)
    }
}

/// The arms of the route as the proxy serves it: (variant name, weight).
async fn proxy_arms(world: &World) -> Result<Vec<(String, u64)>> {
    let route = world.proxy_route().await?;
    Ok(route["variants"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .map(|v| {
                    (
                        v["name"].as_str().unwrap_or_default().to_owned(),
                        v["weight"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_of_three_arms_finds_the_better_scoring_variant_and_promotes_it() -> Result<()> {
    let world = World::start_serving(
        "an_experiment_of_three_arms",
        scored("v1", 20.0, 0.70),
        model("v2", 0.0),
        None,
    )
    .await?;
    let post = PostParams::default();
    world
        .deployments()
        .create(&post, &deployment("m-fast", "registry.invalid/m:fast", 1)?)
        .await?;
    world
        .deployments()
        .create(&post, &deployment("m-better", "registry.invalid/m:better", 1)?)
        .await?;
    let fast = ModelServer::start(scored("fast", 10.0, 0.70), 3, world.dir.path()).await?;
    let better = ModelServer::start(scored("better", 20.0, 0.85), 4, world.dir.path()).await?;
    let rollout: Rollout = serde_json::from_value(json!({
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": { "name": "sentiment" },
        "spec": {
            "gateway": world.ns.name,
            "route": { "name": ROUTE, "sticky": { "header": "x-user-id" }, "timeout": "5s" },
            "stable": { "deployment": "m-v1", "endpoints": [world.stable.addr.to_string()] },
            "strategy": { "experiment": {
                "variants": [
                    { "name": "fast", "weight": 30, "deployment": "m-fast", "endpoints": [fast.addr.to_string()] },
                    { "name": "better", "weight": 30, "deployment": "m-better", "endpoints": [better.addr.to_string()] }
                ],
                "primary": "score",
                "guardrails": ["errorRatio", "p99"],
                "duration": "2m",
                "minUsersPerVariant": 50,
                "decide": "promoteWinner",
                "stopWhenConclusive": true
            } },
            "analysis": { "interval": "1s" }
        }
    }))?;
    world.rollouts().create(&post, &rollout).await?;
    let started = world
        .wait_status("the experiment to start", |s| s.phase == Phase::Progressing)
        .await?;
    // The proxy splits the route three ways, as the controller wrote it.
    eventually("the proxy to split three ways", Duration::from_secs(30), || async {
        let arms = proxy_arms(&world).await?;
        let want = [("control", 4000), ("fast", 3000), ("better", 3000)];
        Ok(if arms.iter().map(|(n, w)| (n.as_str(), *w)).eq(want) {
            Check::Done(())
        } else {
            Check::Waiting(format!("{arms:?}"))
        })
    })
    .await?;
    // Users are counted from the experiment's start, not from the proxy's.
    let epoch = started.started_at.as_ref().context("status.startedAt")?.0.to_string();
    assert_eq!(world.proxy_route().await?["usersEpoch"], epoch.as_str());
    let load = Load::start(world.proxy_listen);
    let done = world
        .wait_status("the experiment to promote its winner", |s| s.phase.is_terminal())
        .await?;
    drop(load);
    assert_eq!(done.phase, Phase::Succeeded, "{}", done.message);
    let experiment = done.experiment.context("status.experiment")?;
    assert_eq!(experiment.winner.as_deref(), Some("better"), "{}", done.message);
    assert!(!experiment.history.is_empty(), "the looks are recorded for weir report");
    assert!(
        experiment.arms.iter().all(|a| a.summary.score.count > 0.0),
        "every arm's score was read from its trailers: {:?}",
        experiment.arms
    );
    assert_eq!(
        world.stable_image().await?.as_deref(),
        Some("registry.invalid/m:better"),
        "stable runs the winner's template"
    );
    // All traffic back on control, which now runs the winner (as soon as the proxy has read
    // the ConfigMap the controller wrote before its status).
    eventually(
        "the proxy to send everything to control",
        Duration::from_secs(30),
        || async {
            let weights: Vec<u64> = proxy_arms(&world).await?.into_iter().map(|(_, w)| w).collect();
            Ok(if weights == [10_000, 0, 0] {
                Check::Done(())
            } else {
                Check::Waiting(format!("{weights:?}"))
            })
        },
    )
    .await?;
    let events = world.events_after("RolloutSucceeded").await?;
    for reason in ["ExperimentStarted", "RolloutPromoting", "RolloutSucceeded"] {
        assert_eq!(count(&events, reason), 1, "{reason} once in {events:#?}");
    }
    // weir report shows the same verdict, and writes the page with its plots.
    let page = world.dir.path().join("report.html");
    let (code, out, err) = weir_cli(&world, &["report", "sentiment", "--html", &page.display().to_string()])?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("winner: better"), "{out}");
    for arm in ["control", "fast", "better"] {
        assert!(out.contains(arm), "{arm} missing from\n{out}");
    }
    let html = std::fs::read_to_string(&page)?;
    assert_eq!(html.matches("<svg").count(), 4, "four plots");
    Ok(())
}
