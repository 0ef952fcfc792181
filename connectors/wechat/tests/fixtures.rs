//! Every message and event type of the reference (§3), from fixtures/, through the parser,
//! the normalizer and the router: content, dedupe key, and whether agents get it or it is
//! reported on switchboard.events.

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use axum::http::StatusCode;
use serde_json::{Value, json};
use switchboard_connector_wechat::{message, xml};

use common::{call, config, connector, plain_query, post, router};

/// How a push travels: to agents (accept) or as a report of this kind.
enum Route {
    Accept,
    Report(&'static str),
}

fn read(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn table() -> Vec<(&'static str, Value, &'static str, Route)> {
    use Route::*;
    vec![
        (
            "text.xml",
            json!({"type":"text","text":"this is a test","extra":{"msg_id":"1234567890123456"}}),
            "fromUser|1348831860|1234567890123456",
            Accept,
        ),
        (
            "text_bizmsgmenuid.xml",
            json!({"type":"text","text":"满意","extra":{"msg_id":"23456789012345678","bizmsgmenuid":"101"}}),
            "oUser1|1700000000|23456789012345678",
            Accept,
        ),
        (
            "text_from_article.xml",
            json!({"type":"text","text":"hello","extra":{"msg_id":"23456789012345679","msg_data_id":"2247483651","idx":"1","something_new":"kept"}}),
            "oUser1|1700000000|23456789012345679",
            Accept,
        ),
        (
            "image.xml",
            json!({"type":"image","url":"this is a url","media_id":"media_id","extra":{"msg_id":"1234567890123456"}}),
            "fromUser|1348831860|1234567890123456",
            Accept,
        ),
        (
            "voice.xml",
            json!({"type":"voice","media_id":"media_id","format":"Format","extra":{"msg_id":"1234567890123456"}}),
            "fromUser|1357290913|1234567890123456",
            Accept,
        ),
        (
            "voice_recognition.xml",
            json!({"type":"voice","media_id":"voice_media","format":"amr","recognition":"我的快递到哪了","extra":{"media_id_16k":"voice_media_16k","msg_id":"23456789012345680"}}),
            "oUser1|1700000000|23456789012345680",
            Accept,
        ),
        (
            "video.xml",
            json!({"type":"video","media_id":"media_id","extra":{"thumb_media_id":"thumb_media_id","msg_id":"1234567890123456"}}),
            "fromUser|1357290913|1234567890123456",
            Accept,
        ),
        (
            "shortvideo.xml",
            json!({"type":"video","media_id":"sv_media","extra":{"thumb_media_id":"sv_thumb","msg_id":"23456789012345681","short":true}}),
            "oUser1|1700000000|23456789012345681",
            Accept,
        ),
        (
            "location.xml",
            json!({"type":"location","latitude":23.134521,"longitude":113.358803,"label":"位置信息","extra":{"scale":"20","msg_id":"1234567890123456"}}),
            "fromUser|1351776360|1234567890123456",
            Accept,
        ),
        (
            "link.xml",
            json!({"type":"link","url":"url","title":"公众平台官网链接","description":"公众平台官网链接"}),
            "fromUser|1351776360|1234567890123456",
            Accept,
        ),
        (
            "event_subscribe.xml",
            json!({"type":"event","name":"subscribe"}),
            "FromUser|123456789|subscribe|",
            Accept,
        ),
        (
            "event_subscribe_qrscene.xml",
            json!({"type":"event","name":"subscribe","key":"123123","data":{"ticket":"TICKET","scene":"123123","event_key":"qrscene_123123"}}),
            "FromUser|123456789|subscribe|qrscene_123123",
            Accept,
        ),
        (
            "event_unsubscribe.xml",
            json!({"type":"event","name":"unsubscribe"}),
            "oUser1|1700000000|unsubscribe|",
            Report("wechat.unsubscribed"),
        ),
        (
            "event_scan.xml",
            json!({"type":"event","name":"scan","key":"123123","data":{"ticket":"TICKET","event_key":"123123"}}),
            "FromUser|123456789|SCAN|123123",
            Accept,
        ),
        (
            "event_location.xml",
            json!({"type":"event","name":"location","data":{"latitude":23.137466,"longitude":113.352425,"precision":119.38504}}),
            "fromUser|123456789|LOCATION|",
            Report("wechat.location_reported"),
        ),
        (
            "event_click.xml",
            json!({"type":"event","name":"click","key":"EVENTKEY","data":{"event_key":"EVENTKEY"}}),
            "FromUser|123456789|CLICK|EVENTKEY",
            Accept,
        ),
        (
            "event_view.xml",
            json!({"type":"event","name":"view","key":"www.qq.com","data":{"event_key":"www.qq.com"}}),
            "FromUser|123456789|VIEW|www.qq.com",
            Accept,
        ),
        (
            "event_view_miniprogram.xml",
            json!({"type":"event","name":"view_miniprogram","key":"pages/index/index","data":{"menu_id":"208379533","event_key":"pages/index/index"}}),
            "oUser1|1700000000|view_miniprogram|pages/index/index",
            Accept,
        ),
        (
            "event_scancode_push.xml",
            json!({"type":"event","name":"scancode_push","key":"scan_1","data":{"scan_code_info":{"scan_type":"qrcode","scan_result":"SF1234567890"},"event_key":"scan_1"}}),
            "oUser1|1700000000|scancode_push|scan_1",
            Accept,
        ),
        (
            "event_scancode_waitmsg.xml",
            json!({"type":"event","name":"scancode_waitmsg","key":"scan_2","data":{"scan_code_info":{"scan_type":"barcode","scan_result":"EAN_13,6901234567892"},"event_key":"scan_2"}}),
            "oUser1|1700000000|scancode_waitmsg|scan_2",
            Accept,
        ),
        (
            "event_pic_sysphoto.xml",
            json!({"type":"event","name":"pic_sysphoto","key":"photo","data":{"send_pics_info":{"count":"1","pic_list":{"item":[{"pic_md5_sum":"1b5f7c23b5bf75682a53e7b6d163e185"}]}},"event_key":"photo"}}),
            "oUser1|1700000000|pic_sysphoto|photo",
            Accept,
        ),
        (
            "event_pic_photo_or_album.xml",
            json!({"type":"event","name":"pic_photo_or_album","key":"album","data":{"send_pics_info":{"count":"2","pic_list":{"item":[{"pic_md5_sum":"aaa"},{"pic_md5_sum":"bbb"}]}},"event_key":"album"}}),
            "oUser1|1700000000|pic_photo_or_album|album",
            Accept,
        ),
        (
            "event_pic_weixin.xml",
            json!({"type":"event","name":"pic_weixin","key":"wxpic","data":{"send_pics_info":{"count":"1","pic_list":{"item":[{"pic_md5_sum":"ccc"}]}},"event_key":"wxpic"}}),
            "oUser1|1700000000|pic_weixin|wxpic",
            Accept,
        ),
        (
            "event_location_select.xml",
            json!({"type":"event","name":"location_select","key":"where","data":{"send_location_info":{"location_x":"23","location_y":"113","scale":"15","label":"广州市海珠区","poiname":""},"event_key":"where"}}),
            "oUser1|1700000000|location_select|where",
            Accept,
        ),
        (
            "event_kf_create_session.xml",
            json!({"type":"event","name":"kf_create_session","data":{"kf_account":"test1@test"}}),
            "fromuser|1399197672|kf_create_session|",
            Accept,
        ),
        (
            "event_kf_close_session.xml",
            json!({"type":"event","name":"kf_close_session","data":{"kf_account":"test1@test"}}),
            "oUser1|1700000000|kf_close_session|",
            Accept,
        ),
        (
            "event_kf_switch_session.xml",
            json!({"type":"event","name":"kf_switch_session","data":{"from_kf_account":"test1@test","to_kf_account":"test2@test"}}),
            "fromuser|1399197672|kf_switch_session|",
            Accept,
        ),
        (
            "event_templatesendjobfinish.xml",
            json!({"type":"event","name":"templatesendjobfinish","data":{"msg_id":"200163836","status":"success"}}),
            "fromuser|1395658920|TEMPLATESENDJOBFINISH||200163836",
            Report("wechat.job_finished"),
        ),
        (
            "event_masssendjobfinish.xml",
            json!({"type":"event","name":"masssendjobfinish","data":{"msg_id":"1000001625","status":"err(30003)","total_count":"0","filter_count":"0","sent_count":"0","error_count":"0"}}),
            "oUser1|1700000000|MASSSENDJOBFINISH||1000001625",
            Report("wechat.job_finished"),
        ),
        (
            "unknown_msgtype.xml",
            json!({"type":"event","name":"message.miniprogrampage","data":{"msg_id":"23456789012345682","title":"Order","app_id":"wxapp","page_path":"pages/o","msg_type":"miniprogrampage"}}),
            "oUser1|1700000000|23456789012345682",
            Accept,
        ),
        (
            "unknown_event.xml",
            json!({"type":"event","name":"subscribe_msg_popup_event","data":{"subscribe_msg_popup_event":{"list":[{"template_id":"tpl1","subscribe_status_string":"accept","popup_scene":"0"},{"template_id":"tpl2","subscribe_status_string":"reject","popup_scene":"0"}]}}}),
            "oUser1|1700000000|subscribe_msg_popup_event|",
            Report("wechat.event"),
        ),
    ]
}

#[test]
fn every_fixture_is_in_the_table() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".xml"))
        .collect();
    let in_table: BTreeSet<String> = table().iter().map(|(n, ..)| (*n).to_owned()).collect();
    assert_eq!(on_disk, in_table);
    for name in &on_disk {
        assert!(
            read(name).starts_with("<!-- origin: "),
            "{name} does not name its origin"
        );
    }
}

