//! HTTP/2 conformance: h2spec (built from Go modules into weir's cache) against the proxy's
//! plain-text listener, which takes h2c by prior knowledge next to HTTP/1.1.

use crate::support::*;

/// The cases weir-proxy fails on its h2c listener, as `package: classname`, each with README's
/// reason. `http2/3.5`: an invalid preface on a port that also speaks HTTP/1.1 is read as an
/// HTTP/1.1 request, and answered 400 before the connection closes, where h2spec expects only
/// the close. Over TLS, ALPN says HTTP/2 before the first byte, and every case passes.
const H2C_FAILURES: &[&str] = &["http2/3.5: Sends invalid connection preface"];

/// Each failed case of a JUnit report, as `package: classname`.
fn failures(report: &str) -> Vec<String> {
    let mut failed = Vec::new();
    for case in report.split("<testcase ").skip(1) {
        let body = case.split("</testcase>").next().unwrap_or(case);
        let head = body.split('>').next().unwrap_or("");
        let attribute = |name: &str| {
            head.split(&format!("{name}=\""))
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or("")
                .to_owned()
        };
        if body.contains("<failure") || body.contains("<error") {
            failed.push(format!("{}: {}", attribute("package"), attribute("classname")));
        }
    }
    failed
}

#[test]
fn failures_are_read_from_a_junit_report() {
    let report = r#"<testsuites>
  <testsuite name="3.5" package="http2/3.5" tests="2">
    <testcase package="http2/3.5" classname="Sends client connection preface" time="0.0007"></testcase>
    <testcase package="http2/3.5" classname="Sends invalid connection preface" time="0.0021">
      <error>Connection closed</error>
    </testcase>
    <testcase package="http2/5.1" classname="Sends a DATA frame" time="0.1"><failure>x</failure></testcase>
  </testsuite>
</testsuites>"#;
    assert_eq!(
        failures(report),
        [
            "http2/3.5: Sends invalid connection preface",
            "http2/5.1: Sends a DATA frame"
        ]
    );
}

/// Runs h2spec against `port` (over TLS when `tls`, trusting any certificate) and checks that
/// it ran every case and failed exactly `expected`.
async fn h2spec_against(port: u16, tls: bool, expected: &[&str]) {
    let h2spec = weir_test_tools::go_tool(weir_test_tools::H2SPEC).unwrap_or_else(|e| panic!("{e:#}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("h2spec.xml");
    let report_path = report.clone();
    // Off the runtime's threads, which serve the proxy meanwhile.
    let out = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(&h2spec);
        command.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-o", "5", "-j"]);
        command.arg(&report_path);
        if tls {
            command.args(["-t", "-k"]);
        }
        command.output()
    })
    .await
    .expect("h2spec's thread")
    .expect("h2spec runs");
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "h2spec wrote no report ({e}); it said:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let cases = text.matches("<testcase ").count();
    assert!(cases >= 145, "h2spec ran {cases} cases:\n{text}");
    assert_eq!(
        failures(&text),
        expected,
        "h2spec's failures differ from README's list; it said:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2spec_passes_every_case_over_h2c_but_the_ones_readme_lists() {
    let backend = Backend::start("s").await;
    let proxy = start_proxy(&config_yaml(backend.addr, backend.addr, 0, "")).await;
    h2spec_against(proxy.listen_addr().port(), false, H2C_FAILURES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2spec_passes_every_case_over_tls() {
    let backend = Backend::start("s").await;
    let pki = crate::tls::Pki::new();
    let leaf = pki.leaf("weir-proxy");
    pki.install(&leaf.cert_pem, &leaf.key_pem);
    let proxy = crate::tls::start_tls_proxy(&pki, backend.addr, backend.addr).await;
    h2spec_against(proxy.listen_addr().port(), true, &[]).await;
}
