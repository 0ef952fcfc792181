//! Property tests: any message seals and opens back; arbitrary input never panics the
//! decryptor, the XML reader, the normalizer or the router.

mod common;

use axum::http::StatusCode;
use proptest::prelude::*;
use switchboard_connector_wechat::crypto::{AesKey, MessageCrypt, signature};
use switchboard_connector_wechat::{message, xml};

use common::{AES_KEY, APP_ID, TOKEN};

fn crypt() -> MessageCrypt {
    MessageCrypt::new(
        TOKEN,
        vec![AesKey::from_encoding_aes_key(AES_KEY).unwrap()],
        APP_ID,
        true,
    )
}

proptest! {
    #[test]
    fn any_message_encrypts_and_decrypts_back(
        message in any::<String>(),
        random in any::<[u8; 16]>(),
        key in "[A-Za-z0-9]{43}",
        app_id in "[a-z0-9]{0,40}",
    ) {
        let key = AesKey::from_encoding_aes_key(&key).unwrap();
        let encrypt = key.encrypt(&random, &message, &app_id);
        let frame = key.decrypt(&encrypt).unwrap();
        prop_assert_eq!(frame.message, message);
        prop_assert_eq!(frame.receive_id, app_id);
        prop_assert_eq!(frame.random, random);
    }

    #[test]
    fn sealed_replies_open_with_their_signature(message in any::<String>(), ts in "[0-9]{1,10}", nonce in "[0-9]{1,10}") {
        let crypt = crypt();
        let sealed = crypt.seal(0, &message, APP_ID, &ts, &nonce).unwrap();
        let envelope = xml::parse(sealed.as_bytes(), 1 << 20).unwrap();
        let opened = crypt.open(
            envelope.text_of("TimeStamp").unwrap(),
            envelope.text_of("Nonce").unwrap(),
            envelope.text_of("Encrypt").unwrap(),
            envelope.text_of("MsgSignature").unwrap(),
        ).unwrap();
        prop_assert_eq!(opened.frame.message, message);
    }

    #[test]
    fn random_encrypt_values_never_panic(encrypt in any::<String>(), bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let crypt = crypt();
        // Correctly signed, so the decryption path itself is exercised.
        let sig = signature(&[TOKEN, "1", "2", &encrypt]);
        let _ = crypt.open("1", "2", &encrypt, &sig);
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let sig = signature(&[TOKEN, "1", "2", &b64]);
        prop_assert!(crypt.open("1", "2", &b64, &sig).is_err() || bytes.len() % 32 == 0);
    }

    #[test]
    fn random_bytes_as_xml_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        if let Ok(root) = xml::parse(&bytes, 1 << 16) {
            let _ = message::normalize(&root);
            let _ = root.to_json();
        }
    }

    #[test]
    fn random_xml_shapes_never_panic(
        names in proptest::collection::vec(prop_oneof![
            Just("ToUserName"), Just("FromUserName"), Just("CreateTime"), Just("MsgType"),
            Just("Event"), Just("EventKey"), Just("Content"), Just("MediaId"), Just("Location_X"),
            Just("Location_Y"), Just("MsgId"), Just("MsgID"), Just("Url"), Just("item"), Just("X"),
        ], 0..12),
        values in proptest::collection::vec(prop_oneof![
            Just("text".to_owned()), Just("event".to_owned()), Just("image".to_owned()),
            Just("location".to_owned()), Just("link".to_owned()), Just("voice".to_owned()),
            Just("LOCATION".to_owned()), Just("subscribe".to_owned()), Just("qrscene_1".to_owned()),
            "[ -~]{0,12}", "-?[0-9]{1,25}(\\.[0-9]{1,5})?",
        ], 12),
        nest in any::<bool>(),
    ) {
        let mut body = String::from("<xml>");
        for (i, name) in names.iter().enumerate() {
            let value = switchboard_connector_wechat::passive::cdata(&values[i]);
            if nest && i % 3 == 0 {
                body.push_str(&format!("<{name}><item>{value}</item></{name}>"));
            } else {
                body.push_str(&format!("<{name}>{value}</{name}>"));
            }
        }
        body.push_str("</xml>");
        let root = xml::parse(body.as_bytes(), 1 << 16).unwrap();
        let _ = message::normalize(&root);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_pushes_never_panic_the_router(body in any::<String>(), encrypt in "[A-Za-z0-9+/=]{0,200}", safe in any::<bool>()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let connector = common::connector(&common::config(""));
            let (router, sink) = common::router(&connector);
            let now = common::now();
            let (uri, body) = if safe {
                let sig = signature(&[TOKEN, &now, "1"]);
                let msg_sig = signature(&[TOKEN, &now, "1", &encrypt]);
                (
                    format!("/?signature={sig}&timestamp={now}&nonce=1&encrypt_type=aes&msg_signature={}", msg_sig),
                    format!("<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"),
                )
            } else {
                (common::plain_query(&now, "1"), body)
            };
            let (status, _, _) = common::call(&router, common::post(&uri, body)).await;
            prop_assert!(status == StatusCode::OK || status.is_client_error(), "{status}");
            if status != StatusCode::OK {
                prop_assert!(sink.accepted().is_empty());
            }
            Ok(())
        })?;
    }
}
