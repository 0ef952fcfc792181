//! Reading a config file: parse, deserialize, validate, and report every problem as
//! `FILE:LINE:COL: message`.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Config;
use super::locate::{line_col, locate};

/// One problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path the problem is about (empty for syntax errors).
    pub path: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// What is wrong.
    pub message: String,
}

/// Everything wrong with a config file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// The file as named by the user.
    pub file: String,
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: {}", self.file, p.line, p.col, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A config that parsed and validated.
pub struct LoadedConfig {
    /// The typed config.
    pub config: Config,
    /// Where it was read from.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, hex; exported as a metric so operators can tell which
    /// config a fleet runs.
    pub hash: String,
}

/// Reads and validates the config at `path`.
pub fn load(path: &Path) -> Result<LoadedConfig, ConfigError> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|err| ConfigError {
        file: file.clone(),
        problems: vec![Problem {
            path: String::new(),
            line: 1,
            col: 1,
            message: format!("cannot read config: {err}"),
        }],
    })?;
    let config = load_str(&file, &source)?;
    Ok(LoadedConfig {
        config,
        path: path.to_owned(),
        hash: hex::encode(Sha256::digest(source.as_bytes())),
    })
}

/// Parses and validates config text; `file` names it in problems.
pub fn load_str(file: &str, source: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(source).map_err(|err| {
        let (line, col) = err
            .span()
            .map_or((1, 1), |span| line_col(source, span.start));
        ConfigError {
            file: file.to_owned(),
            problems: vec![Problem {
                path: String::new(),
                line,
                col,
                message: err.message().trim().to_owned(),
            }],
        }
    })?;
    let mut problems: Vec<Problem> = super::validate::validate(&config)
        .into_iter()
        .map(|(path, message)| {
            let (line, col) =
                locate(source, &path).map_or((1, 1), |span| line_col(source, span.start));
            Problem {
                path,
                line,
                col,
                message,
            }
        })
        .collect();
    if problems.is_empty() {
        return Ok(config);
    }
    problems.sort_by_key(|p| (p.line, p.col));
    Err(ConfigError {
        file: file.to_owned(),
        problems,
    })
}
