//! The file API: read, write, append, delete and list files of the data
//! dir, confined to it as the built-in actions are (the same path check and
//! the same cap-std root). Writes are atomic, and the events they cause
//! record the user.

use std::io::{Read, Write};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cap_std::fs::{Dir, OpenOptions};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::{Body, P, Q};
use super::{Api, ApiError, Caller};
use crate::api::{EntryType, ErrorBody, FileDeleted, FileEntry, FileWritten, Listing};
use crate::datadir::{Vpath, atomic_write, io_error, make_parent, vpath};
use crate::store::timestamp;

/// Checks the request's path: what the route captured, and the raw URI for
/// encodings that hide a separator or a NUL.
fn checked(uri: &Uri, captured: &str) -> Result<Vpath, ApiError> {
    let raw = uri.path().to_ascii_lowercase();
    if raw.contains("%2f") || raw.contains("%5c") || raw.contains("%00") {
        return Err(ApiError::bad_request(
            "encoded `/`, `\\` or NUL in a file path is not allowed",
        ));
    }
    if captured.starts_with('/') {
        return Err(ApiError::bad_request(
            "file paths are relative to the data dir: `/v1/files/DIR/NAME`",
        ));
    }
    vpath(&format!("/{captured}")).map_err(ApiError::bad_request)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("file task failed: {e}")))
}

/// A write's path, checked, with the data dir to write in; the event the
/// write will cause is attributed to the caller.
fn for_writing(
    api: &Api,
    caller: &Caller,
    uri: &Uri,
    captured: &str,
) -> Result<(Vpath, Arc<Dir>), ApiError> {
    let path = checked(uri, captured)?;
    api.rt.actors.register(&path.virt, caller.user.clone());
    Ok((path, Arc::clone(&api.rt.root)))
}

/// A refused path is the caller's mistake (400); anything else a conflict
/// with the tree as it is.
fn refused_or_conflict(message: String) -> ApiError {
    if message.contains("outside the data dir") {
        ApiError::bad_request(message)
    } else {
        ApiError::conflict(message)
    }
}

/// An I/O failure as the caller should see it.
fn file_error(root: &Dir, what: &str, path: &Vpath, e: &std::io::Error) -> ApiError {
    let message = io_error(root, what, path, e);
    if message.contains("outside the data dir") {
        return ApiError::bad_request(message);
    }
    match e.kind() {
        std::io::ErrorKind::NotFound => ApiError::not_found(message),
        std::io::ErrorKind::IsADirectory | std::io::ErrorKind::NotADirectory => {
            ApiError::conflict(message)
        }
        std::io::ErrorKind::PermissionDenied => {
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
        }
        _ => ApiError::conflict(message),
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// List instead of read: a file shows as one entry.
    #[serde(default)]
    list: bool,
}

/// The data dir's top level (nexusd's own state dir left out).
#[utoipa::path(get, path = "/v1/files", tag = "files",
    responses(
        (status = 200, description = "The entries, by name", body = Listing),
        (status = 409, description = "The data dir cannot be listed", body = ErrorBody),
    ))]
pub async fn list_root(State(api): State<Api>) -> Result<Json<Listing>, ApiError> {
    let root = Arc::clone(&api.rt.root);
    let entries = blocking(move || list_dir(&root, std::path::Path::new(""))).await?;
    entries
        .map(|entries| {
            Json(Listing {
                path: "/".to_owned(),
                entries,
            })
        })
        .map_err(|e| ApiError::conflict(format!("cannot list the data dir: {e}")))
}

/// A file's bytes, or a directory's entries (also with `?list=true`, which
/// shows a file as one entry).
#[utoipa::path(get, path = "/v1/files/{path}", tag = "files",
    params(("path" = String, Path, description = "A path relative to the data dir (`DIR/NAME`)"), ReadQuery),
    responses(
        (status = 200, description = "The file's bytes, or the directory's entries",
            content((Vec<u8> = "application/octet-stream"), (Listing = "application/json"))),
        (status = 403, description = "The agent may not read it", body = ErrorBody),
        (status = 404, description = "No such file", body = ErrorBody),
        (status = 409, description = "It cannot be read as it is", body = ErrorBody),
    ))]
pub async fn read(
    State(api): State<Api>,
    uri: Uri,
    P(captured): P<String>,
    Q(q): Q<ReadQuery>,
) -> Result<Response, ApiError> {
    let path = checked(&uri, &captured)?;
    let root = Arc::clone(&api.rt.root);
    blocking(move || {
        let meta = root
            .metadata(&path.rel)
            .map_err(|e| file_error(&root, "read", &path, &e))?;
        if meta.is_dir() {
            let entries =
                list_dir(&root, &path.rel).map_err(|e| file_error(&root, "list", &path, &e))?;
            return Ok(Json(Listing {
                path: path.virt,
                entries,
            })
            .into_response());
        }
        if q.list {
            let name = path
                .rel
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            let entry = entry_of(&name.unwrap_or_default(), &meta);
            return Ok(Json(Listing {
                path: path.virt,
                entries: vec![entry],
            })
            .into_response());
        }
        let mut bytes = Vec::new();
        root.open(&path.rel)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| file_error(&root, "read", &path, &e))?;
        Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Bytes::from(bytes),
        )
            .into_response())
    })
    .await?
}

