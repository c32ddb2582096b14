//! The command line: clap definitions and one function per command.

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
    /// Check definition files offline; exit 0 when valid, 1 when not.
    Validate(ValidateArgs),
    /// Tell, offline, which workflows an event would start, and why not.
    TestMatch(TestMatchArgs),
    /// Print the JSON Schema of a definition document.
    Schema,
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
        Command::Validate(args) => validate::run(&args),
        Command::TestMatch(args) => test_match::run(&args),
        Command::Schema => {
            print!("{}", crate::definitions::schema::SCHEMA_TEXT);
            Ok(ExitCode::SUCCESS)
        }
    }
}
