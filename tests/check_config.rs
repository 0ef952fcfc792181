//! The `check-config` and `route` commands as an operator runs them: the real binary, real
//! files, exit codes and the `FILE:LINE:COL: message` lines on stderr.
//!
//! Every file in `tests/configs/invalid/` is a case: its leading `# expect: LINE:COL: text`
//! lines name the problems the binary must report (the position exactly, the message by
//! substring), one line per problem, in file order. Adding a file adds a case.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where the test runs the binary from, so the paths it prints are the relative paths given.
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Named by `secret-env-unset.toml`; removed from the child's environment so that case holds
/// whatever the machine has set.
const UNSET_VAR: &str = "SWITCHBOARD_TEST_UNSET_VAR_XYZ";

fn switchboard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .current_dir(ROOT)
        .env_remove(UNSET_VAR)
        .env_remove("SWITCHBOARD_CONFIG")
        .output()
        .expect("the switchboard binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One problem as the binary prints it, or as a case file expects it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Located {
    line: usize,
    col: usize,
    message: String,
}

impl std::fmt::Display for Located {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

/// Parses `LINE:COL: message`; `None` unless both numbers are positive and a message follows.
fn parse_located(rest: &str) -> Option<Located> {
    let (line, rest) = rest.split_once(':')?;
    let (col, message) = rest.split_once(':')?;
    let line: usize = line.parse().ok()?;
    let col: usize = col.parse().ok()?;
    let message = message.strip_prefix(' ')?;
    (line > 0 && col > 0 && !message.trim().is_empty()).then(|| Located {
        line,
        col,
        message: message.to_owned(),
    })
}

/// The `# expect:` lines of a case file's leading comment block.
fn expectations(source: &str) -> Result<Vec<Located>, String> {
    source
        .lines()
        .take_while(|line| line.starts_with('#'))
        .filter_map(|line| line.strip_prefix("# expect:"))
        .map(|rest| {
            parse_located(rest.trim_start())
                .ok_or_else(|| format!("malformed expectation `# expect:{rest}`"))
        })
        .collect()
}

/// The problems on stderr; every line must be `<file>:<line>:<col>: <message>`.
fn reported(file: &str, stderr: &str) -> Result<Vec<Located>, String> {
    stderr
        .lines()
        .map(|line| {
            line.strip_prefix(file)
                .and_then(|rest| rest.strip_prefix(':'))
                .and_then(parse_located)
                .ok_or_else(|| {
                    format!("stderr line not of the form {file}:LINE:COL: message: {line:?}")
                })
        })
        .collect()
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("cannot list {}: {err}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

/// What is wrong with one invalid case, if anything.
fn check_invalid_case(relative: &str) -> Result<(), String> {
    let source = fs::read_to_string(Path::new(ROOT).join(relative))
        .map_err(|err| format!("cannot read: {err}"))?;
    let expected = expectations(&source)?;
    if expected.is_empty() {
        return Err("no `# expect: LINE:COL: message` line at the top of the file".to_owned());
    }
    let out = switchboard(&["check-config", relative]);
    let stderr = text(&out.stderr);
    if out.status.code() != Some(2) {
        return Err(format!(
            "exit status {:?}, expected 2; stdout:\n{}stderr:\n{stderr}",
            out.status.code(),
            text(&out.stdout)
        ));
    }
    let problems = reported(relative, &stderr)?;
    let mut failures = Vec::new();
    if problems.len() != expected.len() {
        failures.push(format!(
            "{} problems reported, {} expected",
            problems.len(),
            expected.len()
        ));
    }
    if !problems
        .windows(2)
        .all(|pair| (pair[0].line, pair[0].col) <= (pair[1].line, pair[1].col))
    {
        failures.push("problems are not in file order".to_owned());
    }
    for want in &expected {
        let found = problems.iter().any(|got| {
            got.line == want.line && got.col == want.col && got.message.contains(&want.message)
        });
        if !found {
            failures.push(format!("expected {want}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\nstderr was:\n{stderr}", failures.join("\n")))
    }
}

#[test]
fn each_invalid_config_reports_exactly_its_expected_problems() {
    let files = toml_files(&Path::new(ROOT).join("tests/configs/invalid"));
    assert!(
        !files.is_empty(),
        "tests/configs/invalid holds no .toml case"
    );
    let failures: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let relative = path
                .strip_prefix(ROOT)
                .expect("case under the manifest dir")
                .to_string_lossy()
                .into_owned();
            check_invalid_case(&relative)
                .err()
                .map(|why| format!("--- {relative}\n{why}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} invalid configs failed:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn each_valid_config_passes() {
    let files = toml_files(&Path::new(ROOT).join("tests/configs/valid"));
    assert!(!files.is_empty(), "tests/configs/valid holds no .toml case");
    for path in files {
        let out = switchboard(&["check-config", &path.to_string_lossy()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{} should pass; stderr:\n{}",
            path.display(),
            text(&out.stderr)
        );
    }
}

/// `config.example.toml` parsed independently of the daemon, to name what the summary must
/// show without copying the example's contents into this test.
fn example() -> toml::Table {
    let source = fs::read_to_string(Path::new(ROOT).join("config.example.toml"))
        .expect("config.example.toml is readable");
    source.parse().expect("config.example.toml is TOML")
}

fn names_in<'a>(table: &'a toml::Table, array: &str, key: &str) -> Vec<&'a str> {
    table
        .get(array)
        .and_then(toml::Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.get(key).and_then(toml::Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_example_config_passes_with_a_summary_of_its_connectors_and_queues() {
    let out = switchboard(&["check-config", "config.example.toml"]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}stderr:\n{}",
        text(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "stderr should be empty:\n{}",
        text(&out.stderr)
    );
    assert!(
        stdout.starts_with("config.example.toml: ok"),
        "summary should start by naming the file:\n{stdout}"
    );

    let example = example();
    let queues = names_in(&example, "queues", "name");
    assert!(!queues.is_empty(), "the example declares no queue");
    for queue in &queues {
        assert!(
            stdout.contains(queue),
            "summary does not name queue {queue}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains(&format!("queues      {}", queues.len())),
        "summary does not count {} queues:\n{stdout}",
        queues.len()
    );

    let connectors = example
        .get("connectors")
        .and_then(toml::Value::as_table)
        .expect("the example configures connectors");
    let mut mounted = Vec::new();
    for (kind, tables) in connectors {
        let tables = tables.as_array().expect("[[connectors.KIND]] is an array");
        for table in tables {
            let id = table.get("id").and_then(toml::Value::as_str).expect("id");
            mounted.push(format!("/{kind}/{id}"));
        }
    }
    assert!(!mounted.is_empty(), "the example configures no connector");
    for path in &mounted {
        assert!(
            stdout.contains(path.as_str()),
            "summary does not name connector {path}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains(&format!("connectors  {}", mounted.len())),
        "summary does not count {} connectors:\n{stdout}",
        mounted.len()
    );
}

#[test]
fn a_config_that_does_not_exist_is_a_clear_error() {
    let missing = "tests/configs/no-such-config.toml";
    assert!(!Path::new(ROOT).join(missing).exists());
    let out = switchboard(&["check-config", missing]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(out.stdout.is_empty(), "stdout:\n{}", text(&out.stdout));
    let problems = reported(missing, &stderr).unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(problems.len(), 1, "stderr:\n{stderr}");
    assert!(
        problems[0].message.contains("cannot read config"),
        "stderr:\n{stderr}"
    );
}

/// The example's rule that sends messages to the claims skill.
fn claims_rule() -> String {
    let example = example();
    let rules = example
        .get("routing")
        .and_then(|routing| routing.get("rules"))
        .and_then(toml::Value::as_array)
        .expect("the example has [[routing.rules]]");
    let claims: Vec<&str> = rules
        .iter()
        .filter(|rule| rule.get("skill").and_then(toml::Value::as_str) == Some("claims"))
        .filter_map(|rule| rule.get("name").and_then(toml::Value::as_str))
        .collect();
    assert_eq!(claims.len(), 1, "the example should have one claims rule");
    claims[0].to_owned()
}

const DAMAGED: &str = "my parcel is damaged";

#[test]
fn route_explains_which_rule_and_queue_key_a_message_gets() {
    let out = switchboard(&[
        "route",
        "--config",
        "config.example.toml",
        "--channel",
        "app",
        DAMAGED,
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}stderr:\n{}",
        text(&out.stderr)
    );
    let decision = stdout
        .lines()
        .find(|line| line.starts_with("decision"))
        .unwrap_or_else(|| panic!("no decision line:\n{stdout}"));
    let rule = claims_rule();
    assert!(
        decision.contains(&format!("rule {rule} ")),
        "decision does not name rule {rule}: {decision}"
    );
    assert!(
        decision.contains("queue key claims.standard"),
        "decision does not name queue key claims.standard: {decision}"
    );
}

#[test]
fn route_json_carries_the_decision() {
    let out = switchboard(&[
        "route",
        "--config",
        "config.example.toml",
        "--channel",
        "app",
        "--json",
        DAMAGED,
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout:\n{stdout}stderr:\n{}",
        text(&out.stderr)
    );
    let value: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|err| panic!("route --json is not JSON ({err}):\n{stdout}"));
    assert_eq!(value["decision"]["queue_key"], "claims.standard", "{value}");
    assert_eq!(value["decision"]["rule"], claims_rule().as_str(), "{value}");
    assert_eq!(value["channel"], "app", "{value}");
    assert_eq!(value["text"], DAMAGED, "{value}");
}

#[test]
fn route_refuses_an_unknown_channel() {
    let out = switchboard(&[
        "route",
        "--config",
        "config.example.toml",
        "--channel",
        "fax",
        DAMAGED,
    ]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(out.stdout.is_empty(), "stdout:\n{}", text(&out.stdout));
    assert!(
        stderr.contains("unknown channel \"fax\""),
        "stderr:\n{stderr}"
    );
}

#[test]
fn the_problem_line_parser_refuses_what_is_not_a_problem_line() {
    // The folder test leans on these parsers; a parser that accepted anything would let every
    // case pass.
    assert_eq!(
        parse_located("3:10: string values must be quoted"),
        Some(Located {
            line: 3,
            col: 10,
            message: "string values must be quoted".to_owned()
        })
    );
    for bad in ["3:10:", "3:10 no colon", "0:1: zero line", "x:1: m", "3: m"] {
        assert_eq!(parse_located(bad), None, "{bad:?}");
    }
    assert!(reported("a.toml", "b.toml:1:1: m").is_err());
    assert!(reported("a.toml", "a.toml:1:1: m\nwarning: something").is_err());
    assert_eq!(
        expectations("# expect: 2:3: m\n# a note\n# expect: 4:5: n\n[broker]\n# expect: 9:9: x\n")
            .map(|e| e.len()),
        Ok(2)
    );
    assert!(expectations("# expect: two:3: m\n").is_err());
}
