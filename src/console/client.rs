//! The CLI twins of the console (`switchboard tap`, `dead`, `spool`): a small client of the
//! running daemon's admin API.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

/// Where the admin API is and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminArgs {
    /// Base URL of the daemon's admin listener.
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_ADMIN",
        default_value = "http://127.0.0.1:9090"
    )]
    pub admin: String,
    /// Admin token (server.admin_token), sent as a bearer token.
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// A client of one daemon's admin API.
pub struct Admin {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Admin {
    /// A client for `args`.
    pub fn new(args: &AdminArgs) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            base: args.admin.trim_end_matches('/').to_owned(),
            token: args.token.clone().filter(|t| !t.is_empty()),
            http,
        })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, String> {
        let response = request
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| format!("cannot reach the admin API at {}: {e}", self.base))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| text.trim().to_owned());
            return Err(format!("{status}: {message}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("not JSON from the admin API: {e}"))
    }

    /// `GET path` as JSON.
    pub async fn get(&self, path: &str) -> Result<Value, String> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, String> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Result<Value, String> {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// Follows the Server-Sent Events at `path`, writing each `envelope` event's data as one
    /// line to `out`, until the daemon closes the stream.
    pub async fn follow(&self, path: &str, out: &mut impl Write) -> Result<(), String> {
        let mut response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .map_err(|e| format!("cannot reach the admin API at {}: {e}", self.base))?;
        if !response.status().is_success() {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            return Err(format!("{status}: {}", text.trim()));
        }
        let mut pending = Vec::new();
        let mut event = String::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\r', '\n']);
                if let Some(name) = line.strip_prefix("event:") {
                    event = name.trim().to_owned();
                } else if let Some(data) = line.strip_prefix("data:") {
                    match event.as_str() {
                        "envelope" => {
                            writeln!(out, "{}", data.trim_start()).map_err(|e| e.to_string())?;
                            out.flush().map_err(|e| e.to_string())?;
                        }
                        "lagged" => eprintln!("tap: fell behind, missed {}", data.trim()),
                        _ => {}
                    }
                } else if line.is_empty() {
                    event.clear();
                }
            }
        }
        Ok(())
    }
}

/// Percent-encodes a query value or path segment.
pub fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A query string of the given pairs, skipping absent ones.
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}
