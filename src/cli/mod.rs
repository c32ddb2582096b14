//! The command line: clap definitions and one function per command.

mod admin;
mod client;
mod serve;
mod test_match;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::definitions::Limits;
use crate::events::EventType;

/// nexusd: declarative file-event automation.
#[derive(Debug, Parser)]
#[command(name = "nexusd", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: watch the data dir and run the workflows.
    Serve(ServeArgs),
    /// Check definition files offline; exit 0 when valid, 1 when not.
    Validate(ValidateArgs),
    /// Tell, offline, which workflows an event would start, and why not.
    TestMatch(TestMatchArgs),
    /// Print the JSON Schema of a definition document.
    Schema,
    /// Apply definition files to a running agent, all or nothing.
    Apply(ApplyArgs),
    /// Show how definition files differ from the live ones; exit 1 when they do.
    Diff(DiffArgs),
    /// List, inspect, pause, resume, trigger and delete workflows.
    #[command(subcommand)]
    Workflows(WorkflowsCommand),
    /// List and inspect runs.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// The decision log: what each event did or did not start, and why.
    #[command(subcommand)]
    Events(EventsCommand),
    /// The agents of the fleet: every node recording into this database.
    #[command(subcommand)]
    Nodes(NodesCommand),
    #[command(flatten)]
    Files(FileCommand),
    /// Users and API keys, on the database directly (no running agent needed).
    Admin(AdminArgs),
}

/// Where the agent is, and the key to use.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The agent's HTTP address.
    #[arg(long, env = "NEXUS_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// An API key (`nxk_...`), from `nexusd admin create-user-key`.
    #[arg(long, env = "NEXUS_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
}

/// How a listing prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Yaml,
}

