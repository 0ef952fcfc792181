//! The JSON Schemas of the AMQP payloads, committed under `docs/schema/` for helpdesk
//! integrators: they must match what `switchboard schema X` prints, and realistic payloads
//! must validate against them (and broken ones must not).

use std::fs;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

const PAYLOADS: [&str; 4] = ["envelope", "reply", "event", "command"];

/// The content types of CONTRACT §5.
const CONTENT_TYPES: [&str; 9] = [
    "text", "image", "voice", "video", "file", "location", "link", "event", "call",
];

fn printed_schema(payload: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["schema", payload])
        .output()
        .expect("the switchboard binary runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "switchboard schema {payload} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("the schema is UTF-8")
}

fn committed_schema(payload: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/schema")
        .join(format!("{payload}.json"));
    fs::read_to_string(&path).unwrap_or_else(|err| {
        panic!(
            "cannot read {}: {err}\nregenerate with: cargo run -q -- schema {payload} > docs/schema/{payload}.json",
            path.display()
        )
    })
}

fn schema_value(payload: &str) -> Value {
    serde_json::from_str(&committed_schema(payload))
        .unwrap_or_else(|err| panic!("docs/schema/{payload}.json is not JSON: {err}"))
}

#[test]
fn committed_schemas_match_the_binary() {
    let mut stale = Vec::new();
    for payload in PAYLOADS {
        let printed = printed_schema(payload);
        let committed = committed_schema(payload);
        if printed != committed {
            let first_difference = printed
                .lines()
                .zip(committed.lines())
                .position(|(a, b)| a != b)
                .unwrap_or_else(|| printed.lines().count().min(committed.lines().count()));
            stale.push(format!(
                "docs/schema/{payload}.json differs from `switchboard schema {payload}` from line {}; \
                 regenerate with: cargo run -q -- schema {payload} > docs/schema/{payload}.json",
                first_difference + 1
            ));
        }
    }
    assert!(stale.is_empty(), "{}", stale.join("\n"));
}

/// Every error of `instance` against the committed schema of `payload`.
fn errors(payload: &str, instance: &Value) -> Vec<String> {
    let schema = schema_value(payload);
    let validator = jsonschema::validator_for(&schema)
        .unwrap_or_else(|err| panic!("docs/schema/{payload}.json is not a valid schema: {err}"));
    validator
        .iter_errors(instance)
        .map(|err| format!("{} at {}", err, err.instance_path()))
        .collect()
}

fn assert_valid(payload: &str, instance: &Value) {
    let errors = errors(payload, instance);
    assert!(
        errors.is_empty(),
        "{payload} should validate:\n{}\n{instance:#}",
        errors.join("\n")
    );
}

fn assert_invalid(payload: &str, instance: &Value, why: &str) {
    assert!(
        !errors(payload, instance).is_empty(),
        "{payload} should not validate ({why}):\n{instance:#}"
    );
}

/// A WeChat customer asking about a damaged parcel, as it reaches the claims queue.
fn envelope() -> Value {
    json!({
        "schema": "switchboard.envelope.v1",
        "id": "01JDQ6Z7W3K8R2V5N9T4B6C1XA",
        "conversation_id": "wechat:wx-main:oAbC123dEf456",
        "sequence": 3,
        "channel": { "kind": "wechat", "connector_id": "wx-main" },
        "sender": {
            "channel_user_id": "oAbC123dEf456",
            "customer_id": "crm-88231",
            "tier": "vip",
            "display_name": "李雷",
            "phone": "+8613800138000"
        },
        "received_at": "2026-11-23T02:51:07.431Z",
        "content": { "type": "text", "text": "我的包裹破损了 SF1234567890123" },
        "intent": { "name": "damaged_parcel", "confidence": 0.92 },
        "entities": [
            { "kind": "tracking_number", "value": "SF1234567890123", "carrier": "sf-express" }
        ],
        "flags": ["tier_from_crm"],
        "route": {
            "skill": "claims",
            "tier": "vip",
            "queue_key": "claims.vip",
            "priority": 6,
            "rule": "damaged-or-lost",
            "reason": "keyword \"破损\""
        },
        "dedupe_key": "wechat:wx-main:msgid:24602371958392791",
        "raw": { "MsgType": "text", "MsgId": "24602371958392791" }
    })
}

