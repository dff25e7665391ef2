//! `weir report`'s HTML page as a browser shows it: a realistic three-arm experiment is
//! rendered, opened in headless Chromium (Debian's `chromium`), and the DOM it parsed and a
//! screenshot of it are checked for the four plots. Chromium missing fails the test.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal};
use weir::experiment::status::{self, ArmState, ExperimentStatus, HistoryPoint};
use weir::experiment::verdict::{self, ArmSummary, Histogram, Metric, Plan};
use weir_proxy::metrics::LATENCY_BUCKETS;

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 2400;
const LOOKS: usize = 40;

/// One arm's truth: (name, weight %, error rate, mean score, median latency in seconds).
const ARMS: [(&str, f64, f64, f64, f64); 3] = [
    ("stable", 34.0, 0.012, 0.70, 0.120),
    ("fast", 33.0, 0.012, 0.70, 0.070),
    ("better", 33.0, 0.010, 0.73, 0.120),
];

/// What an arm has gathered, as the proxy's counters would hold it.
struct Counters {
    summary: ArmSummary,
    buckets: Vec<u64>,
}

impl Counters {
    fn new(name: &str) -> Counters {
        Counters {
            summary: ArmSummary {
                name: name.to_string(),
                ..ArmSummary::default()
            },
            buckets: vec![0; LATENCY_BUCKETS.len() + 1],
        }
    }

    fn serve(&mut self, rng: &mut StdRng, (_, _, error_rate, score, median): (&str, f64, f64, f64, f64)) {
        let latency = LogNormal::new(f64::ln(median), 0.6)
            .expect("valid parameters")
            .sample(rng);
        let bucket = LATENCY_BUCKETS.iter().position(|&bound| latency <= bound);
        self.buckets[bucket.unwrap_or(LATENCY_BUCKETS.len())] += 1;
        let summary = &mut self.summary;
        summary.latency.sum += latency;
        summary.requests += 1.0;
        if rng.random_bool(error_rate) {
            summary.errors += 1.0;
        } else if rng.random_bool(0.9) {
            let value = Normal::new(score, 0.2).expect("valid parameters").sample(rng);
            summary.score.observe(value.clamp(0.0, 1.0));
        }
        // Returning users: about one new sticky key in four requests.
        summary.users = (summary.requests / 4.0).round();
    }

    fn snapshot(&self) -> ArmSummary {
        let mut summary = self.summary.clone();
        let cumulative = self
            .buckets
            .iter()
            .scan(0, |total, &count| {
                *total += count;
                Some(*total)
            })
            .collect();
        let mut bounds = LATENCY_BUCKETS.to_vec();
        bounds.push(f64::INFINITY);
        summary.latency = Histogram {
            bounds,
            cumulative,
            sum: summary.latency.sum,
        };
        summary
    }
}

/// Forty looks, 30 s apart, of an experiment where `better` scores higher and `fast` answers
/// sooner.
fn experiment() -> ExperimentStatus {
    let plan = Plan {
        primary: Metric::Score,
        guardrails: vec![Metric::ErrorRatio, Metric::P99],
        confidence: 0.95,
        min_users_per_variant: 1500.0,
        min_effect: None,
    };
    let mut rng = StdRng::seed_from_u64(7);
    let mut counters: Vec<Counters> = ARMS.iter().map(|arm| Counters::new(arm.0)).collect();
    let mut history = Vec::new();
    let mut last = None;
    for look in 1..=LOOKS {
        for _ in 0..1500 {
            let pick = rng.random_range(0.0..100.0);
            let index = if pick < ARMS[0].1 {
                0
            } else if pick < ARMS[0].1 + ARMS[1].1 {
                1
            } else {
                2
            };
            counters[index].serve(&mut rng, ARMS[index]);
        }
        let arms: Vec<ArmSummary> = counters.iter().map(Counters::snapshot).collect();
        let verdict = verdict::verdict(&plan, &arms);
        let seconds = look * 30;
        let at = format!("2025-06-01T12:{:02}:{:02}Z", seconds / 60, seconds % 60);
        status::push_point(&mut history, HistoryPoint::of(at, &plan, &arms, &verdict));
        last = Some(verdict);
    }
    ExperimentStatus {
        started_at: "2025-06-01T12:00:00Z".to_string(),
        plan,
        arms: counters
            .iter()
            .zip(ARMS)
            .map(|(counters, (name, weight, ..))| ArmState {
                weight,
                deployment: format!("shop-{name}"),
                summary: counters.snapshot(),
            })
            .collect(),
        revisions: Vec::new(),
        verdict: last,
        ended_at: None,
        winner: None,
        stopped_by: None,
        history,
    }
}

fn chromium() -> PathBuf {
    weir_test_tools::debian_tool("chromium", "chromium").unwrap_or_else(|missing| panic!("{missing:#}"))
}

