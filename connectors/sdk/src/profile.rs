//! Provider profiles. A channel reached through a telecom provider (SMS, telephony) speaks
//! either Twilio's webhooks or the documented generic signed-JSON protocol; its table picks
//! one with `provider = "twilio" | "generic"` and carries the matching `twilio` or `generic`
//! sub-table. The sub-tables themselves stay the connector's own typed structs (their keys
//! differ per channel); what is shared is the choice and how a wrong choice is reported.

use serde::Deserialize;

use crate::config::ConfigProblem;

/// The `provider` key: which protocol the provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Twilio: form-encoded webhooks signed with `X-Twilio-Signature`
    /// ([`crate::signature::twilio`]).
    Twilio,
    /// Any gateway that speaks the documented signed JSON
    /// ([`crate::signature::hmac_webhook`]).
    Generic,
}

/// The sub-table a `provider` key chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile<T, G> {
    /// The `twilio` sub-table.
    Twilio(T),
    /// The `generic` sub-table.
    Generic(G),
}

impl ProviderKind {
    /// The sub-table for this provider. The other one, if given, is a problem at its key; a
    /// missing one is a problem at its own key, naming `table` (`connectors.sms`) so the
    /// message shows the header to add.
    pub fn pick<T, G>(
        self,
        table: &str,
        twilio: Option<T>,
        generic: Option<G>,
        problems: &mut Vec<ConfigProblem>,
    ) -> Option<Profile<T, G>> {
        let (chosen, other, other_given, picked) = match self {
            ProviderKind::Twilio => (
                "twilio",
                "generic",
                generic.is_some(),
                twilio.map(Profile::Twilio),
            ),
            ProviderKind::Generic => (
                "generic",
                "twilio",
                twilio.is_some(),
                generic.map(Profile::Generic),
            ),
        };
        if other_given {
            problems.push(ConfigProblem::new(
                other,
                format!("only allowed with provider = \"{other}\""),
            ));
        }
        if picked.is_none() {
            problems.push(ConfigProblem::new(
                chosen,
                format!("missing [{table}.{chosen}] table for provider = \"{chosen}\""),
            ));
        }
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Picked = Option<Profile<&'static str, &'static str>>;

    fn pick(
        kind: ProviderKind,
        twilio: Option<&'static str>,
        generic: Option<&'static str>,
    ) -> (Picked, Vec<(String, String)>) {
        let mut problems = Vec::new();
        let picked = kind.pick("connectors.sms", twilio, generic, &mut problems);
        let problems = problems.into_iter().map(|p| (p.key, p.message)).collect();
        (picked, problems)
    }

    #[test]
    fn the_matching_table_is_picked_and_the_other_refused() {
        use ProviderKind::{Generic, Twilio};
        let own = |key: &str, message: &str| (key.to_owned(), message.to_owned());
        let cases = [
            (Twilio, Some("t"), None, Some(Profile::Twilio("t")), vec![]),
            (
                Generic,
                None,
                Some("g"),
                Some(Profile::Generic("g")),
                vec![],
            ),
            (
                Twilio,
                Some("t"),
                Some("g"),
                Some(Profile::Twilio("t")),
                vec![own("generic", r#"only allowed with provider = "generic""#)],
            ),
            (
                Generic,
                Some("t"),
                None,
                None,
                vec![
                    own("twilio", r#"only allowed with provider = "twilio""#),
                    own(
                        "generic",
                        r#"missing [connectors.sms.generic] table for provider = "generic""#,
                    ),
                ],
            ),
            (
                Twilio,
                None,
                None,
                None,
                vec![own(
                    "twilio",
                    r#"missing [connectors.sms.twilio] table for provider = "twilio""#,
                )],
            ),
        ];
        for (kind, twilio, generic, want, problems) in cases {
            assert_eq!(pick(kind, twilio, generic), (want, problems), "{kind:?}");
        }
    }
}