/// An agent's answer to that envelope.
fn reply() -> Value {
    json!({
        "schema": "switchboard.reply.v1",
        "id": "zendesk-7781-comment-3",
        "conversation_id": "wechat:wx-main:oAbC123dEf456",
        "in_reply_to": "01JDQ6Z7W3K8R2V5N9T4B6C1XA",
        "agent": { "id": "agent-17", "name": "Han Meimei" },
        "content": {
            "type": "file",
            "url": "https://helpdesk.example.com/files/claim-form.pdf",
            "name": "claim-form.pdf",
            "mime": "application/pdf",
            "size": 48213
        }
    })
}

/// The daemon's report that the reply could not be delivered.
fn event() -> Value {
    json!({
        "schema": "switchboard.event.v1",
        "id": "01JDQ70A2M5X8H3Q7P1R9S4D2F",
        "kind": "delivery.failed",
        "occurred_at": "2026-11-23T02:53:40Z",
        "conversation_id": "wechat:wx-main:oAbC123dEf456",
        "reply_id": "zendesk-7781-comment-3",
        "reason": "permanent",
        "retryable": false,
        "code": "45015",
        "text": "response out of time limit or subscription is canceled",
        "data": { "attempts": 1 }
    })
}

/// A helpdesk moving the conversation to the claims team.
fn command() -> Value {
    json!({
        "schema": "switchboard.command.v1",
        "id": "zendesk-7781-transfer-1",
        "conversation_id": "wechat:wx-main:oAbC123dEf456",
        "command": "transfer",
        "skill": "claims",
        "priority": 7,
        "agent": { "id": "agent-17", "name": "Han Meimei" },
        "note": "customer sent photos of the damage"
    })
}

#[test]
fn realistic_payloads_validate_against_their_schemas() {
    assert_valid("envelope", &envelope());
    assert_valid("reply", &reply());
    assert_valid("event", &event());
    assert_valid("command", &command());
    assert_valid(
        "command",
        &json!({
            "schema": "switchboard.command.v1",
            "id": "c-2",
            "conversation_id": "app:shop:u-1",
            "command": "close"
        }),
    );
}

#[test]
fn realistic_payloads_are_what_the_sdk_reads() {
    // The schemas are derived from the SDK's types: the same documents must deserialize, or
    // the examples above (and the schemas) describe something the daemon would refuse.
    serde_json::from_value::<switchboard_sdk::Envelope>(envelope()).expect("envelope");
    serde_json::from_value::<switchboard_sdk::Reply>(reply()).expect("reply");
    serde_json::from_value::<switchboard_sdk::Event>(event()).expect("event");
    let command: switchboard_sdk::Command = serde_json::from_value(command()).expect("command");
    assert_eq!(command.action.name(), "transfer");
}

#[test]
fn every_content_type_validates_in_an_envelope() {
    let contents = [
        json!({ "type": "text", "text": "where is my parcel?", "extra": { "menu_id": "m1" } }),
        json!({ "type": "image", "url": "https://cdn.example.com/p.jpg", "media_id": "m-1" }),
        json!({ "type": "voice", "media_id": "m-2", "format": "amr", "recognition": "人工" }),
        json!({ "type": "video", "media_id": "m-3", "title": "unboxing" }),
        json!({ "type": "file", "url": "https://cdn.example.com/r.pdf" }),
        json!({ "type": "location", "latitude": 31.2304, "longitude": 121.4737, "label": "上海" }),
        json!({ "type": "link", "url": "https://shop.example.com/o/1", "title": "Order 1" }),
        json!({ "type": "event", "name": "subscribe", "key": "qrscene_42" }),
        json!({ "type": "call", "event": "ringing", "caller": "+14155550100" }),
    ];
    let covered: Vec<&str> = contents
        .iter()
        .filter_map(|content| content["type"].as_str())
        .collect();
    assert_eq!(covered, CONTENT_TYPES);
    for content in contents {
        let mut envelope = envelope();
        envelope["content"] = content;
        assert_valid("envelope", &envelope);
    }
}

