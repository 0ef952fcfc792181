//! The explicit list of compiled-in connectors: one line per channel, behind its cargo
//! feature. The macro turns the list into the typed `[connectors]` section (so serde reports
//! unknown kinds and bad keys with their line) and into the code that builds them.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;
use switchboard_sdk::{BuildError, Connector, ConnectorContext, ConnectorFactory};

/// `(key path, message)` pairs.
pub type Problems = Vec<(String, String)>;

macro_rules! connector_registry {
    ($( $(#[$cfg:meta])* $kind:ident => $factory:ty ),* $(,)?) => {
        /// `[connectors]`: one array of tables per compiled-in channel kind.
        #[derive(Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ConnectorsConfig {
            $(
                $(#[$cfg])*
                #[doc = concat!("`[[connectors.", stringify!($kind), "]]` tables.")]
                #[serde(default)]
                pub $kind: Vec<<$factory as ConnectorFactory>::Config>,
            )*
        }

        /// The channel kinds compiled into this binary.
        // Pushed one by one because each entry may be compiled out by its feature.
        #[allow(unused_mut, clippy::vec_init_then_push)]
        pub fn kinds() -> Vec<&'static str> {
            let mut kinds = Vec::new();
            $( $(#[$cfg])* kinds.push(<$factory as ConnectorFactory>::KIND); )*
            kinds
        }

        impl ConnectorsConfig {
            /// Builds every configured connector with `context`, or returns every problem.
            pub fn build(&self, context: &ConnectorContext) -> Result<Vec<Arc<dyn Connector>>, Problems> {
                #[allow(unused_mut)]
                let mut problems = Problems::new();
                #[allow(unused_mut)]
                let mut built: Vec<Arc<dyn Connector>> = Vec::new();
                $(
                    $(#[$cfg])*
                    build_kind::<$factory>(&self.$kind, context, &mut built, &mut problems);
                )*
                if problems.is_empty() { Ok(built) } else { Err(problems) }
            }
        }
    };
}

connector_registry! {
    #[cfg(feature = "app")] app => switchboard_connector_app::AppConnectorFactory,
    #[cfg(feature = "wechat")] wechat => switchboard_connector_wechat::WechatFactory,
    #[cfg(feature = "sms")] sms => switchboard_connector_sms::SmsFactory,
    #[cfg(feature = "telephony")] telephony => switchboard_connector_telephony::TelephonyFactory,
    #[cfg(feature = "webchat")] webchat => switchboard_connector_webchat::WebchatFactory,
}

/// Channel kinds compiled in, as a static list for validation messages.
pub static KINDS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(kinds);

impl ConnectorsConfig {
    /// Every problem in the connector tables (ids, and each factory's own checks), found by
    /// building them with in-memory services exactly as the daemon would.
    pub fn problems(&self) -> Problems {
        self.build(&ConnectorContext::in_memory())
            .err()
            .unwrap_or_default()
    }
}

#[allow(dead_code)]
fn build_kind<F: ConnectorFactory>(
    configs: &[F::Config],
    context: &ConnectorContext,
    built: &mut Vec<Arc<dyn Connector>>,
    problems: &mut Problems,
) {
    let mut ids = HashSet::new();
    for (index, config) in configs.iter().enumerate() {
        let at = |key: &str| {
            if key.is_empty() {
                format!("connectors.{}[{index}]", F::KIND)
            } else {
                format!("connectors.{}[{index}].{key}", F::KIND)
            }
        };
        let id = F::id(config);
        if !is_connector_id(id) {
            problems.push((
                at("id"),
                format!("connector id {id:?} must be 1 to 32 lowercase letters, digits or '-'"),
            ));
        } else if !ids.insert(id.to_owned()) {
            problems.push((
                at("id"),
                format!("duplicate id {id:?} among [[connectors.{}]]", F::KIND),
            ));
        }
        match F::build(config, context) {
            Ok(connector) => built.push(connector),
            Err(BuildError(found)) => {
                for problem in found {
                    // The id is checked above, once, for every kind alike.
                    if problem.key != "id" {
                        problems.push((at(&problem.key), problem.message));
                    }
                }
            }
        }
    }
}

/// The id rule of CONTRACT §2: it appears in HTTP paths and conversation ids.
pub fn is_connector_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}
