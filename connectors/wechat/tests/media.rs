//! The media proxy: inbound media carry a signed, expiring daemon URL that streams the file
//! from WeChat's `/cgi-bin/media/get`.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::http::StatusCode;
use switchboard_sdk::Content;
use switchboard_sdk::services::MemoryKv;

use common::fake::FakeWechat;
use common::*;

const SIGNING_KEY: &str = "0123456789abcdef0123456789abcdef";

fn media_xml(msg_type: &str, media_id: &str) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{ACCOUNT}]]></ToUserName><FromUserName><![CDATA[{OPENID}]]></FromUserName><CreateTime>1700000000</CreateTime><MsgType><![CDATA[{msg_type}]]></MsgType><MediaId><![CDATA[{media_id}]]></MediaId><MsgId>77</MsgId></xml>"
    )
}

fn media_url(content: &Content) -> String {
    match content {
        Content::Image { extra, .. }
        | Content::Voice { extra, .. }
        | Content::Video { extra, .. } => extra["media_url"].as_str().unwrap().to_owned(),
        other => panic!("not media: {other:?}"),
    }
}

#[tokio::test]
async fn media_urls_are_signed_served_and_expire() {
    let fake = FakeWechat::start().await;
    fake.state.media.lock().unwrap().insert(
        "IMG_1".into(),
        ("image/jpeg".into(), vec![0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]),
    );
    fake.state.media.lock().unwrap().insert(
        "VID_1".into(),
        ("video".into(), b"http://127.0.0.1:9/video.mp4".to_vec()),
    );
    let clock = manual_clock();
    let cfg = config(&format!(
        "{}\n[media_proxy]\nenabled = true\nsigning_key = \"{SIGNING_KEY}\"\nurl_ttl_secs = 600",
        fake.config_line()
    ));
    let connector = connector_with(&cfg, Arc::new(MemoryKv::default()), "a", clock.clone());
    let (router, sink) = router(&connector);

    for (msg_type, id) in [("image", "IMG_1"), ("voice", "VOICE_1"), ("video", "VID_1")] {
        let (status, ..) = call(
            &router,
            post(&plain_query(&now(), "1"), media_xml(msg_type, id)),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let accepted = sink.accepted();
    let image_url = media_url(&accepted[0].1.content);
    assert!(
        image_url.starts_with("/wechat/main/media/IMG_1?exp="),
        "{image_url}"
    );
    // Voice and video have no url of their own, so the proxy URL becomes theirs.
    match &accepted[1].1.content {
        Content::Voice { url, media_id, .. } => {
            assert_eq!(media_id.as_deref(), Some("VOICE_1"));
            assert!(
                url.as_deref()
                    .unwrap()
                    .starts_with("/wechat/main/media/VOICE_1?")
            );
        }
        other => panic!("{other:?}"),
    }

    // The router is mounted under /wechat/main by the daemon; here it is called directly.
    let local = |url: &str| url.trim_start_matches("/wechat/main").to_owned();
    let (status, headers, _) = call(&router, get(&local(&image_url))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "image/jpeg");
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap()
            .contains("IMG_1")
    );
    assert_eq!(headers["content-length"], "7");
    let (_, bytes) = call_raw(&router, get(&local(&image_url))).await;
    assert_eq!(bytes, [0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]);

    // Video downloads are links in WeChat's answer: the proxy redirects.
    let video_url = media_url(&accepted[2].1.content);
    let (status, headers, _) = call(&router, get(&local(&video_url))).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(headers["location"], "http://127.0.0.1:9/video.mp4");

    // Unknown to WeChat: 404. A token rotated meanwhile: one refresh, still served.
    let voice_url = media_url(&accepted[1].1.content);
    let (status, ..) = call(&router, get(&local(&voice_url))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    fake.state.rotate();
    let (status, ..) = call(&router, get(&local(&image_url))).await;
    assert_eq!(status, StatusCode::OK);

    // Forged or expired: 403, and WeChat is not asked.
    let before = fake.state.media_fetches.load(Ordering::SeqCst);
    let forged = local(&image_url).replace("IMG_1", "IMG_2");
    let (status, ..) = call(&router, get(&forged)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, ..) = call(&router, get("/media/IMG_1")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    clock.advance(time::Duration::seconds(601));
    let (status, ..) = call(&router, get(&local(&image_url))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(fake.state.media_fetches.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn without_the_proxy_there_is_no_media_route_and_no_url() {
    let connector = connector(&config(""));
    let (router, sink) = router(&connector);
    call(
        &router,
        post(&plain_query(&now(), "1"), media_xml("voice", "V")),
    )
    .await;
    match &sink.accepted()[0].1.content {
        Content::Voice { url, extra, .. } => {
            assert!(url.is_none());
            assert!(!extra.contains_key("media_url"));
        }
        other => panic!("{other:?}"),
    }
    let (status, ..) = call(&router, get("/media/V?exp=1&sig=00")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