#[test]
fn broken_payloads_do_not_validate() {
    for key in [
        "schema",
        "id",
        "conversation_id",
        "sequence",
        "channel",
        "sender",
        "received_at",
        "content",
        "route",
        "dedupe_key",
    ] {
        let mut broken = envelope();
        broken
            .as_object_mut()
            .expect("object")
            .remove(key)
            .expect("present");
        assert_invalid("envelope", &broken, &format!("no {key}"));
    }

    let mut broken = envelope();
    broken["content"] = json!({ "type": "sticker", "id": "s-1" });
    assert_invalid("envelope", &broken, "unknown content type");

    let mut broken = envelope();
    broken["content"] = json!({ "type": "location", "latitude": "31.2" , "longitude": 121.4 });
    assert_invalid("envelope", &broken, "latitude as a string");

    let mut broken = envelope();
    broken["sequence"] = json!(-1);
    assert_invalid("envelope", &broken, "negative sequence");

    let mut broken = envelope();
    broken["route"]
        .as_object_mut()
        .expect("object")
        .remove("queue_key");
    assert_invalid("envelope", &broken, "route without queue_key");

    let mut broken = reply();
    broken["content"] = json!({ "type": "file", "name": "claim-form.pdf" });
    assert_invalid("reply", &broken, "file without url");

    let mut broken = reply();
    broken
        .as_object_mut()
        .expect("object")
        .remove("conversation_id");
    assert_invalid("reply", &broken, "no conversation_id");

    let mut broken = event();
    broken["retryable"] = json!("no");
    assert_invalid("event", &broken, "retryable as a string");

    let mut broken = event();
    broken.as_object_mut().expect("object").remove("kind");
    assert_invalid("event", &broken, "no kind");

    let mut broken = command();
    broken["command"] = json!("explode");
    assert_invalid("command", &broken, "unknown command");

    let mut broken = command();
    broken.as_object_mut().expect("object").remove("skill");
    assert_invalid("command", &broken, "transfer without skill");

    for priority in [-1, 12] {
        let mut broken = command();
        broken["priority"] = json!(priority);
        assert_invalid("command", &broken, "priority outside 0-9");
    }
}

/// The `type` constants of the `content` union in a schema's `$defs.Content.oneOf`.
fn content_types(schema: &Value) -> Vec<String> {
    schema["$defs"]["Content"]["oneOf"]
        .as_array()
        .expect("Content is a oneOf")
        .iter()
        .filter_map(|variant| variant["properties"]["type"]["const"].as_str())
        .map(str::to_owned)
        .collect()
}

#[test]
fn envelope_and_reply_share_the_contract_content_union() {
    // Structural facts of CONTRACT §5, checked on the committed files so a reader of
    // docs/schema sees the contract.
    let envelope = schema_value("envelope");
    let required: Vec<&str> = envelope["required"]
        .as_array()
        .expect("required list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for key in [
        "schema",
        "id",
        "conversation_id",
        "sequence",
        "channel",
        "sender",
        "received_at",
        "content",
        "route",
        "dedupe_key",
    ] {
        assert!(
            required.contains(&key),
            "envelope does not require {key}: {required:?}"
        );
    }
    assert_eq!(content_types(&envelope), CONTENT_TYPES);
    assert_eq!(content_types(&schema_value("reply")), CONTENT_TYPES);
}
