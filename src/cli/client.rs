//! The CLI's client commands: they talk to a running agent over its HTTP
//! API (`--url`/`NEXUS_URL`, `--api-key`/`NEXUS_API_KEY`). Listings print a
//! table by default, or `-o json|yaml`. Exit status: 0 success, 1 failure.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use reqwest::Method;
use serde_json::{Value, json};

use super::{
    ApplyArgs, ClientArgs, DiffArgs, EventsCommand, FileCommand, OutputFormat, RunsCommand,
    WorkflowsCommand,
};

/// A connection to the agent.
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: Option<String>,
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

    /// Sends a request; connection failures become one clear line.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
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

    /// Sends a request and returns its JSON; an error reply is an error
    /// naming what the server said.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Value> {
        let reply = self.send(method, path, body).await?;
        reply.ok()?;
        serde_json::from_slice(&reply.bytes).context("the server's reply is not JSON")
    }
}

impl Reply {
    /// `Ok` for a 2xx; else the server's message, with a hint for keys.
    pub fn ok(&self) -> anyhow::Result<()> {
        if self.status.is_success() {
            return Ok(());
        }
        let parsed: Option<Value> = serde_json::from_slice(&self.bytes).ok();
        let message = parsed
            .as_ref()
            .and_then(|v| v["error"]["message"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&self.bytes).trim().to_owned());
        match self.status.as_u16() {
            401 => bail!("the API key was refused: {message} (set --api-key or NEXUS_API_KEY)"),
            403 => bail!("not allowed: {message}"),
            _ => {
                // An invalid apply: each problem on its own line, as `validate` prints them.
                let diags = parsed
                    .as_ref()
                    .and_then(|v| v["error"]["diagnostics"].as_array())
                    .filter(|d| !d.is_empty());
                if let Some(diags) = diags {
                    for d in diags {
                        eprintln!(
                            "{}:{}:{}: error: {}",
                            d["file"].as_str().unwrap_or("?"),
                            d["line"],
                            d["column"],
                            d["message"].as_str().unwrap_or("")
                        );
                    }
                    bail!("the definitions are invalid: nothing was applied");
                }
                bail!("{message}")
            }
        }
    }
}

/// Encodes a name or a path segment for a URL.
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Encodes a virtual path for `/v1/files/`, keeping its `/` separators.
fn file_url(path: &str) -> String {
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        })
        .collect();
    format!("/v1/files/{}", segments.join("/"))
}

fn block_on<F: Future<Output = anyhow::Result<ExitCode>>>(f: F) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// Prints a value as JSON or YAML; `None` for a table.
fn print_structured(format: OutputFormat, value: &Value) -> anyhow::Result<bool> {
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

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `2026-11-26T04:06:36.123Z` as `2026-11-26 04:06:36`.
fn short_time(v: &Value) -> String {
    match v.as_str() {
        Some(t) if t.len() >= 19 => t[..19].replace('T', " "),
        _ => "-".to_owned(),
    }
}

fn duration(v: &Value) -> String {
    match v.as_i64() {
        Some(ms) if ms < 1000 => format!("{ms}ms"),
        Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
        None => "-".to_owned(),
    }
}

/// Definition files as one multi-document body, each file after a line
/// naming it: the agent validates the whole set, and its errors name the
/// files, lines and columns.
fn definitions_body(
    paths: &[std::path::PathBuf],
    limits: &crate::definitions::Limits,
) -> anyhow::Result<Vec<u8>> {
    match crate::definitions::load::join_sources(paths, limits) {
        Ok(text) => Ok(text.into_bytes()),
        Err(diagnostics) => {
            eprint!("{diagnostics}");
            bail!("the definitions cannot be read: nothing was applied");
        }
    }
}

/// The source an apply stands for: `--source`, or the paths as typed.
fn source_name(explicit: &Option<String>, paths: &[std::path::PathBuf]) -> String {
    explicit.clone().unwrap_or_else(|| {
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.display().to_string().trim_end_matches('/').to_owned())
            .collect();
        format!("files:{}", names.join(","))
    })
}

