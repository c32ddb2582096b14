//! `nexusd serve`: logging, the runtime, and the agent.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use super::{LogFormat, ServeArgs};
use crate::agent::{ServeOptions, serve};

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let filter = EnvFilter::try_from_env("NEXUS_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().init(),
    }
    let opts = ServeOptions {
        data_dir: args.data_dir,
        config_dir: args.config_dir,
        listen: args.listen,
        workers: args.workers,
        max_chain_depth: args.max_chain_depth,
        ignore: args.ignore,
        secrets_dir: args.secrets_dir,
        shutdown_grace: args.shutdown_grace,
        output_cap: args.output_cap,
        event_buffer: args.event_buffer,
        database_url: args.database_url,
        retention: args.retention,
        node_id: args.node_id,
        lease: args.lease,
        poll_interval: args.poll_interval,
        watch: args.watch,
        watch_interval: args.watch_interval,
        ui: !args.no_ui,
        session_ttl: args.session_ttl,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(opts))?;
    Ok(ExitCode::SUCCESS)
}
