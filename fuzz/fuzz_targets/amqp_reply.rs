//! What a helpdesk publishes to `switchboard.outbound`: a reply or a command, parsed as the
//! dispatcher does, then a reply's content rendered as a WeChat customer-service message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_sdk::{Command, ConversationId, Reply};

fuzz_target!(|data: &[u8]| {
    if Command::is_command(data) {
        if let Ok(command) = Command::from_slice(data) {
            let _ = ConversationId::parse(&command.conversation_id);
            let _ = command.action.name();
        }
        return;
    }
    let Ok(reply) = Reply::from_slice(data) else {
        return;
    };
    if let Ok(conversation) = ConversationId::parse(&reply.conversation_id) {
        let _ = conversation.to_string();
    }
    let _ = switchboard_connector_wechat::outbound::custom_message("openid", &reply.content, None);
});
