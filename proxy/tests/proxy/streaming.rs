use http::StatusCode;
use http_body_util::BodyExt;

use crate::support::*;

const BIG: u64 = 64 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_upload_and_download_stream_through_intact() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = start_proxy(&config_yaml(stable.addr, candidate.addr, 0, "")).await;
    let expected = Digest::of_generated(BIG);
    for client in [h1_client(), h2c_client()] {
        let req = upload(proxy.listen_addr(), BIG);
        let (parts, body, _) = send(&client, req).await;
        assert_eq!(parts.status, StatusCode::OK);
        assert_eq!(String::from_utf8_lossy(&body), expected.answer());

        let rsp = within(client.request(get(proxy.listen_addr(), &format!("/download/{BIG}"))))
            .await
            .expect("response");
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(Digest::of_body(rsp.into_body()).await, expected);
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_chunk_arrives_before_the_backend_sends_the_rest() {
    let (stable, candidate) = (Backend::start("stable").await, Backend::start("candidate").await);
    let proxy = start_proxy(&config_yaml(stable.addr, candidate.addr, 0, "")).await;
    for client in [h1_client(), h2c_client()] {
        let rsp = within(client.request(get(proxy.listen_addr(), "/stream")))
            .await
            .expect("response");
        assert_eq!(rsp.headers()["content-type"], "text/event-stream");
        let mut body = rsp.into_body();
        // The backend is still holding its second chunk: this frame can only arrive if the
        // proxy forwards without buffering.
        let first = within(body.frame()).await.expect("a first frame").expect("no error");
        assert_eq!(first.into_data().expect("data"), "data: first\n\n");
        stable.release();
        let mut rest = Vec::new();
        while let Some(frame) = within(body.frame()).await {
            if let Ok(data) = frame.expect("no error").into_data() {
                rest.extend_from_slice(&data);
            }
        }
        assert_eq!(rest, b"data: second\n\n");
    }
    proxy.shutdown().await;
}
