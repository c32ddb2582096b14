//! `nexusd validate`: the compile step, reported.

use std::process::ExitCode;

use serde_json::json;

use super::{Format, ValidateArgs};
use crate::definitions::load_paths;

pub fn run(args: &ValidateArgs) -> anyhow::Result<ExitCode> {
    let loaded = load_paths(&args.source.paths, &args.source.limits());
    let diags = &loaded.diagnostics;
    let failed = diags.has_errors() || (args.strict && diags.has_warnings());
    match args.format {
        Format::Text => {
            print!("{diags}");
            let errors = diags.errors().count();
            let warnings = diags.iter().count() - errors;
            if failed {
                eprintln!("invalid: {errors} error(s), {warnings} warning(s)");
            } else {
                eprintln!(
                    "valid: {} workflow(s), {warnings} warning(s)",
                    loaded.set.workflows.len()
                );
            }
        }
        Format::Json => {
            let report = json!({
                "valid": !failed,
                "workflows": loaded.set.workflows.iter().map(|w| &w.name).collect::<Vec<_>>(),
                "diagnostics": diags.iter().collect::<Vec<_>>(),
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
    }
    // The process ends next: freeing every compiled workflow would only
    // cost time (a few percent of a large validate).
    std::mem::forget(loaded);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
