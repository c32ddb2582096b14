//! `write`, `cat`, `ls` and `rm`: files of the agent's data dir.

use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use reqwest::Method;

use super::{Client, block_on, file_url, print_structured, print_table, short_time};
use crate::api::{EntryType, FileDeleted, FileWritten, Listing};
use crate::cli::FileCommand;

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
                let v: FileWritten = c.call(Method::PUT, &file_url(&path), Some(body)).await?;
                println!("wrote {} ({} bytes)", v.path, v.bytes);
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
                let v: Listing = c.call(Method::GET, &url, None).await?;
                if print_structured(output, &v)? {
                    return Ok(ExitCode::SUCCESS);
                }
                let rows: Vec<Vec<String>> = v
                    .entries
                    .iter()
                    .map(|e| {
                        let (kind, suffix) = match e.kind {
                            EntryType::Dir => ("dir", "/"),
                            EntryType::File => ("file", ""),
                            EntryType::Symlink => ("symlink", ""),
                        };
                        vec![
                            kind.to_owned(),
                            e.size.to_string(),
                            short_time(e.modified_at.as_deref()),
                            format!("{}{suffix}", e.name),
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
                let v: FileDeleted = c.call(Method::DELETE, &file_url(&path), None).await?;
                println!("deleted {}", v.path);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