fn list_dir(root: &Dir, rel: &std::path::Path) -> std::io::Result<Vec<FileEntry>> {
    let dir = if rel.as_os_str().is_empty() {
        root.try_clone()?
    } else {
        root.open_dir(rel)?
    };
    let mut out = Vec::new();
    for entry in dir.entries()? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if rel.as_os_str().is_empty() && name == crate::datadir::STATE_DIR {
            continue;
        }
        if let Ok(meta) = entry.metadata() {
            out.push(entry_of(&name, &meta));
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn entry_of(name: &str, meta: &cap_std::fs::Metadata) -> FileEntry {
    let kind = if meta.is_dir() {
        EntryType::Dir
    } else if meta.is_symlink() {
        EntryType::Symlink
    } else {
        EntryType::File
    };
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.into_std().duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    FileEntry {
        name: name.to_owned(),
        kind,
        size: meta.len(),
        modified_at: timestamp(mtime),
    }
}

/// Replaces (or creates) a file atomically; the event it causes records
/// the caller.
#[utoipa::path(put, path = "/v1/files/{path}", tag = "files",
    params(("path" = String, Path, description = "A path relative to the data dir (`DIR/NAME`); missing directories are made")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's new content"),
    responses(
        (status = 200, description = "Replaced", body = FileWritten),
        (status = 201, description = "Created", body = FileWritten),
        (status = 409, description = "A directory is in the way", body = ErrorBody),
    ))]
pub async fn write(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    P(captured): P<String>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let (path, root) = for_writing(&api, &caller, &uri, &captured)?;
    let len = body.len();
    blocking(move || {
        let before = root.metadata(&path.rel).ok();
        if before.as_ref().is_some_and(|m| m.is_dir()) {
            return Err(ApiError::conflict(format!(
                "`{}` is a directory",
                path.virt
            )));
        }
        atomic_write(&root, &path, &body).map_err(refused_or_conflict)?;
        let status = if before.is_some() {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        let written = FileWritten {
            path: path.virt,
            bytes: len as u64,
        };
        Ok((status, Json(written)).into_response())
    })
    .await?
}

/// `POST /v1/files/{path}:append` appends the body (creating the file).
#[utoipa::path(post, path = "/v1/files/{path}", tag = "files",
    params(("path" = String, Path, description = "A path relative to the data dir, then `:append` (`DIR/NAME:append`)")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The bytes to append"),
    responses(
        (status = 200, description = "Appended", body = FileWritten),
        (status = 403, description = "The agent may not write it", body = ErrorBody),
        (status = 409, description = "A directory is in the way", body = ErrorBody),
    ))]
pub async fn append(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    P(captured): P<String>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let Some(target) = captured.strip_suffix(":append") else {
        return Err(ApiError::bad_request(
            "POST on a file appends: use `/v1/files/PATH:append`",
        ));
    };
    let (path, root) = for_writing(&api, &caller, &uri, target)?;
    let len = body.len();
    blocking(move || {
        make_parent(&root, &path).map_err(refused_or_conflict)?;
        root.open_with(&path.rel, OpenOptions::new().append(true).create(true))
            .and_then(|mut f| f.write_all(&body))
            .map_err(|e| file_error(&root, "append to", &path, &e))?;
        Ok(Json(FileWritten {
            path: path.virt,
            bytes: len as u64,
        })
        .into_response())
    })
    .await?
}

/// Deletes a file.
#[utoipa::path(delete, path = "/v1/files/{path}", tag = "files",
    params(("path" = String, Path, description = "A path relative to the data dir (`DIR/NAME`)")),
    responses(
        (status = 200, description = "Deleted", body = FileDeleted),
        (status = 403, description = "The agent may not delete it", body = ErrorBody),
        (status = 404, description = "No such file", body = ErrorBody),
        (status = 409, description = "It is a directory", body = ErrorBody),
    ))]
pub async fn remove(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    uri: Uri,
    P(captured): P<String>,
) -> Result<Response, ApiError> {
    let (path, root) = for_writing(&api, &caller, &uri, &captured)?;
    blocking(move || {
        root.remove_file(&path.rel)
            .map_err(|e| file_error(&root, "delete", &path, &e))?;
        Ok(Json(FileDeleted {
            path: path.virt,
            deleted: true,
        })
        .into_response())
    })
    .await?
}