pub fn apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let body = definitions_body(&args.source.paths, &args.source.limits())?;
    let source = source_name(&args.source_name, &args.source.paths);
    block_on(async move {
        let client = Client::new(&args.client)?;
        let path = format!(
            "/v1/apply?prune={}&dry_run={}&source={}",
            args.prune,
            args.dry_run,
            enc(&source)
        );
        let reply = client.json(Method::POST, &path, Some(body)).await?;
        if print_structured(args.output, &reply)? {
            return Ok(ExitCode::SUCCESS);
        }
        let suffix = if args.dry_run { " (dry run)" } else { "" };
        for r in reply["results"].as_array().into_iter().flatten() {
            println!(
                "{}/{} {}{suffix}",
                s(&r["kind"]).to_lowercase(),
                s(&r["name"]),
                s(&r["action"])
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn diff(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let body = definitions_body(&args.source.paths, &args.source.limits())?;
    let source = source_name(&args.source_name, &args.source.paths);
    block_on(async move {
        let client = Client::new(&args.client)?;
        let path = format!("/v1/diff?prune={}&source={}", args.prune, enc(&source));
        let reply = client.json(Method::POST, &path, Some(body)).await?;
        for r in reply["results"].as_array().into_iter().flatten() {
            if let Some(d) = r["diff"].as_str() {
                print!("{d}");
            }
        }
        Ok(if reply["differs"] == json!(true) {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}

pub fn workflows(command: WorkflowsCommand) -> anyhow::Result<ExitCode> {
    block_on(async move {
        match command {
            WorkflowsCommand::List { client, output } => {
                let c = Client::new(&client)?;
                let v = c.json(Method::GET, "/v1/workflows", None).await?;
                if print_structured(output, &v)? {
                    return Ok(ExitCode::SUCCESS);
                }
                let rows: Vec<Vec<String>> = v["workflows"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|w| {
                        vec![
                            s(&w["name"]),
                            s(&w["kind"]),
                            s(&w["status"]),
                            s(&w["revision"]),
                            s(&w["description"]),
                        ]
                    })
                    .collect();
                print_table(
                    &["NAME", "KIND", "STATUS", "REV", "DESCRIPTION"],
                    &rows,
                    &[28, 8, 6, 4, 28],
                );
            }
            WorkflowsCommand::Get {
                name,
                revision,
                client,
                output,
            } => {
                let c = Client::new(&client)?;
                let mut path = format!("/v1/workflows/{}", enc(&name));
                if let Some(n) = revision {
                    path.push_str(&format!("?revision={n}"));
                }
                let v = c.json(Method::GET, &path, None).await?;
                if print_structured(output, &v)? {
                    return Ok(ExitCode::SUCCESS);
                }
                // The table view of one definition is its document, as YAML.
                print!("{}", serde_saphyr::to_string(&v["document"])?);
            }
            WorkflowsCommand::History {
                name,
                limit,
                status,
                client,
                output,
            } => {
                let c = Client::new(&client)?;
                let mut path = format!("/v1/workflows/{}/runs?limit={limit}", enc(&name));
                if let Some(st) = status {
                    path.push_str(&format!("&status={}", enc(&st)));
                }
                let v = c.json(Method::GET, &path, None).await?;
                if print_structured(output, &v)? {
                    return Ok(ExitCode::SUCCESS);
                }
                print_runs(&v, false);
            }
            WorkflowsCommand::Stats {
                name,
                client,
                output,
            } => {
                let c = Client::new(&client)?;
                let v = c
                    .json(
                        Method::GET,
                        &format!("/v1/workflows/{}/stats", enc(&name)),
                        None,
                    )
                    .await?;
                if print_structured(output, &v)? {
                    return Ok(ExitCode::SUCCESS);
                }
                let rate = v["success_rate"]
                    .as_f64()
                    .map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0));
                println!("workflow:         {}", s(&v["workflow"]));
                println!("total:            {}", s(&v["total"]));
                println!("succeeded:        {}", s(&v["succeeded"]));
                println!("failed:           {}", s(&v["failed"]));
                println!("skipped:          {}", s(&v["skipped"]));
                println!("success_rate:     {rate}");
                println!("avg_duration_ms:  {}", s(&v["avg_duration_ms"]));
                println!("p95_duration_ms:  {}", s(&v["p95_duration_ms"]));
                println!("errors:           {}", s(&v["errors"]));
            }
            WorkflowsCommand::Errors {
                name,
                limit,
                client,
                output,
            } => {
                let c = Client::new(&client)?;
                let path = format!("/v1/workflows/{}/errors?limit={limit}", enc(&name));
                let v = c.json(Method::GET, &path, None).await?;
                if print_structured(output, &v)? {
                    return Ok(ExitCode::SUCCESS);
                }
                let rows: Vec<Vec<String>> = v["errors"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        vec![
                            short_time(&e["at"]),
                            s(&e["path"]),
                            s(&e["attempt"]),
                            s(&e["error"]),
                        ]
                    })
                    .collect();
                print_table(&["AT", "FILE", "TRY", "ERROR"], &rows, &[19, 24, 3, 60]);
            }
            WorkflowsCommand::Pause { name, client } => {
                return simple(&client, Method::POST, &name, "pause", "paused").await;
            }
            WorkflowsCommand::Resume { name, client } => {
                return simple(&client, Method::POST, &name, "resume", "resumed").await;
            }
            WorkflowsCommand::Delete { name, client } => {
                let c = Client::new(&client)?;
                let v = c
                    .json(
                        Method::DELETE,
                        &format!("/v1/workflows/{}", enc(&name)),
                        None,
                    )
                    .await?;
                for r in v["results"].as_array().into_iter().flatten() {
                    println!("{}/{} deleted", s(&r["kind"]).to_lowercase(), s(&r["name"]));
                }
            }
            WorkflowsCommand::Trigger { name, path, client } => {
                let c = Client::new(&client)?;
                let body = serde_json::to_vec(&json!({ "path": path }))?;
                let v = c
                    .json(
                        Method::POST,
                        &format!("/v1/workflows/{}/trigger", enc(&name)),
                        Some(body),
                    )
                    .await?;
                println!("run/{} {}", s(&v["run"]), s(&v["status"]));
            }
            WorkflowsCommand::Rollback {
                name,
                revision,
                client,
            } => {
                let c = Client::new(&client)?;
                let path = format!("/v1/workflows/{}/rollback?revision={revision}", enc(&name));
                let v = c.json(Method::POST, &path, None).await?;
                for r in v["results"].as_array().into_iter().flatten() {
                    println!(
                        "{}/{} {}",
                        s(&r["kind"]).to_lowercase(),
                        s(&r["name"]),
                        s(&r["action"])
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn simple(
    client: &ClientArgs,
    method: Method,
    name: &str,
    verb: &str,
    done: &str,
) -> anyhow::Result<ExitCode> {
    let c = Client::new(client)?;
    c.json(method, &format!("/v1/workflows/{}/{verb}", enc(name)), None)
        .await?;
    println!("workflow/{name} {done}");
    Ok(ExitCode::SUCCESS)
}

fn print_runs(v: &Value, with_workflow: bool) {
    let rows: Vec<Vec<String>> = v["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let mut row = vec![short_time(&r["queued_at"])];
            if with_workflow {
                row.push(s(&r["workflow"]));
            }
            row.push(s(&r["event"]["path"]));
            row.push(duration(&r["duration_ms"]));
            row.push(s(&r["status"]));
            if with_workflow {
                row.push(s(&r["id"]));
            }
            row
        })
        .collect();
    if with_workflow {
        print_table(
            &["TIMESTAMP", "WORKFLOW", "FILE", "DURATION", "STATUS", "RUN"],
            &rows,
            &[19, 20, 28, 8, 9, 36],
        );
    } else {
        // The seed's fields, within 80 columns; `-o json` has the run ids.
        print_table(
            &["TIMESTAMP", "FILE", "DURATION", "STATUS"],
            &rows,
            &[19, 34, 8, 9],
        );
    }
}

pub fn runs(command: RunsCommand) -> anyhow::Result<ExitCode> {
    block_on(async move {
        match command {
            RunsCommand::List {
                workflow,
                status,
                limit,
                follow,
                client,
                output,
            } => {
                let c = Client::new(&client)?;
                let mut path = format!("/v1/runs?limit={limit}");
                if let Some(w) = &workflow {
                    path.push_str(&format!("&workflow={}", enc(w)));
                }
                if let Some(st) = status {
                    path.push_str(&format!("&status={}", enc(&st)));
                }
                if follow {
                    return follow_runs(&c, workflow.as_deref(), output).await;
                }
                let v = c.json(Method::GET, &path, None).await?;
                if print_structured(output, &v)? {
                    return Ok(ExitCode::SUCCESS);
                }
                print_runs(&v, true);
            }
            RunsCommand::Get { id, client, output } => {
                let c = Client::new(&client)?;
                let v = c
                    .json(Method::GET, &format!("/v1/runs/{}", enc(&id)), None)
                    .await?;
                if print_structured(output, &v)? {
                    return Ok(ExitCode::SUCCESS);
                }
                println!("run:       {}", s(&v["id"]));
                println!("workflow:  {}", s(&v["workflow"]));
                println!("status:    {}", s(&v["status"]));
                if !v["reason"].is_null() {
                    println!("reason:    {}", s(&v["reason"]));
                }
                println!("attempts:  {}", s(&v["attempts"]));
                let e = &v["event"];
                println!(
                    "event:     {} {} ({})",
                    s(&e["type"]),
                    s(&e["path"]),
                    s(&e["id"])
                );
                if !e["caused_by_run"].is_null() {
                    println!("caused by: run {}", s(&e["caused_by_run"]));
                }
                if !e["actor"].is_null() {
                    println!("actor:     {}", s(&e["actor"]));
                }
                println!("queued:    {}", short_time(&v["queued_at"]));
                println!("duration:  {}", duration(&v["duration_ms"]));
                if !v["error"].is_null() {
                    println!("error:     {}", s(&v["error"]));
                }
                let rows: Vec<Vec<String>> = v["steps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|st| {
                        vec![
                            s(&st["name"]),
                            s(&st["status"]),
                            s(&st["exit_code"]),
                            s(&st["error"]),
                        ]
                    })
                    .collect();
                if !rows.is_empty() {
                    println!();
                    print_table(&["STEP", "STATUS", "EXIT", "ERROR"], &rows, &[24, 9, 4, 40]);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Prints run changes as the server streams them, one line each (`-o
/// json`: one JSON object per line), until interrupted or the server stops.
async fn follow_runs(
    c: &Client,
    workflow: Option<&str>,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let mut url = format!("{}/v1/events?follow=true", c.base);
    if let Some(w) = workflow {
        url.push_str(&format!("&workflow={}", enc(w)));
    }
    let mut req = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()?
        .get(&url);
    if let Some(key) = &c.key {
        req = req.bearer_auth(key);
    }
    let mut resp = req.send().await.map_err(|_| {
        anyhow!(
            "cannot reach nexusd at {}: connection refused or host unreachable",
            c.base
        )
    })?;
    if !resp.status().is_success() {
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap_or_default().to_vec();
        Reply { status, bytes }.ok()?;
        bail!("the server refused the stream ({status})");
    }
    if output == OutputFormat::Table {
        println!("{:<19}  {:<9}  {:<24}  FILE", "TIME", "STATUS", "WORKFLOW");
    }
    let mut buffer = String::new();
    let mut stdout = std::io::stdout();
    while let Some(chunk) = resp.chunk().await.context("reading the stream")? {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let data: String = block
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            let Ok(change) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            match output {
                OutputFormat::Table => writeln!(
                    stdout,
                    "{:<19}  {:<9}  {:<24}  {}",
                    short_time(&change["at"]),
                    s(&change["status"]),
                    s(&change["workflow"]),
                    s(&change["path"])
                )?,
                _ => writeln!(stdout, "{change}")?,
            }
            stdout.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn events(command: EventsCommand) -> anyhow::Result<ExitCode> {
    block_on(async move {
        let EventsCommand::List {
            path,
            since,
            limit,
            client,
            output,
        } = command;
        let c = Client::new(&client)?;
        let mut url = format!("/v1/events?limit={limit}");
        if let Some(p) = path {
            url.push_str(&format!("&path={}", enc(&p)));
        }
        if let Some(t) = since {
            url.push_str(&format!("&since={}", enc(&t)));
        }
        let v = c.json(Method::GET, &url, None).await?;
        if print_structured(output, &v)? {
            return Ok(ExitCode::SUCCESS);
        }
        for e in v["events"].as_array().into_iter().flatten() {
            let moved = match e["old_path"].as_str() {
                Some(old) => format!(" (from {old})"),
                None => String::new(),
            };
            println!(
                "{}  {}  {}{moved}",
                short_time(&e["observed_at"]),
                s(&e["type"]),
                s(&e["path"])
            );
            let decisions = e["decisions"].as_array().cloned().unwrap_or_default();
            if decisions.is_empty() {
                println!("    no workflow's patterns match this path");
            }
            for d in decisions {
                let what = match d["decision"].as_str() {
                    Some("not matched") => format!("not run: {}", s(&d["reason"])),
                    _ => {
                        let status = d["run_status"].as_str().unwrap_or("recorded");
                        let reason = d["reason"]
                            .as_str()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default();
                        format!("run {} {status}{reason}", s(&d["run"]))
                    }
                };
                println!("    {}: {what}", s(&d["workflow"]));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn files(command: FileCommand) -> anyhow::Result<ExitCode> {
    block_on(async move {
        match command {
            FileCommand::Write {
                path,
                input,
                client,
            } => {
                let body = match input.as_deref() {
                    None => {
                        bail!("give the content with --input FILE, or --input - for standard input")
                    }
                    Some(p) if p.as_os_str() == "-" => {
                        let mut b = Vec::new();
                        std::io::stdin().read_to_end(&mut b)?;
                        b
                    }
                    Some(p) => {
                        std::fs::read(p).with_context(|| format!("reading `{}`", p.display()))?
                    }
                };
                let c = Client::new(&client)?;
                let v = c.json(Method::PUT, &file_url(&path), Some(body)).await?;
                println!("wrote {} ({} bytes)", s(&v["path"]), s(&v["bytes"]));
            }
            FileCommand::Cat { path, client } => {
                let c = Client::new(&client)?;
                let reply = c.send(Method::GET, &file_url(&path), None).await?;
                reply.ok()?;
                std::io::stdout().write_all(&reply.bytes)?;
            }
            FileCommand::Ls {
                path,
                client,
                output,
            } => {
                let c = Client::new(&client)?;
                let url = match path.as_deref() {
                    None | Some("/") | Some("") => "/v1/files".to_owned(),
                    Some(p) => format!("{}?list=true", file_url(p)),
                };
                let v = c.json(Method::GET, &url, None).await?;
                if print_structured(output, &v)? {
                    return Ok(ExitCode::SUCCESS);
                }
                let rows: Vec<Vec<String>> = v["entries"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|e| {
                        let name = s(&e["name"]);
                        let name = if e["type"] == "dir" {
                            format!("{name}/")
                        } else {
                            name
                        };
                        vec![
                            s(&e["type"]),
                            s(&e["size"]),
                            short_time(&e["modified_at"]),
                            name,
                        ]
                    })
                    .collect();
                print_table(
                    &["TYPE", "SIZE", "MODIFIED", "NAME"],
                    &rows,
                    &[7, 12, 19, 36],
                );
            }
            FileCommand::Rm { path, client } => {
                let c = Client::new(&client)?;
                let v = c.json(Method::DELETE, &file_url(&path), None).await?;
                println!("deleted {}", s(&v["path"]));
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
