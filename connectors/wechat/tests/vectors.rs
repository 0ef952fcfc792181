//! Every vector of shared/vectors/wechat/vectors.json (official sample, EasyWeChat, wechatpy,
//! WxJava and derived edge cases; origins are recorded in the file itself).

mod common;

use std::path::PathBuf;

use axum::http::StatusCode;
use base64::Engine as _;
use serde_json::Value;
use switchboard_connector_wechat::crypto::{
    AesKey, DecryptError, FrameError, MessageCrypt, signature, verify_signature,
};
use switchboard_connector_wechat::{message, xml};
use switchboard_sdk::Content;

use common::{call, config, connector, get, post, router};

fn vectors() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/vectors/wechat/vectors.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the wechat test vectors are missing at {} ({e}); they live in shared/ beside the repository",
            path.display()
        )
    });
    serde_json::from_str(&text).expect("vectors.json is valid JSON")
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {key} missing in {}", v["id"]))
}

fn crypt(v: &Value, strict: bool) -> MessageCrypt {
    let key = AesKey::from_encoding_aes_key(s(v, "encoding_aes_key")).unwrap();
    MessageCrypt::new(s(v, "token"), vec![key], s(v, "appid"), strict)
}

fn random16(bytes: &[u8]) -> [u8; 16] {
    bytes.try_into().expect("random prefix is 16 bytes")
}