#[derive(Debug, clap::Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Delete live definitions applied from the same source that the files no longer hold.
    #[arg(long)]
    pub prune: bool,
    /// Report what would change; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The name of this set for `--prune` (default: the paths as given).
    #[arg(long = "source", value_name = "NAME")]
    pub source_name: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Also show live definitions of the same source that the files no longer hold.
    #[arg(long)]
    pub prune: bool,
    /// The name of this set for `--prune` (default: the paths as given).
    #[arg(long = "source", value_name = "NAME")]
    pub source_name: Option<String>,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// Every workflow and pipeline, with its status and revision.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// One definition (its document as YAML), or an old revision of it.
    Get {
        name: String,
        #[arg(long)]
        revision: Option<i64>,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// The latest runs of a workflow (a pipeline: of its stages).
    History {
        name: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Totals, success rate and durations.
    Stats {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// The latest failed attempts, with their errors.
    Errors {
        name: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Stop new runs; events meanwhile are recorded as skipped.
    Pause {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Let runs start again.
    Resume {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove a definition from the live set.
    Delete {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run a workflow now for a file of the data dir.
    Trigger {
        name: String,
        /// The file's virtual path, e.g. /workspace/uploads/a.txt.
        #[arg(long)]
        path: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Starts a run for every file already in the data dir that the
    /// workflow's `file.created` triggers match, then follows the runs to
    /// the end (a progress bar on a terminal, counts otherwise). Exits 1
    /// when some run failed.
    Backfill {
        name: String,
        /// Only files this glob matches too, e.g. '/inbox/2024/**'.
        #[arg(long)]
        path: Option<String>,
        /// Count the files and name the first few; start nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the backfill's id and return; its runs go on.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Apply an old revision again.
    Rollback {
        name: String,
        revision: i64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// The latest runs, newest first.
    List {
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Then keep printing runs as they change, until interrupted.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// One run with its event, attempts and steps.
    Get {
        id: String,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// A run's output: its running attempt's lines as its shell steps write
    /// them, or its stored output; stdout lines on stdout, stderr lines on
    /// stderr, each after its step's name.
    Logs {
        id: String,
        /// Keep printing lines as they are written until the run ends; the
        /// exit status is then 1 unless it succeeded.
        #[arg(short = 'f', long)]
        follow: bool,
        #[command(flatten)]
        client: ClientArgs,
        /// `json`: one line object per line.
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Cancels runs: these ids, or a workflow's runs in some states. A
    /// running run's step is killed on whichever node runs it.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "workflow"])))]
    Cancel {
        /// Run ids (`run_...`).
        #[arg(conflicts_with_all = ["workflow", "status", "path", "dry_run"])]
        ids: Vec<String>,
        /// Every run of this workflow (a pipeline: its stages') in `--status`.
        #[arg(long, requires = "status")]
        workflow: Option<String>,
        /// `queued`, `retrying`, `running`; repeat it, or separate with commas.
        #[arg(long, value_delimiter = ',', requires = "workflow")]
        status: Vec<String>,
        /// Only runs for files this glob matches.
        #[arg(long, requires = "workflow")]
        path: Option<String>,
        /// Say which runs would be cancelled, and cancel none.
        #[arg(long, requires = "workflow")]
        dry_run: bool,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Runs finished runs again, each for its event on the live revision of
    /// its workflow: these ids, or a workflow's runs by state and age.
    #[command(group(clap::ArgGroup::new("which").required(true).args(["ids", "workflow"])))]
    Rerun {
        /// Run ids (`run_...`).
        #[arg(conflicts_with_all = ["workflow", "status", "since", "dry_run"])]
        ids: Vec<String>,
        /// Start at the step that failed; the earlier steps' recorded
        /// results stand for them (refused when the file changed since).
        #[arg(long)]
        from_failed: bool,
        /// Run on the revision of the workflow that was live when the run
        /// was queued, not on the live one.
        #[arg(long)]
        same_revision: bool,
        /// Every run of this workflow (a pipeline: its stages') in `--status`.
        #[arg(long)]
        workflow: Option<String>,
        /// Final states, repeated or comma-separated (default `failed`).
        #[arg(long, value_delimiter = ',', requires = "workflow")]
        status: Vec<String>,
        /// Only runs finished since then: a duration ago (`1h`) or an RFC 3339 time.
        #[arg(long, requires = "workflow")]
        since: Option<String>,
        /// Say which runs would be re-run, and start none.
        #[arg(long, requires = "workflow")]
        dry_run: bool,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Recent events, newest first, each with what every workflow near it decided.
    List {
        /// Only events on this virtual path.
        #[arg(long)]
        path: Option<String>,
        /// Only events since then: a duration ago (`10m`) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Matches recorded events again against today's definitions: what
    /// would run and why not (`--dry-run`), or the runs started.
    Replay {
        /// Event ids (`evt_...`), as `events list -o json` shows them.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Say what would run and why not, and start nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// Every node, by data dir: state, version, heartbeat, watcher, runs in flight.
    List {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
}

#[derive(Debug, Subcommand)]
pub enum FileCommand {
    /// Write a file of the data dir (atomically).
    Write {
        /// The file's virtual path, e.g. /workspace/uploads/a.txt.
        path: String,
        /// Where the content comes from: a file, or `-` for standard input.
        #[arg(long, value_name = "FILE|-")]
        input: Option<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a file of the data dir.
    Cat {
        path: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List a directory of the data dir.
    Ls {
        path: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
        output: OutputFormat,
    },
    /// Delete a file of the data dir.
    Rm {
        path: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The agent's data dir (its SQLite database is DATA/.nexus/nexus.db).
    #[arg(
        long,
        default_value = "./nexus-data",
        env = "NEXUS_DATA_DIR",
        global = true
    )]
    pub data_dir: PathBuf,
    /// The agent's PostgreSQL database, when it uses one.
    #[arg(long, env = "DATABASE_URL", global = true)]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Add a user.
    CreateUser {
        name: String,
        /// The user's full name.
        #[arg(long = "name", value_name = "NAME")]
        display_name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        #[arg(long, value_enum, default_value_t = crate::auth::Role::Reader)]
        role: crate::auth::Role,
    },
    /// Make an API key for a user; it is printed once.
    CreateUserKey {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// List users.
    ListUsers,
    /// Revoke an API key (by its id, or the whole key).
    RevokeKey { id: String },
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The tree to watch; nexusd keeps its own state in DATA/.nexus.
    #[arg(long, default_value = "./nexus-data", env = "NEXUS_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Definitions to load and keep reconciled (changes apply within a second).
    #[arg(long)]
    pub config_dir: Option<PathBuf>,
    /// Record in PostgreSQL (`postgres://user@host/db`) instead of DATA/.nexus/nexus.db.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Address of the HTTP server (GET /health).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Runs at once, across all workflows.
    #[arg(long, default_value_t = 8)]
    pub workers: usize,
    /// `text` or `json` logs, on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Runs caused by runs' own writes, chained, before the next is skipped as a loop.
    #[arg(long, default_value_t = 8)]
    pub max_chain_depth: u32,
    /// File-name globs that never produce events; replaces the default list.
    #[arg(long = "ignore", value_name = "GLOB", default_values_t = crate::events::ignore::DEFAULT_IGNORES.iter().map(|s| s.to_string()))]
    pub ignore: Vec<String>,
    /// Directory holding one file per secret (as Docker and Kubernetes mount them).
    #[arg(long)]
    pub secrets_dir: Option<PathBuf>,
    /// How long running steps may finish at shutdown before they are killed.
    #[arg(long, default_value = "10s", value_parser = parse_duration_arg)]
    pub shutdown_grace: std::time::Duration,
    /// Bytes of stdout and of stderr kept per step (the tail), and of a webhook's answer (the head; the rest is not read).
    #[arg(long, default_value_t = 1024 * 1024)]
    pub output_cap: usize,
    /// Finished runs older than this are deleted (`30d`, `12h`, ...).
    #[arg(long, default_value = "30d", value_parser = parse_retention)]
    pub retention: std::time::Duration,
    /// Watcher notifications held between the kernel and the reconciler; past
    /// it, nothing is dropped: the tree is rescanned instead.
    #[arg(long, default_value_t = crate::events::watcher::CHANNEL_CAPACITY)]
    pub event_buffer: usize,
    /// This agent's name in run leases and `nodes list`, one running agent's
    /// (default: the host name and the data dir, then `#2`, `#3`, ... for
    /// more agents of that host on that data dir).
    #[arg(long, env = "NEXUS_NODE_ID")]
    pub node_id: Option<String>,
    /// How long a claim on a run holds unrenewed; past it, another agent on
    /// the same PostgreSQL takes the run up.
    #[arg(long, default_value = "30s", value_parser = parse_duration_arg)]
    pub lease: std::time::Duration,
    /// How often to look for other agents' applies, pauses and released
    /// runs when no notification came (PostgreSQL's LISTEN/NOTIFY wakes an
    /// agent at once; this is the fallback), and to compare the data dir
    /// with the index while some directory has no watch (past the inotify
    /// watch limit).
    #[arg(long, default_value = "5s", value_parser = parse_positive_duration)]
    pub poll_interval: std::time::Duration,
    /// How the data dir's watcher sees changes: `inotify` (the kernel tells
    /// at once), or `poll` (the tree compared with the index every
    /// `--watch-interval`: for a network filesystem written from other
    /// hosts, whose writes inotify does not see).
    #[arg(long, value_enum, default_value_t = crate::agent::WatchMode::Inotify)]
    pub watch: crate::agent::WatchMode,
    /// With `--watch poll`: how often the tree is compared with the index.
    #[arg(long, default_value = "2s", value_parser = parse_positive_duration)]
    pub watch_interval: std::time::Duration,
    /// Do not serve the web dashboard at `/` (the API is served the same).
    #[arg(long)]
    pub no_ui: bool,
    /// How long a dashboard sign-in lasts (a second at least).
    #[arg(long, default_value = "12h", value_parser = parse_session_ttl)]
    pub session_ttl: std::time::Duration,
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    crate::definitions::duration::parse_duration(s)
}

/// A duration above zero.
fn parse_positive_duration(s: &str) -> Result<std::time::Duration, String> {
    match parse_duration_arg(s)? {
        d if d.is_zero() => Err("must be more than zero".to_owned()),
        d => Ok(d),
    }
}

/// A session's life: the cookie's `Max-Age` counts whole seconds.
fn parse_session_ttl(s: &str) -> Result<std::time::Duration, String> {
    match parse_duration_arg(s)? {
        d if d < std::time::Duration::from_secs(1) => Err("must be a second at least".to_owned()),
        d => Ok(d),
    }
}

/// A duration, days (`30d`) included.
fn parse_retention(s: &str) -> Result<std::time::Duration, String> {
    match s.strip_suffix('d').and_then(|n| n.parse::<u64>().ok()) {
        Some(days) => Ok(std::time::Duration::from_secs(days.saturating_mul(86_400))),
        None => crate::definitions::duration::parse_duration(s),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where definitions come from.
#[derive(Debug, clap::Args)]
pub struct SourceArgs {
    /// Definition files or directories (searched recursively for .yaml/.yml); `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true, num_args = 1..)]
    pub paths: Vec<PathBuf>,
    /// Largest definitions file accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_file_bytes)]
    pub max_file_size: usize,
}

impl SourceArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_file_bytes: self.max_file_size,
            ..Limits::default()
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// Fail on warnings too.
    #[arg(long)]
    pub strict: bool,
    /// `text` (FILE:LINE:COL: error: MESSAGE) or `json`.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct TestMatchArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The event type: file.created, file.updated, file.deleted, file.moved, metadata.changed.
    #[arg(long, value_parser = parse_event_type)]
    pub event: EventType,
    /// The file's virtual path, e.g. /workspace/uploads/a.txt.
    #[arg(long)]
    pub path: String,
    /// With `--event file.moved`: the path the file was moved from.
    #[arg(long)]
    pub old_path: Option<String>,
    /// `table` or `json`.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

fn parse_event_type(s: &str) -> Result<EventType, String> {
    s.parse()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// Runs a command; the exit code is the command's verdict.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Validate(args) => validate::run(&args),
        Command::TestMatch(args) => test_match::run(&args),
        Command::Schema => {
            print!("{}", crate::definitions::schema::SCHEMA_TEXT);
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply(args) => client::apply(args),
        Command::Diff(args) => client::diff(args),
        Command::Workflows(c) => client::workflows(c),
        Command::Runs(c) => client::runs(c),
        Command::Events(c) => client::events(c),
        Command::Nodes(c) => client::nodes(c),
        Command::Files(c) => client::files(c),
        Command::Admin(args) => admin::run(args),
    }
}
