//! The console's API from a test: authenticated requests and a Server-Sent Events reader.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::Value;

/// A Server-Sent Events stream being read.
pub struct Sse {
    response: reqwest::Response,
    pending: Vec<u8>,
}

impl Sse {
    /// Opens `url` (with `token` as bearer, if any); panics unless it answers 200.
    pub async fn open(url: &str, token: Option<&str>) -> Self {
        let mut request = reqwest::Client::new().get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("open the event stream");
        assert_eq!(response.status(), 200, "event stream {url}");
        Self {
            response,
            pending: Vec::new(),
        }
    }

    /// The next event's name and JSON data, within `deadline`.
    pub async fn next(&mut self, deadline: Duration) -> (String, Value) {
        let start = Instant::now();
        loop {
            if let Some(end) = find(&self.pending, b"\n\n") {
                let block: Vec<u8> = self.pending.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let mut event = String::new();
                let mut data = String::new();
                for line in text.lines() {
                    if let Some(name) = line.strip_prefix("event:") {
                        event = name.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data += d.trim_start();
                    }
                }
                if event.is_empty() {
                    continue; // keep-alive comment
                }
                return (event, serde_json::from_str(&data).unwrap_or(Value::Null));
            }
            let left = deadline
                .checked_sub(start.elapsed())
                .unwrap_or_else(|| panic!("no event within {deadline:?}"));
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {deadline:?}"))
                .expect("read the event stream")
                .expect("the event stream ended");
            self.pending.extend_from_slice(&chunk);
        }
    }

    /// The next event named `name`, skipping others.
    pub async fn expect(&mut self, name: &str, deadline: Duration) -> Value {
        loop {
            let (event, data) = self.next(deadline).await;
            if event == name {
                return data;
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A node script driving chromium: its stdin for commands and its `STEP` lines.
pub struct Driver {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    steps: std::sync::mpsc::Receiver<String>,
}

impl Driver {
    /// Starts `tests/browser/{script}` with `env`.
    pub fn start(script: &str, env: &[(&str, String)]) -> Self {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
        assert!(
            dir.join("node_modules/playwright-core").exists()
                && std::path::Path::new("/usr/bin/chromium").exists(),
            "the browser test needs Debian's chromium and playwright-core in tests/browser/node_modules: \
             run scripts/test (its ensure_browser step installs both)"
        );
        let mut command = Command::new("node");
        command
            .arg(dir.join(script))
            .env("CHROMIUM", "/usr/bin/chromium")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn node");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, steps) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            steps,
        }
    }

    /// Waits for `STEP name`, returning its data; a `failed` step or silence fails the test.
    pub fn expect(&self, name: &str, wait: Duration) -> Value {
        use std::sync::mpsc::RecvTimeoutError;
        loop {
            let line = match self.steps.recv_timeout(wait) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => panic!("browser: no step {name} within {wait:?}"),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("browser driver exited before step {name}")
                }
            };
            let Some(rest) = line.strip_prefix("STEP ") else {
                eprintln!("browser: {line}");
                continue;
            };
            let (step, data) = rest.split_once(' ').unwrap_or((rest, "{}"));
            let data: Value = serde_json::from_str(data).unwrap_or(Value::Null);
            assert_ne!(
                step, "failed",
                "browser step failed while waiting for {name}: {}",
                data["error"]
            );
            assert_eq!(step, name, "browser steps out of order: {data}");
            return data;
        }
    }

    /// Sends a command line to the script.
    pub fn say(&mut self, command: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{command}").expect("write to the browser driver");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
