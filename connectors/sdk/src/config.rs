//! Config building blocks every connector shares: secrets given inline, by environment
//! variable or by file; per-connector limits; problems reported with their key; the checks
//! of a connector id and of a base URL.

use std::fmt;
use std::path::{Path, PathBuf};

use reqwest::Url;
use serde::Deserialize;

/// A secret value. Its `Debug` and `Display` print a mask so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("****")
    }
}

/// A problem in a config table: `key` is the dotted path inside the connector's own table
/// (`signing_key`, `webhook.url`), the daemon turns it into `FILE:LINE:COL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path relative to the table being checked; empty for the table itself.
    pub key: String,
    /// What is wrong, lowercase, without a trailing period.
    pub message: String,
}

impl ConfigProblem {
    /// A problem at `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The same problem seen from the enclosing table: `auth_token` found while checking the
    /// `twilio` sub-table becomes `twilio.auth_token`.
    pub fn within(mut self, table: &str) -> Self {
        self.key = if self.key.is_empty() {
            table.to_owned()
        } else {
            format!("{table}.{}", self.key)
        };
        self
    }
}

/// Whether `id` can name a connector: not empty, only lowercase ASCII letters, digits and
/// `-` (it appears in URLs and conversation ids).
pub fn is_connector_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Checks a connector's `id` key with [`is_connector_id`].
pub fn check_id(id: &str) -> Option<ConfigProblem> {
    (!is_connector_id(id)).then(|| {
        ConfigProblem::new(
            "id",
            format!("{id:?} must be lowercase letters, digits and '-'"),
        )
    })
}

/// Checks an absolute http(s) URL without query or fragment (a base that routes are appended
/// to) and returns it without a trailing `/`.
pub fn check_base_url(key: &str, raw: &str) -> Result<String, ConfigProblem> {
    let parsed = Url::parse(raw.trim())
        .map_err(|err| ConfigProblem::new(key, format!("{raw:?} is not a url: {err}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(ConfigProblem::new(
            key,
            format!("{raw:?} must be an absolute http or https url"),
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(ConfigProblem::new(
            key,
            format!("{raw:?} must not have a query or fragment"),
        ));
    }
    Ok(raw.trim().trim_end_matches('/').to_owned())
}

/// The three ways to give a secret named `name`: `name`, `name_env`, `name_file`.
/// Connectors keep the three optional fields and resolve them through this.
#[derive(Debug, Clone, Copy)]
pub struct SecretRef<'a> {
    /// The key's base name, used in messages.
    pub name: &'a str,
    /// `name = "..."`.
    pub inline: Option<&'a Secret>,
    /// `name_env = "VAR"`.
    pub env: Option<&'a str>,
    /// `name_file = "/path"`.
    pub file: Option<&'a Path>,
}

impl<'a> SecretRef<'a> {
    /// Collects the three fields of one secret.
    pub fn new(
        name: &'a str,
        inline: &'a Option<Secret>,
        env: &'a Option<String>,
        file: &'a Option<PathBuf>,
    ) -> Self {
        Self {
            name,
            inline: inline.as_ref(),
            env: env.as_deref(),
            file: file.as_deref(),
        }
    }

    /// Resolves a secret that must be given exactly one way.
    pub fn required(&self) -> Result<Secret, ConfigProblem> {
        self.optional()?.ok_or_else(|| {
            ConfigProblem::new(
                self.name,
                format!("missing secret: set {0}, {0}_env or {0}_file", self.name),
            )
        })
    }

    /// Resolves a secret that may be absent; giving it two ways at once is an error.
    pub fn optional(&self) -> Result<Option<Secret>, ConfigProblem> {
        let given = [
            self.inline.is_some(),
            self.env.is_some(),
            self.file.is_some(),
        ]
        .iter()
        .filter(|g| **g)
        .count();
        if given > 1 {
            // Point at a key that is surely in the file: the later of the ways given.
            let key = if self.file.is_some() {
                format!("{}_file", self.name)
            } else {
                format!("{}_env", self.name)
            };
            return Err(ConfigProblem::new(
                key,
                format!("give {0} only one way: {0}, {0}_env or {0}_file", self.name),
            ));
        }
        if let Some(secret) = self.inline {
            return Ok(Some(secret.clone()));
        }
        if let Some(var) = self.env {
            let key = format!("{}_env", self.name);
            return match std::env::var(var) {
                Ok(value) if !value.is_empty() => Ok(Some(Secret(value))),
                Ok(_) => Err(ConfigProblem::new(
                    key,
                    format!("environment variable {var} is empty"),
                )),
                Err(_) => Err(ConfigProblem::new(
                    key,
                    format!("environment variable {var} is not set"),
                )),
            };
        }
        if let Some(path) = self.file {
            let key = format!("{}_file", self.name);
            return match std::fs::read_to_string(path) {
                // Files written by editors and secret managers usually end in a newline that
                // is not part of the secret.
                Ok(value) => {
                    let value = value.trim_end_matches(['\r', '\n']);
                    if value.is_empty() {
                        Err(ConfigProblem::new(
                            key,
                            format!("secret file {} is empty", path.display()),
                        ))
                    } else {
                        Ok(Some(Secret(value.to_owned())))
                    }
                }
                Err(err) => Err(ConfigProblem::new(
                    key,
                    format!("cannot read secret file {}: {err}", path.display()),
                )),
            };
        }
        Ok(None)
    }
}

/// Limits every connector has, in its `limits` sub-table (`[connectors.KIND.limits]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectorLimits {
    /// Largest accepted request body in bytes (413 above). Default 65536.
    pub max_body_bytes: usize,
    /// Webhook requests per second accepted by this connector, all users together (429
    /// above). Default 500.
    pub inbound_per_second: u32,
    /// Burst allowance on top of `inbound_per_second`. Default 1000.
    pub inbound_burst: u32,
    /// Messages per minute accepted from one user (429 above). Default 120.
    pub per_user_per_minute: u32,
    /// Replies per second sent through this connector (smoothed, never dropped). Default 50.
    pub outbound_per_second: u32,
    /// Burst allowance on top of `outbound_per_second`. Default 50.
    pub outbound_burst: u32,
}

