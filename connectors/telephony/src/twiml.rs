//! Renders a call plan as TwiML (Twilio's voice markup: `<Response>` with `<Say>`,
//! `<Gather>`, `<Enqueue>`, `<Dial>`, `<Record>`, `<Redirect>`, `<Hangup>`), with
//! quick-xml's writer so every text and attribute is escaped.

use std::io;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

use crate::ivr::{Say, Verb};

/// Why TwiML could not be written (only an I/O failure of the in-memory buffer, which
/// does not happen in practice).
#[derive(Debug, thiserror::Error)]
#[error("cannot write twiml: {0}")]
pub struct TwimlError(#[from] io::Error);

/// The TwiML document for `plan`, spoken with `voice` when given.
pub fn render(plan: &[Verb], voice: Option<&str>) -> Result<String, TwimlError> {
    let mut writer = Writer::new(Vec::new());
    writer.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    writer.create_element("Response").write_inner_content(|w| {
        for verb in plan {
            write_verb(w, verb, voice)?;
        }
        Ok(())
    })?;
    String::from_utf8(writer.into_inner())
        .map_err(|err| TwimlError(io::Error::new(io::ErrorKind::InvalidData, err)))
}

fn write_say(w: &mut Writer<Vec<u8>>, say: &Say, voice: Option<&str>) -> io::Result<()> {
    let mut element = w
        .create_element("Say")
        .with_attribute(("language", say.language.as_str()));
    if let Some(voice) = voice {
        element = element.with_attribute(("voice", voice));
    }
    element.write_text_content(BytesText::new(&say.text))?;
    Ok(())
}

fn write_verb(w: &mut Writer<Vec<u8>>, verb: &Verb, voice: Option<&str>) -> io::Result<()> {
    match verb {
        Verb::Say(say) => write_say(w, say, voice),
        Verb::Gather {
            input,
            num_digits,
            finish_on_key,
            timeout_secs,
            action,
            action_on_empty_result,
            language,
            hints,
            prompts,
        } => {
            let num_digits = num_digits.map(|n| n.to_string());
            let timeout = timeout_secs.to_string();
            let hints = hints.join(",");
            let mut element = w
                .create_element("Gather")
                .with_attribute(("input", input.twiml()))
                .with_attribute(("action", action.as_str()))
                .with_attribute(("method", "POST"))
                .with_attribute(("timeout", timeout.as_str()));
            if let Some(n) = &num_digits {
                element = element.with_attribute(("numDigits", n.as_str()));
            }
            if let Some(key) = finish_on_key {
                element = element.with_attribute(("finishOnKey", key.as_str()));
            }
            if *action_on_empty_result {
                element = element.with_attribute(("actionOnEmptyResult", "true"));
            }
            if let Some(language) = language {
                element = element.with_attribute(("language", language.as_str()));
            }
            if !hints.is_empty() {
                element = element.with_attribute(("hints", hints.as_str()));
            }
            element.write_inner_content(|w| {
                for say in prompts {
                    write_say(w, say, voice)?;
                }
                Ok(())
            })?;
            Ok(())
        }
        Verb::Enqueue { name, action } => {
            w.create_element("Enqueue")
                .with_attribute(("action", action.as_str()))
                .with_attribute(("method", "POST"))
                .write_text_content(BytesText::new(name))?;
            Ok(())
        }
        Verb::DialQueue { name, action } => write_dial(w, action, "Queue", name),
        Verb::DialSip { uri, action } => write_dial(w, action, "Sip", uri),
        Verb::Record {
            action,
            transcribe_callback,
            max_length_secs,
        } => {
            let max = max_length_secs.to_string();
            w.create_element("Record")
                .with_attribute(("action", action.as_str()))
                .with_attribute(("method", "POST"))
                .with_attribute(("maxLength", max.as_str()))
                .with_attribute(("playBeep", "true"))
                .with_attribute(("transcribe", "true"))
                .with_attribute(("transcribeCallback", transcribe_callback.as_str()))
                .write_empty()?;
            Ok(())
        }
        Verb::Redirect { url } => {
            w.create_element("Redirect")
                .with_attribute(("method", "POST"))
                .write_text_content(BytesText::new(url))?;
            Ok(())
        }
        Verb::Hangup => {
            w.create_element("Hangup").write_empty()?;
            Ok(())
        }
    }
}

fn write_dial(w: &mut Writer<Vec<u8>>, action: &str, noun: &str, target: &str) -> io::Result<()> {
    w.create_element("Dial")
        .with_attribute(("action", action))
        .with_attribute(("method", "POST"))
        .write_inner_content(|w| {
            w.create_element(noun)
                .write_text_content(BytesText::new(target))?;
            Ok(())
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use quick_xml::Reader;

    use super::*;
    use crate::ivr::tests::ivr;

    /// Parses `xml` back into (depth, element name) pairs, failing on malformed XML.
    fn elements(xml: &str) -> Vec<(usize, String)> {
        let mut reader = Reader::from_str(xml);
        let mut depth = 0;
        let mut out = Vec::new();
        loop {
            match reader.read_event() {
                Ok(Event::Start(e)) => {
                    out.push((depth, e.name().as_ref().to_owned()));
                    depth += 1;
                }
                Ok(Event::Empty(e)) => {
                    out.push((depth, e.name().as_ref().to_owned()));
                }
                Ok(Event::End(_)) => depth -= 1,
                Ok(Event::Eof) => break,
                Ok(_) => {}
                Err(err) => panic!("malformed twiml: {err}\n{xml}"),
            }
        }
        out
    }

    #[test]
    fn the_menu_is_a_gather_with_localized_says() {
        let ivr = ivr();
        let xml =
            render(&ivr.incoming(crate::ivr::tests::OPEN, 1), Some("alice")).unwrap_or_default();
        assert!(
            xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response>"),
            "{xml}"
        );
        assert!(xml.contains(
            "<Gather input=\"dtmf speech\" action=\"https://sb.example.com/telephony/hotline/gather?step=menu&amp;attempt=1\" method=\"POST\" timeout=\"5\" numDigits=\"1\" language=\"zh-CN\" hints=\"tracking,claims,sales\">"
        ), "{xml}");
        assert!(
            xml.contains("<Say language=\"zh-CN\" voice=\"alice\">claims请按2</Say>"),
            "{xml}"
        );
        assert!(
            xml.contains("<Say language=\"en\" voice=\"alice\">For claims, press 2</Say>"),
            "{xml}"
        );
        let names = elements(&xml);
        assert_eq!(names[0], (0, "Response".to_owned()));
        assert_eq!(names[1], (1, "Gather".to_owned()));
        assert!(names[2..10].iter().all(|(d, n)| *d == 2 && n == "Say"));
        assert_eq!(names.last(), Some(&(1, "Redirect".to_owned())));
    }

    #[test]
    fn handoffs_render_as_enqueue_and_dial() {
        let ivr = ivr();
        let xml = render(&ivr.handoff(&ivr.menu[1]), None).unwrap_or_default();
        assert!(xml.contains(
            "<Enqueue action=\"https://sb.example.com/telephony/hotline/status?event=handoff&amp;skill=claims\" method=\"POST\">claims</Enqueue>"
        ), "{xml}");
        let xml = render(&ivr.handoff(&ivr.menu[2]), None).unwrap_or_default();
        assert!(
            xml.contains("<Sip>sip:sales@pbx.example.com</Sip></Dial>"),
            "{xml}"
        );
        let plan = [Verb::DialQueue {
            name: "vip".into(),
            action: "https://x/status".into(),
        }];
        let xml = render(&plan, None).unwrap_or_default();
        assert!(
            xml.contains(
                "<Dial action=\"https://x/status\" method=\"POST\"><Queue>vip</Queue></Dial>"
            ),
            "{xml}"
        );
    }

    #[test]
    fn voicemail_records_with_transcription() {
        let xml = render(&ivr().voicemail(), None).unwrap_or_default();
        assert!(xml.contains("<Record action=\"https://sb.example.com/telephony/hotline/status?event=voicemail\" method=\"POST\" maxLength=\"120\" playBeep=\"true\" transcribe=\"true\" transcribeCallback=\"https://sb.example.com/telephony/hotline/status?event=transcription\"/>"), "{xml}");
        assert!(xml.ends_with("<Hangup/></Response>"), "{xml}");
    }

    #[test]
    fn text_is_escaped() {
        let plan = [Verb::Say(Say {
            text: "Tom & Jerry <3 \"quotes\"".into(),
            language: "en\" injected=\"1".into(),
        })];
        let xml = render(&plan, None).unwrap_or_default();
        assert!(xml.contains("Tom &amp; Jerry &lt;3"), "{xml}");
        assert!(!xml.contains("injected=\"1\""), "{xml}");
        assert_eq!(elements(&xml).len(), 2);
    }
}