#[test]
fn every_type_normalizes_to_its_content() {
    for (name, expected, dedupe, _) in table() {
        let root =
            xml::parse(read(name).as_bytes(), 1 << 16).unwrap_or_else(|e| panic!("{name}: {e}"));
        let push = message::normalize(&root).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            serde_json::to_value(push.content()).unwrap(),
            expected,
            "{name}"
        );
        assert_eq!(push.dedupe_key, dedupe, "{name}");
    }
}

#[tokio::test]
async fn every_type_takes_its_route() {
    let connector = connector(&config(""));
    let (router, sink) = router(&connector);
    let now = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    for (name, expected, dedupe, route) in table() {
        let (accepted, reported) = (sink.accepted().len(), sink.reported().len());
        let (status, _, body) = call(&router, post(&plain_query(&now, "7"), read(name))).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "success"),
            "{name}"
        );
        match route {
            Route::Accept => {
                let all = sink.accepted();
                assert_eq!(all.len(), accepted + 1, "{name}");
                let message = &all.last().unwrap().1;
                assert_eq!(
                    serde_json::to_value(&message.content).unwrap(),
                    expected,
                    "{name}"
                );
                assert_eq!(message.dedupe_key, dedupe, "{name}");
                assert!(message.raw.is_none(), "{name}: raw is off by default");
            }
            Route::Report(kind) => {
                assert_eq!(sink.accepted().len(), accepted, "{name}");
                let all = sink.reported();
                assert_eq!(all.len(), reported + 1, "{name}");
                let event = &all.last().unwrap().1;
                assert_eq!(event.kind, kind, "{name}");
                assert_eq!(event.data["dedupe_key"], dedupe, "{name}");
                assert_eq!(event.data["event"], expected["name"], "{name}");
                assert!(
                    event
                        .conversation_id
                        .as_deref()
                        .unwrap()
                        .starts_with("wechat:main:")
                );
            }
        }
    }
}

