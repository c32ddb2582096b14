//! `nodes`: the agents of the fleet.

use std::process::ExitCode;

use reqwest::Method;

use super::{Client, block_on, print_structured, print_table, short_time};
use crate::api::NodeList;
use crate::cli::NodesCommand;

pub fn nodes(command: NodesCommand) -> anyhow::Result<ExitCode> {
    block_on(async move {
        let NodesCommand::List { client, output } = command;
        let c = Client::new(&client)?;
        let v: NodeList = c.call(Method::GET, "/v1/nodes", None).await?;
        if print_structured(output, &v)? {
            return Ok(ExitCode::SUCCESS);
        }
        let rows: Vec<Vec<String>> = v
            .nodes
            .iter()
            .map(|n| {
                vec![
                    n.id.clone(),
                    n.state.as_str().to_owned(),
                    n.origin.clone(),
                    n.data_dir.clone(),
                    n.version.clone(),
                    short_time(n.started_at.as_deref()),
                    short_time(n.heartbeat_at.as_deref()),
                    if n.watcher { "yes" } else { "no" }.to_owned(),
                    n.runs_in_flight.to_string(),
                    if n.watch.is_empty() {
                        "-".to_owned()
                    } else {
                        n.watch.clone()
                    },
                ]
            })
            .collect();
        print_table(
            &[
                "NODE",
                "STATE",
                "ORIGIN",
                "DATA DIR",
                "VERSION",
                "STARTED",
                "HEARTBEAT",
                "WATCHER",
                "IN FLIGHT",
                "WATCH",
            ],
            &rows,
            &[40, 8, 16, 40, 10, 19, 19, 7, 9, 60],
        );
        Ok(ExitCode::SUCCESS)
    })
}