impl Default for ConnectorLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            inbound_per_second: 500,
            inbound_burst: 1000,
            per_user_per_minute: 120,
            outbound_per_second: 50,
            outbound_burst: 50,
        }
    }
}

impl ConnectorLimits {
    /// Checks that every limit can be enforced (none is zero).
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let fields = [
            ("limits.max_body_bytes", self.max_body_bytes as u64),
            ("limits.inbound_per_second", self.inbound_per_second.into()),
            ("limits.inbound_burst", self.inbound_burst.into()),
            (
                "limits.per_user_per_minute",
                self.per_user_per_minute.into(),
            ),
            (
                "limits.outbound_per_second",
                self.outbound_per_second.into(),
            ),
            ("limits.outbound_burst", self.outbound_burst.into()),
        ];
        fields
            .into_iter()
            .filter(|(_, value)| *value == 0)
            .map(|(key, _)| ConfigProblem::new(key, "must be greater than 0"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_debug_is_masked() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "Secret(****) ****");
    }

    #[test]
    fn secret_resolves_each_way_and_refuses_two() {
        let inline = Some(Secret::new("a"));
        let none_s: Option<Secret> = None;
        let none_e: Option<String> = None;
        let none_f: Option<PathBuf> = None;
        let got = SecretRef::new("key", &inline, &none_e, &none_f)
            .required()
            .unwrap();
        assert_eq!(got.expose(), "a");

        let dir = std::env::temp_dir().join(format!("sb-secret-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").unwrap();
        let file = Some(dir.clone());
        let got = SecretRef::new("key", &none_s, &none_e, &file)
            .required()
            .unwrap();
        assert_eq!(got.expose(), "from-file");
        std::fs::remove_file(&dir).unwrap();

        let env = Some("SWITCHBOARD_TEST_SURELY_UNSET_VAR".to_owned());
        let err = SecretRef::new("key", &none_s, &env, &none_f)
            .required()
            .unwrap_err();
        assert_eq!(err.key, "key_env");
        assert!(err.message.contains("not set"), "{}", err.message);

        let err = SecretRef::new("key", &inline, &env, &none_f)
            .required()
            .unwrap_err();
        assert!(err.message.contains("only one way"), "{}", err.message);

        let err = SecretRef::new("key", &none_s, &none_e, &none_f)
            .required()
            .unwrap_err();
        assert!(err.message.contains("missing secret"), "{}", err.message);
    }

    #[test]
    fn ids_and_base_urls_are_checked() {
        assert!(check_id("cn-main-2").is_none());
        for bad in ["", "Main", "a_b", "a b", "ü"] {
            assert_eq!(check_id(bad).map(|p| p.key), Some("id".to_owned()), "{bad}");
        }
        assert_eq!(
            check_id("Main").map(|p| p.message),
            Some(r#""Main" must be lowercase letters, digits and '-'"#.to_owned())
        );
        assert_eq!(
            check_base_url("k", " https://sb.example.com/sms/main/ "),
            Ok("https://sb.example.com/sms/main".to_owned())
        );
        for bad in [
            "sb.example.com",
            "https://x/?a=1",
            "https://x/#f",
            "mailto:a@b",
            "http://",
        ] {
            let problem = check_base_url("public_url", bad).err();
            assert_eq!(
                problem.map(|p| p.key),
                Some("public_url".to_owned()),
                "{bad}"
            );
        }
    }

    #[test]
    fn problems_move_into_their_table() {
        let problem = ConfigProblem::new("auth_token", "missing").within("twilio");
        assert_eq!(problem.key, "twilio.auth_token");
        assert_eq!(ConfigProblem::new("", "x").within("twilio").key, "twilio");
    }

    #[test]
    fn zero_limits_are_reported_with_their_key() {
        let limits = ConnectorLimits {
            outbound_per_second: 0,
            ..ConnectorLimits::default()
        };
        let problems = limits.validate();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "limits.outbound_per_second");
    }
}
