//! The CLI's client commands: they talk to a running agent over its HTTP
//! API (`--url`/`NEXUS_URL`, `--api-key`/`NEXUS_API_KEY`), reading its
//! answers into the API's own types (`crate::api`). Listings print a table
//! by default, or `-o json|yaml`. Exit status: 0 success, 1 failure. One
//! file per noun: definitions (apply, diff), workflows, runs, events, nodes,
//! files.

mod backfills;
mod definitions;
mod events;
mod files;
mod nodes;
mod runs;
mod workflows;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::definitions::{apply, diff};
pub use self::events::events;
pub use self::files::files;
pub use self::nodes::nodes;
pub use self::runs::runs;
pub use self::workflows::workflows;
use super::{ClientArgs, OutputFormat};
use crate::api::ErrorBody;

/// A connection to the agent.
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
}

/// Server-sent events as they come.
pub struct EventStream {
    resp: reqwest::Response,
    buffer: Vec<u8>,
}

impl EventStream {
    /// The next events complete, each `(event, data)` (`event` empty when
    /// not named); `None` once the server ends the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<Vec<(String, String)>>> {
        loop {
            let mut events = Vec::new();
            // Bytes until a block is whole: a chunk may end inside a character.
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let bytes: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8_lossy(&bytes);
                let field = |name: &str| -> String {
                    block
                        .lines()
                        .filter_map(|l| l.strip_prefix(name))
                        .map(str::trim_start)
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                let data = field("data:");
                if !data.is_empty() {
                    events.push((field("event:"), data));
                }
            }
            if !events.is_empty() {
                return Ok(Some(events));
            }
            match self.resp.chunk().await.context("reading the stream")? {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }
}

/// What came back.
pub struct Reply {
    pub status: reqwest::StatusCode,
    pub bytes: Vec<u8>,
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            http,
            base: args.url.trim_end_matches('/').to_owned(),
            key: args.api_key.clone().filter(|k| !k.is_empty()),
        })
    }

    /// Opens a stream of server-sent events at `path` (no overall timeout:
    /// it lasts as long as the server sends).
    pub async fn stream(&self, path: &str) -> anyhow::Result<EventStream> {
        let mut req = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?
            .get(format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|_| {
            anyhow!(
                "cannot reach nexusd at {}: connection refused or host unreachable",
                self.base
            )
        })?;
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = resp.bytes().await.unwrap_or_default().to_vec();
            Reply { status, bytes }.ok()?;
            bail!("the server refused the stream ({status})");
        }
        Ok(EventStream {
            resp,
            buffer: Vec::new(),
        })
    }

    /// Sends a request; connection failures become one clear line.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Reply> {
        self.send_typed(method, path, body, None).await
    }

    /// [`Client::send`] with a `Content-Type`.
    async fn send_typed(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, t);
        }
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req.send().await.map_err(|e| {
            let why = if e.is_connect() {
                "connection refused or host unreachable"
            } else if e.is_timeout() {
                "timed out"
            } else {
                "request failed"
            };
            anyhow!("cannot reach nexusd at {}: {why}", self.base)
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("reading the reply from {}", self.base))?
            .to_vec();
        Ok(Reply { status, bytes })
    }

    /// Sends `body` as JSON and reads the answer, as [`Client::call`].
    pub async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<T> {
        let bytes = serde_json::to_vec(body)?;
        self.send_typed(method, path, Some(bytes), Some("application/json"))
            .await?
            .answer()
    }

    /// Sends a request and reads its answer; an error reply is an error
    /// naming what the server said.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<T> {
        self.send(method, path, body).await?.answer()
    }
}

impl Reply {
    /// The answer of a 2xx, read into its type; else the error, as [`Reply::ok`].
    fn answer<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        self.ok()?;
        serde_json::from_slice(&self.bytes)
            .context("the server's reply is not what this nexusd expects (another version?)")
    }

    /// `Ok` for a 2xx; else the server's message, with a hint for keys.
    pub fn ok(&self) -> anyhow::Result<()> {
        if self.status.is_success() {
            return Ok(());
        }
        let parsed: Option<ErrorBody> = serde_json::from_slice(&self.bytes).ok();
        let message = parsed
            .as_ref()
            .map(|b| b.error.message.clone())
            .unwrap_or_else(|| String::from_utf8_lossy(&self.bytes).trim().to_owned());
        match self.status.as_u16() {
            401 => bail!("the API key was refused: {message} (set --api-key or NEXUS_API_KEY)"),
            403 => bail!("not allowed: {message}"),
            _ => {
                // An invalid apply: each problem on its own line, as `validate` prints them.
                let diags = parsed
                    .and_then(|b| b.error.diagnostics)
                    .filter(|d| !d.is_empty());
                if let Some(diags) = diags {
                    for d in diags {
                        eprintln!("{}:{}:{}: error: {}", d.file, d.line, d.column, d.message);
                    }
                    bail!("the definitions are invalid: nothing was applied");
                }
                bail!("{message}")
            }
        }
    }
}

/// POSTs `body` to the route of each id (`route(id)`), one after another:
/// the answers, in order, and whether any was refused (each refusal said
/// on stderr; the others still go).
pub(super) async fn post_each<T: DeserializeOwned>(
    c: &Client,
    ids: &[String],
    route: impl Fn(&str) -> String,
    body: &impl Serialize,
) -> (Vec<T>, bool) {
    let mut answers = Vec::with_capacity(ids.len());
    let mut refused = false;
    for id in ids {
        match c.call_json::<T>(Method::POST, &route(id), body).await {
            Ok(a) => answers.push(a),
            Err(e) => {
                eprintln!("error: {e:#}");
                refused = true;
            }
        }
    }
    (answers, refused)
}

/// 1 when something was refused, else 0.
pub(super) fn exit_code(refused: bool) -> ExitCode {
    if refused {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Encodes a name or a path segment for a URL.
pub(super) fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Encodes a virtual path for `/v1/files/`, keeping its `/` separators.
pub(super) fn file_url(path: &str) -> String {
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        })
        .collect();
    format!("/v1/files/{}", segments.join("/"))
}

pub(super) fn block_on<F: Future<Output = anyhow::Result<ExitCode>>>(
    f: F,
) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Prints an answer as JSON or YAML; false for a table.
pub(super) fn print_structured(
    format: OutputFormat,
    value: &impl Serialize,
) -> anyhow::Result<bool> {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(value)?),
        OutputFormat::Yaml => print!("{}", serde_saphyr::to_string(value)?),
        OutputFormat::Table => return Ok(false),
    }
    Ok(true)
}

/// Prints rows aligned under headers; long cells are cut with `…` so a
/// listing stays readable at 80 columns.
pub fn print_table(headers: &[&str], rows: &[Vec<String>], max_widths: &[usize]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    let cut = |s: &str, max: usize| -> String {
        if s.chars().count() <= max {
            s.to_owned()
        } else {
            let keep: String = s.chars().take(max.saturating_sub(1)).collect();
            format!("{keep}…")
        }
    };
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, c)| cut(c, max_widths.get(i).copied().unwrap_or(usize::MAX)))
                .collect()
        })
        .collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// A table cell: the value, or `-` for none.
pub(super) fn cell(v: Option<impl std::fmt::Display>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `2026-11-26T04:06:36.123Z` as `2026-11-26 04:06:36`.
pub(super) fn short_time(t: Option<&str>) -> String {
    match t {
        Some(t) if t.len() >= 19 => t[..19].replace('T', " "),
        _ => "-".to_owned(),
    }
}

pub(super) fn duration(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms < 1000 => format!("{ms}ms"),
        Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
        None => "-".to_owned(),
    }
}