/// Runs headless Chromium on `page` with `args`, within a deadline; returns its stdout.
fn run_chromium(dir: &Path, page: &Path, args: &[String]) -> String {
    let stdout_path = dir.join("chromium.out");
    let stderr_path = dir.join("chromium.err");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .stdout(File::create(&stdout_path).expect("temp file"))
        .stderr(File::create(&stderr_path).expect("temp file"))
        .spawn()
        .unwrap_or_else(|error| panic!("starting chromium: {error}"));
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("chromium's status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(status.success(), "chromium failed ({status}): {stderr}");
    std::fs::read_to_string(&stdout_path).expect("chromium's output")
}

/// The coordinates of the first `<polyline>` or `<polygon>` in `svg` with at least two
/// distinct points, all finite.
fn drawn_shape(svg: &str) -> Option<Vec<(f64, f64)>> {
    let shapes = svg.split("<poly").skip(1);
    shapes
        .filter_map(|shape| {
            let points = shape.split("points=\"").nth(1)?.split('"').next()?;
            let coordinates: Option<Vec<(f64, f64)>> = points
                .split_whitespace()
                .map(|pair| {
                    let (x, y) = pair.split_once(',')?;
                    Some((x.parse().ok()?, y.parse().ok()?))
                })
                .collect();
            coordinates
        })
        .find(|points| {
            let finite = points.iter().all(|(x, y): &(f64, f64)| x.is_finite() && y.is_finite());
            finite && points.len() >= 2 && points.iter().any(|p| *p != points[0])
        })
}

/// Width and height from a PNG's IHDR chunk, read by hand (no PNG decoder in the lock file).
fn png_size(png: &[u8]) -> (u32, u32) {
    assert!(png.len() > 24, "a PNG has a signature and an IHDR chunk");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[12..16], b"IHDR", "IHDR comes first");
    let be = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    (be(16), be(20))
}

#[test]
fn chromium_shows_the_report_with_its_four_plots() {
    let experiment = experiment();
    let table = weir::report::table("shop", &experiment);
    assert_eq!(table.lines().last(), Some("winner: better"), "{table}");
    println!("{table}");
    let page = weir::report::html("shop", &experiment);
    for external in ["<script", "<link", "src=", "url(", "@import"] {
        assert!(!page.contains(external), "the page loads nothing: found {external}");
    }
    let links = page.matches("http").count();
    assert_eq!(
        links,
        page.matches("http://www.w3.org/2000/svg").count(),
        "no link but the SVG namespace"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("report.html");
    std::fs::write(&path, &page).expect("write the page");
    let dom = run_chromium(dir.path(), &path, &["--dump-dom".to_string()]);

    let svgs: Vec<&str> = dom
        .split("<svg")
        .skip(1)
        .map(|rest| rest.split("</svg>").next().unwrap_or(rest))
        .collect();
    assert_eq!(svgs.len(), 4, "four plots in the DOM");
    let titles = [
        "Latency CDF per arm",
        "Error ratio over time, with each arm's confidence band",
        "Mean score over time, with each arm's confidence band",
        "Difference with stable on the score over time, with its confidence interval",
    ];
    for (svg, title) in svgs.iter().zip(titles) {
        let escaped = title.replace('\'', "&#39;");
        assert!(
            svg.contains(&format!("<title>{title}</title>")) || svg.contains(&format!("<title>{escaped}</title>")),
            "{title}: {svg:.300}"
        );
        let shape = drawn_shape(svg);
        assert!(shape.is_some(), "{title} draws a line with real coordinates");
        assert!(svg.contains("fast") && svg.contains("better"), "{title} has a legend");
        assert!(svg.matches("<text").count() >= 8, "{title} has tick labels");
        assert!(!svg.contains("no data yet"), "{title} has data");
    }
    let bands = svgs[1..].iter().map(|svg| svg.matches("<polygon").count());
    assert!(
        bands.clone().all(|count| count >= 2),
        "bands over time: {:?}",
        bands.collect::<Vec<_>>()
    );

    let screenshot = dir.path().join("report.png");
    let size = format!("--window-size={WIDTH},{HEIGHT}");
    run_chromium(
        dir.path(),
        &path,
        &[format!("--screenshot={}", screenshot.display()), size.clone()],
    );
    let png = std::fs::read(&screenshot).expect("chromium wrote the screenshot");
    assert_eq!(png_size(&png), (WIDTH, HEIGHT));

    // Not blank: a blank page of the same size compresses to far fewer bytes.
    let blank = dir.path().join("blank.html");
    std::fs::write(&blank, "<!DOCTYPE html><html><body></body></html>").expect("write the blank page");
    let blank_shot = dir.path().join("blank.png");
    run_chromium(
        dir.path(),
        &blank,
        &[format!("--screenshot={}", blank_shot.display()), size],
    );
    let blank_png = std::fs::read(&blank_shot).expect("chromium wrote the blank screenshot");
    assert_eq!(png_size(&blank_png), (WIDTH, HEIGHT));
    assert!(
        png.len() > 5 * blank_png.len(),
        "the report's screenshot ({} bytes) is hardly larger than a blank page's ({} bytes)",
        png.len(),
        blank_png.len()
    );
    println!(
        "chromium: {} svgs; screenshot {WIDTH}x{HEIGHT}, {} bytes (blank page {} bytes)",
        svgs.len(),
        png.len(),
        blank_png.len()
    );
    if let Some(keep) = std::env::var_os("WEIR_REPORT_SCREENSHOT") {
        std::fs::copy(&screenshot, keep).expect("copy the screenshot");
    }
}
