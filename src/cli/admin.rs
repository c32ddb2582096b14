//! `nexusd admin`: users and keys, on the database directly, so the first
//! admin can be made before any key exists.

use std::process::ExitCode;

use super::{AdminArgs, AdminCommand};
use crate::auth;
use crate::events::now_ms;
use crate::store::{Store, User};

pub fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        std::fs::create_dir_all(&args.data_dir)?;
        let store = Store::open(args.database_url.as_deref(), &args.data_dir).await?;
        match args.command {
            AdminCommand::CreateUser {
                name,
                display_name,
                email,
                role,
            } => {
                if let Some(problem) = crate::definitions::names::check_name(&name) {
                    anyhow::bail!("{}", problem.replacen("name", "user name", 1));
                }
                let user = User {
                    name: name.clone(),
                    display_name,
                    email,
                    role: role.as_str().to_owned(),
                    created_ms: now_ms(),
                };
                if !store.create_user(&user).await? {
                    anyhow::bail!("user `{name}` already exists");
                }
                println!("user/{name} created ({})", role.as_str());
            }
            AdminCommand::CreateUserKey { name, description } => {
                if !store.users().await?.iter().any(|u| u.name == name) {
                    anyhow::bail!(
                        "no user `{name}`: make one with `nexusd admin create-user {name}`"
                    );
                }
                let key = auth::new_key().map_err(anyhow::Error::msg)?;
                store
                    .create_key(
                        &key.id,
                        &name,
                        &key.secret_hash,
                        description.as_deref(),
                        now_ms(),
                    )
                    .await?;
                eprintln!(
                    "key {} for user `{name}`; it is shown once, keep it now:",
                    key.id
                );
                println!("{}", key.text);
            }
            AdminCommand::ListUsers => {
                let users = store.users().await?;
                println!("{:<24} {:<7} {:<24} EMAIL", "NAME", "ROLE", "DISPLAY NAME");
                for u in users {
                    println!(
                        "{:<24} {:<7} {:<24} {}",
                        u.name,
                        u.role,
                        u.display_name.unwrap_or_default(),
                        u.email.unwrap_or_default()
                    );
                }
            }
            AdminCommand::RevokeKey { id } => {
                let id = auth::parse_key(&id)
                    .map_or(id.as_str(), |(id, _)| id)
                    .to_owned();
                if !store.revoke_key(&id, now_ms()).await? {
                    anyhow::bail!("no key with id `{id}`");
                }
                println!("key/{id} revoked");
            }
        }
        store.checkpoint(true).await?;
        Ok(ExitCode::SUCCESS)
    })
}