#[test]
fn plain_signatures() {
    let vectors = vectors();
    let cases = vectors["plain_signature"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for v in cases {
        let valid = v["valid"].as_bool().unwrap();
        let sig = s(v, "signature");
        if let Some(parts) = v["parts"].as_array() {
            let parts: Vec<&str> = parts.iter().map(|p| p.as_str().unwrap()).collect();
            assert_eq!(signature(&parts) == sig, valid, "{}", v["id"]);
            assert_eq!(verify_signature(&parts, sig), valid, "{}", v["id"]);
        } else {
            let parts = [s(v, "token"), s(v, "timestamp"), s(v, "nonce")];
            assert_eq!(verify_signature(&parts, sig), valid, "{}", v["id"]);
            assert_eq!(signature(&parts) == sig, valid, "{}", v["id"]);
        }
    }
}

#[tokio::test]
async fn url_verification_returns_echostr_verbatim() {
    let vectors = vectors();
    let v = &vectors["plain_signature"][3];
    assert_eq!(s(v, "token"), common::TOKEN);
    let connector = connector(&config(""));
    let (router, sink) = router(&connector);
    let uri = format!(
        "/?signature={}&timestamp={}&nonce={}&echostr={}",
        s(v, "signature"),
        s(v, "timestamp"),
        s(v, "nonce"),
        s(v, "echostr")
    );
    let (status, headers, body) = call(&router, get(&uri)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, s(v, "expected_get_response_body"));
    assert_eq!(headers["content-type"], "text/plain");

    let forged = uri.replace(s(v, "signature"), &"0".repeat(40));
    let (status, _, body) = call(&router, get(&forged)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!body.contains(s(v, "echostr")));
    assert!(sink.accepted().is_empty());
}

#[test]
fn inbound_decryption_and_byte_exact_reencryption() {
    let vectors = vectors();
    let cases = vectors["inbound_decrypt"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for v in cases {
        let id = &v["id"];
        let expected = &v["expected"];
        let encrypt = s(v, "encrypt");
        let q = &v["query"];

        // The Encrypt in the body is the one signed.
        let outer = xml::parse(s(v, "body").as_bytes(), 1 << 16).unwrap();
        assert_eq!(outer.text_of("Encrypt"), Some(encrypt), "{id}");

        let key = AesKey::from_encoding_aes_key(s(v, "encoding_aes_key")).unwrap();
        assert_eq!(hex::encode(key.bytes()), s(v, "aes_key_hex"), "{id}");
        assert_eq!(hex::encode(&key.bytes()[..16]), s(v, "iv_hex"), "{id}");

        let opened = crypt(v, true)
            .open(
                s(q, "timestamp"),
                s(q, "nonce"),
                encrypt,
                s(q, "msg_signature"),
            )
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        let frame = &opened.frame;
        assert_eq!(opened.key_index, 0);
        assert_eq!(frame.message, s(expected, "plaintext"), "{id}");
        assert_eq!(frame.receive_id, s(expected, "receive_id"), "{id}");
        assert_eq!(
            hex::encode(frame.random),
            s(expected, "random_prefix_hex"),
            "{id}"
        );
        assert_eq!(
            frame.random.as_slice(),
            s(expected, "random_prefix_ascii").as_bytes(),
            "{id}"
        );
        assert_eq!(
            frame.message.len() as u64,
            expected["msg_len"].as_u64().unwrap(),
            "{id}"
        );

        // Pad value and padded length, from the raw ciphertext.
        let ciphertext = base64::engine::general_purpose::STANDARD
            .decode(encrypt)
            .unwrap();
        assert_eq!(
            ciphertext.len() as u64,
            expected["padded_len"].as_u64().unwrap(),
            "{id}"
        );
        let pad = ciphertext.len() - (20 + frame.message.len() + frame.receive_id.len());
        assert_eq!(
            pad as u64,
            expected["pkcs7_pad_value"].as_u64().unwrap(),
            "{id}"
        );

        assert!(
            expected["reencrypt_with_same_random_reproduces_encrypt"]
                .as_bool()
                .unwrap()
        );
        let again = key.encrypt(&frame.random, &frame.message, &frame.receive_id);
        assert_eq!(again, encrypt, "{id}: re-encryption differs");
    }
}

#[test]
fn the_mp_sample_signature_covers_the_plain_query_too() {
    let vectors = vectors();
    let v = &vectors["inbound_decrypt"][0];
    let q = &v["query"];
    assert!(verify_signature(
        &[s(v, "token"), s(q, "timestamp"), s(q, "nonce")],
        s(q, "signature")
    ));
    // The compatible-mode body's plaintext fields agree with the decrypted copy here, but only
    // the decrypted copy is used.
    let opened = crypt(v, true)
        .open(
            s(q, "timestamp"),
            s(q, "nonce"),
            s(v, "encrypt"),
            s(q, "msg_signature"),
        )
        .unwrap();
    let inner = xml::parse(opened.frame.message.as_bytes(), 1 << 16).unwrap();
    let push = message::normalize(&inner).unwrap();
    assert_eq!(
        push.content(),
        Content::Text {
            text: "abcdteT".into(),
            extra: serde_json::from_value(serde_json::json!({"msg_id": "6054768590064713728"}))
                .unwrap(),
        }
    );
    assert_eq!(
        push.dedupe_key,
        "oyORnuP8q7ou2gfYjqLzSIWZf0rs|1409735668|6054768590064713728"
    );
}

#[test]
fn negative_cases_are_distinct_errors() {
    let vectors = vectors();
    let cases = vectors["inbound_decrypt"].as_array().unwrap();
    let easywechat = cases
        .iter()
        .find(|v| v["id"] == "easywechat_decrypt_safe_mode")
        .unwrap();
    let q = &easywechat["query"];
    let (ts, nonce, encrypt) = (s(q, "timestamp"), s(q, "nonce"), s(easywechat, "encrypt"));

    for negative in easywechat["negative_cases"].as_array().unwrap() {
        let result = match negative.get("msg_signature").and_then(Value::as_str) {
            Some(bad) => crypt(easywechat, true).open(ts, nonce, encrypt, bad),
            None => {
                let key = AesKey::from_encoding_aes_key(s(easywechat, "encoding_aes_key")).unwrap();
                MessageCrypt::new(
                    s(easywechat, "token"),
                    vec![key],
                    s(negative, "appid"),
                    true,
                )
                .open(ts, nonce, encrypt, s(q, "msg_signature"))
            }
        };
        match s(negative, "expect") {
            "signature error" => assert_eq!(result, Err(DecryptError::BadSignature)),
            "appid mismatch error" => assert!(
                matches!(&result, Err(DecryptError::AppIdMismatch { got }) if got == "wxb11529c136998cb6"),
                "{result:?}"
            ),
            other => panic!("unknown negative case {other}"),
        }
    }

    for v in cases {
        let id = &v["id"];
        let q = &v["query"];
        let (ts, nonce, encrypt) = (s(q, "timestamp"), s(q, "nonce"), s(v, "encrypt"));
        let token = s(v, "token");

        // Wrong key: the signature holds (same token) but no key makes a valid frame.
        let other =
            AesKey::from_encoding_aes_key("kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR").unwrap();
        let other = if AesKey::from_encoding_aes_key(s(v, "encoding_aes_key")).unwrap() == other {
            AesKey::from_encoding_aes_key("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap()
        } else {
            other
        };
        let wrong = MessageCrypt::new(token, vec![other], s(v, "appid"), true);
        let result = wrong.open(ts, nonce, encrypt, s(q, "msg_signature"));
        assert!(
            matches!(result, Err(DecryptError::WrongKey(_))),
            "{id}: {result:?}"
        );

        // Rotation: the right key as the previous one still opens it, and says which.
        let current =
            AesKey::from_encoding_aes_key("Zbcdefghijklmnopqrstuvwxyz0123456789ABCDEFG").unwrap();
        let right = AesKey::from_encoding_aes_key(s(v, "encoding_aes_key")).unwrap();
        let rotated = MessageCrypt::new(token, vec![current, right], s(v, "appid"), true);
        let opened = rotated
            .open(ts, nonce, encrypt, s(q, "msg_signature"))
            .unwrap();
        assert_eq!(opened.key_index, 1, "{id}");

        // Truncated ciphertext, re-signed so the signature is not what refuses it.
        for cut in [1usize, 4, 10, 44] {
            let truncated = &encrypt[..encrypt.len() - cut];
            let sig = signature(&[token, ts, nonce, truncated]);
            let result = crypt(v, true).open(ts, nonce, truncated, &sig);
            assert!(
                matches!(
                    result,
                    Err(DecryptError::MalformedCiphertext(
                        FrameError::Base64 | FrameError::Length(_) | FrameError::Truncated { .. }
                    ))
                ),
                "{id} cut {cut}: {result:?}"
            );
        }

        // Wrong app id, strict and relaxed.
        let strict = MessageCrypt::new(
            token,
            vec![AesKey::from_encoding_aes_key(s(v, "encoding_aes_key")).unwrap()],
            "wx0000000000000000",
            true,
        );
        assert!(matches!(
            strict.open(ts, nonce, encrypt, s(q, "msg_signature")),
            Err(DecryptError::AppIdMismatch { .. })
        ));
        let relaxed = MessageCrypt::new(
            token,
            vec![AesKey::from_encoding_aes_key(s(v, "encoding_aes_key")).unwrap()],
            "wx0000000000000000",
            false,
        );
        let opened = relaxed
            .open(ts, nonce, encrypt, s(q, "msg_signature"))
            .unwrap();
        assert_eq!(opened.frame.receive_id, s(v, "appid"));
    }
}

#[test]
fn wecom_echostr_vectors_show_the_difference() {
    let vectors = vectors();
    let cases = vectors["wecom_encrypted_echostr_for_contrast"]
        .as_array()
        .unwrap();
    assert_eq!(cases.len(), 2);
    for v in cases {
        let q = &v["query"];
        // WeCom signs echostr into msg_signature and encrypts it; the same cipher opens it.
        let key = AesKey::from_encoding_aes_key(s(v, "encoding_aes_key")).unwrap();
        let crypt = MessageCrypt::new(s(v, "token"), vec![key], s(v, "receive_id"), true);
        let opened = crypt
            .open(
                s(q, "timestamp"),
                s(q, "nonce"),
                s(q, "echostr"),
                s(q, "msg_signature"),
            )
            .unwrap();
        assert_eq!(
            opened.frame.message,
            s(v, "expected_response_body"),
            "{}",
            v["id"]
        );
        // The official account's plain signature over token/timestamp/nonce does not match
        // WeCom's msg_signature: the two schemes must not be mixed.
        assert!(!verify_signature(
            &[s(v, "token"), s(q, "timestamp"), s(q, "nonce")],
            s(q, "msg_signature")
        ));
    }
}

#[tokio::test]
async fn a_wecom_style_verification_is_refused() {
    let vectors = vectors();
    let v = &vectors["wecom_encrypted_echostr_for_contrast"][0];
    let q = &v["query"];
    let connector = connector(&config(""));
    let (router, _) = router(&connector);
    let uri = format!(
        "/?msg_signature={}&timestamp={}&nonce={}&echostr={}",
        s(q, "msg_signature"),
        s(q, "timestamp"),
        s(q, "nonce"),
        s(q, "echostr")
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D")
    );
    let (status, _, _) = call(&router, get(&uri)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[test]
fn deterministic_encryptions() {
    let vectors = vectors();
    let cases = vectors["encrypt_deterministic"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for v in cases {
        let id = &v["id"];
        let key = AesKey::from_encoding_aes_key(s(v, "encoding_aes_key")).unwrap();
        let random = random16(s(v, "random_prefix_ascii").as_bytes());
        let plaintext = s(v, "plaintext");
        let encrypt = key.encrypt(&random, plaintext, s(v, "appid"));
        assert_eq!(encrypt, s(v, "expected_encrypt"), "{id}");

        if let Some(len) = v["plaintext_utf8_len"].as_u64() {
            assert_eq!(plaintext.len() as u64, len, "{id}");
        }
        if let Some(pad) = v["pkcs7_pad_value"].as_u64() {
            let total = 20 + plaintext.len() + s(v, "appid").len();
            assert_eq!((32 - total % 32) as u64, pad, "{id}");
            let ciphertext = base64::engine::general_purpose::STANDARD
                .decode(&encrypt)
                .unwrap();
            assert_eq!(ciphertext.len(), total + pad as usize, "{id}");
        }
        if let Some(expected) = v["expected_msg_signature"].as_str() {
            assert_eq!(
                signature(&[s(v, "token"), s(v, "timestamp"), s(v, "nonce"), &encrypt]),
                expected,
                "{id}"
            );
        }
        for (name, envelope) in v.as_object().unwrap() {
            if name.starts_with("derived_envelope_for_") {
                assert_eq!(
                    signature(&[
                        s(v, "token"),
                        s(envelope, "TimeStamp"),
                        s(envelope, "Nonce"),
                        &encrypt
                    ]),
                    s(envelope, "MsgSignature"),
                    "{id}"
                );
            }
        }
        if let Some(envelope) = v["expected_envelope_xml_wechatpy_format"].as_str() {
            let crypt = MessageCrypt::new(s(v, "token"), vec![key.clone()], s(v, "appid"), true);
            let sealed = crypt
                .seal_with_random(
                    0,
                    &random,
                    plaintext,
                    s(v, "appid"),
                    s(v, "timestamp"),
                    s(v, "nonce"),
                )
                .unwrap();
            assert_eq!(sealed, envelope, "{id}");
        }

        // And back.
        let decrypted = key.decrypt(&encrypt).unwrap();
        assert_eq!(decrypted.message, plaintext, "{id}");
        assert_eq!(decrypted.receive_id, s(v, "appid"), "{id}");
        assert_eq!(decrypted.random, random, "{id}");
    }
}

#[tokio::test]
async fn safe_mode_post_fixture_is_accepted() {
    let vectors = vectors();
    let v = &vectors["safe_mode_post_fixture"];
    let q = &v["query"];
    assert!(verify_signature(
        &[s(v, "token"), s(q, "timestamp"), s(q, "nonce")],
        s(q, "signature")
    ));
    let opened = crypt(v, true)
        .open(
            s(q, "timestamp"),
            s(q, "nonce"),
            xml::parse(s(v, "body").as_bytes(), 1 << 16)
                .unwrap()
                .text_of("Encrypt")
                .unwrap(),
            s(q, "msg_signature"),
        )
        .unwrap();
    assert_eq!(opened.frame.message, s(v, "expected_plaintext"));

    let connector = connector(&config(""));
    let (router, sink) = router(&connector);
    let query: Vec<String> = q
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect();
    let uri = format!("/?{}", query.join("&"));
    let (status, _, body) = call(&router, post(&uri, s(v, "body"))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "success"));

    let accepted = sink.accepted();
    assert_eq!(accepted.len(), 1);
    let message = &accepted[0].1;
    let expected = &v["expected_parse"];
    assert_eq!(message.channel_user_id, s(q, "openid"));
    assert_eq!(message.dedupe_key, s(expected, "dedupe_key_suggestion"));
    match &message.content {
        Content::Event { name, key, data } => {
            assert_eq!(name, &s(expected, "Event").to_ascii_lowercase());
            assert_eq!(key.as_deref(), Some(s(expected, "scene")));
            assert_eq!(data["event_key"], s(expected, "EventKey"));
            assert_eq!(data["ticket"], "gQH47joAAAAAAAAAASxodHRwOi8v");
        }
        other => panic!("expected an event, got {other:?}"),
    }
}

#[tokio::test]
async fn plaintext_samples_normalize_and_route() {
    let vectors = vectors();
    let samples = vectors["plaintext_xml_samples"].as_object().unwrap();
    let connector = connector(&config(""));
    let (router, sink) = router(&connector);
    let now = time::OffsetDateTime::now_utc().unix_timestamp().to_string();
    // (sample, content type tag when accepted, or the report kind)
    let expected: &[(&str, &str)] = &[
        ("text", "text"),
        ("image", "image"),
        ("voice", "voice"),
        ("video", "video"),
        ("location", "location"),
        ("link", "link"),
        ("event_subscribe_plain", "event"),
        ("event_subscribe_qrscene", "event"),
        ("event_scan", "event"),
        ("event_location", "report:wechat.location_reported"),
        ("event_click", "event"),
        ("event_view", "event"),
        ("event_templatesendjobfinish", "report:wechat.job_finished"),
        ("event_kf_create_session", "event"),
        ("event_kf_switch_session", "event"),
    ];
    let names: Vec<&String> = samples.keys().filter(|k| *k != "source").collect();
    assert_eq!(names.len(), expected.len(), "a sample is not covered");
    for (name, want) in expected {
        let body = samples[*name].as_str().unwrap();
        let before_accepted = sink.accepted().len();
        let before_reported = sink.reported().len();
        let (status, _, answer) = call(&router, post(&common::plain_query(&now, name), body)).await;
        assert_eq!(
            (status, answer.as_str()),
            (StatusCode::OK, "success"),
            "{name}"
        );
        match want.strip_prefix("report:") {
            Some(kind) => {
                assert_eq!(sink.accepted().len(), before_accepted, "{name}");
                let reported = sink.reported();
                assert_eq!(reported.len(), before_reported + 1, "{name}");
                assert_eq!(reported.last().unwrap().1.kind, kind, "{name}");
            }
            None => {
                let accepted = sink.accepted();
                assert_eq!(accepted.len(), before_accepted + 1, "{name}");
                assert_eq!(accepted.last().unwrap().1.content.kind(), *want, "{name}");
            }
        }
    }
}
