use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = nexusd::cli::Cli::parse();
    match nexusd::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
