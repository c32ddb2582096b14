//! `apply` and `diff`: definition files sent to the agent.

use std::process::ExitCode;

use anyhow::bail;
use reqwest::Method;

use super::{Client, block_on, enc, print_structured};
use crate::api::{ApplyAnswer, DiffAnswer, SourceFile};
use crate::cli::{ApplyArgs, DiffArgs};

/// The definition files, each with its name: the agent validates the
/// whole set, and its errors name the files, lines and columns.
fn definitions_body(
    paths: &[std::path::PathBuf],
    limits: &crate::definitions::Limits,
) -> anyhow::Result<Vec<SourceFile>> {
    match crate::definitions::load::read_sources(paths, limits) {
        Ok(sources) => Ok(sources
            .into_iter()
            .map(|(file, text)| SourceFile { file, text })
            .collect()),
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
        let reply: ApplyAnswer = client.call_json(Method::POST, &path, &body).await?;
        if print_structured(args.output, &reply)? {
            return Ok(ExitCode::SUCCESS);
        }
        let suffix = if args.dry_run { " (dry run)" } else { "" };
        for r in &reply.results {
            println!("{r}{suffix}");
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
        let reply: DiffAnswer = client.call_json(Method::POST, &path, &body).await?;
        for r in &reply.results {
            print!("{}", r.diff);
        }
        Ok(if reply.differs {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    })
}