#[tokio::test]
async fn events_to_agents_is_configurable_and_raw_can_be_kept() {
    let connector = connector(&config(
        "events_to_agents = [\"LOCATION\"]\nkeep_raw = true",
    ));
    let (router, sink) = router(&connector);
    let now = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    for (name, route) in [
        ("event_location.xml", "accept"),
        ("event_click.xml", "report"),
        ("text.xml", "accept"),
    ] {
        let (accepted, reported) = (sink.accepted().len(), sink.reported().len());
        let (status, ..) = call(&router, post(&plain_query(&now, "7"), read(name))).await;
        assert_eq!(status, StatusCode::OK);
        let grew = (
            sink.accepted().len() - accepted,
            sink.reported().len() - reported,
        );
        assert_eq!(
            grew,
            if route == "accept" { (1, 0) } else { (0, 1) },
            "{name}"
        );
    }
    let accepted = sink.accepted();
    assert_eq!(
        accepted[1].1.raw.as_ref().unwrap()["content"],
        "this is a test"
    );
    assert_eq!(sink.reported()[0].1.data["raw"]["event"], "CLICK");
}

#[tokio::test]
async fn a_retried_report_is_published_once() {
    let connector = connector(&config(""));
    let (router, sink) = router(&connector);
    let now = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    for _ in 0..3 {
        let (status, ..) = call(
            &router,
            post(&plain_query(&now, "7"), read("event_location.xml")),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(sink.reported().len(), 1);
}
