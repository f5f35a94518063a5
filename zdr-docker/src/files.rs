//! Files inside a container: a host file copied in (running or stopped container), a small
//! file read back, and a script run on a stopped container's volumes.

use std::io::Read;
use std::path::Path;

use bollard::query_parameters::{
    DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bytes::Bytes;
use futures::StreamExt;
use zdr_core::{Error, ErrorKind, Result};

use crate::Docker;

/// The size of a tar block.
const BLOCK: u64 = 512;

/// The header block of a regular file `name` of `len` bytes with `mode`, owned by `owner`
/// (uid and gid), for a tar stream built on the fly ([`Docker::upload_tar`]).
///
/// # Errors
/// [`ErrorKind::BadInput`] for a name a tar header cannot hold.
pub fn tar_entry(name: &str, len: u64, mode: u32, owner: u64) -> Result<Bytes> {
    let mut header = tar::Header::new_gnu();
    header
        .set_path(name)
        .map_err(|e| Error::bad_input(format!("{name} cannot be a file name: {e}")))?;
    header.set_size(len);
    header.set_mode(mode);
    header.set_uid(owner);
    header.set_gid(owner);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    header.set_cksum();
    Ok(Bytes::copy_from_slice(header.as_bytes()))
}

/// The zero bytes that follow a tar entry of `len` bytes up to the next block.
#[must_use]
pub fn tar_padding(len: u64) -> u64 {
    (BLOCK - len % BLOCK) % BLOCK
}

/// The end of a tar stream: two zero blocks.
#[must_use]
pub fn tar_end() -> Bytes {
    Bytes::from(vec![0u8; 1024])
}

impl Docker {
    /// Copies the host file `local` into directory `dir` of `container` as `name` (mode
    /// 0600, owned by root: the caller sets the owner it needs), streamed as a one-entry tar
    /// archive through the engine's archive API. The container may be stopped; `dir` must
    /// exist in it. Returns the bytes copied.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming a missing container or directory; [`ErrorKind::Io`]
    /// when the file cannot be read or the engine refuses the archive.
    pub async fn upload_file(
        &self,
        container: &str,
        local: &Path,
        dir: &str,
        name: &str,
    ) -> Result<u64> {
        let file = tokio::fs::File::open(local)
            .await
            .map_err(|e| Error::from_io(e, format!("cannot open {}", local.display())))?;
        let len = file
            .metadata()
            .await
            .map_err(|e| Error::from_io(e, format!("cannot read {}", local.display())))?
            .len();
        let head = tar_entry(name, len, 0o600, 0)?;
        // The entry's padding and the two zero blocks that end an archive.
        let tail = Bytes::from(vec![
            0u8;
            usize::try_from(tar_padding(len) + 2 * BLOCK)
                .unwrap_or(0)
        ]);
        let content = tokio_util::io::ReaderStream::with_capacity(
            tokio::io::AsyncReadExt::take(file, len),
            256 * 1024,
        );
        let body = futures::stream::once(async move { Ok(head) })
            .chain(content)
            .chain(futures::stream::once(async move { Ok(tail) }));
        self.upload_tar(container, dir, body)
            .await
            .map_err(|e| e.with_context("path", format!("{dir}/{name}")))?;
        Ok(len)
    }

    /// Streams the tar archive `body` into directory `dir` of `container` (running, stopped
    /// or created and never started: its volumes are written too) through the engine's
    /// archive API, which extracts it with the owners and modes its headers carry. `dir` must
    /// exist in the container.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming a missing container or directory; the error of `body`;
    /// [`ErrorKind::Io`] when the engine refuses the archive.
    pub async fn upload_tar<S>(&self, container: &str, dir: &str, body: S) -> Result<()>
    where
        S: futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let opts = UploadToContainerOptionsBuilder::new().path(dir).build();
        self.client()
            .upload_to_container(container, Some(opts), bollard::body_try_stream(body))
            .await
            .map_err(|e| {
                self.err(
                    e,
                    format!("cannot copy files into {dir} of container {container}"),
                )
                .with_context("container", container)
                .with_context("path", dir)
            })
    }

    /// The last `lines` lines the container wrote to its stdout and stderr (an empty string
    /// when the engine has none), for errors.
    pub async fn logs_tail(&self, container: &str, lines: usize) -> String {
        let opts = bollard::query_parameters::LogsOptionsBuilder::new()
            .stdout(true)
            .stderr(true)
            .tail(&lines.to_string())
            .build();
        let mut stream = self.client().logs(container, Some(opts));
        let mut text = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            if text.len() > 64 * 1024 {
                break;
            }
        }
        text.trim_end().to_owned()
    }

    /// The content of file `path` in `container` (running or stopped), or `None` when it
    /// does not exist. For small files: at most `limit` bytes are read.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming a missing container; [`ErrorKind::BadInput`] when the
    /// file is larger than `limit` or not a regular file; engine failures.
    pub async fn read_file(
        &self,
        container: &str,
        path: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>> {
        // The container first: a missing container is an error, a missing file is `None`.
        self.inspect(container).await?;
        let opts = DownloadFromContainerOptionsBuilder::new()
            .path(path)
            .build();
        let mut stream = self.client().download_from_container(container, Some(opts));
        let mut archive = Vec::new();
        let cap = limit.saturating_add(4 * BLOCK);
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => {
                    archive.extend_from_slice(&chunk);
                    if archive.len() as u64 > cap {
                        return Err(Error::bad_input(format!(
                            "{path} in container {container} is larger than {limit} bytes"
                        ))
                        .with_context("container", container));
                    }
                }
                Err(e) => {
                    let e = self.err(e, format!("cannot read {path} in container {container}"));
                    if e.kind() == ErrorKind::NotFound {
                        return Ok(None);
                    }
                    return Err(e.with_context("container", container));
                }
            }
        }
        let mut entries = tar::Archive::new(archive.as_slice());
        let mut entries = entries
            .entries()
            .map_err(|e| Error::from_io(e, format!("cannot read the archive of {path}")))?;
        let Some(entry) = entries.next() else {
            return Ok(None);
        };
        let mut entry =
            entry.map_err(|e| Error::from_io(e, format!("cannot read the archive of {path}")))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(Error::bad_input(format!(
                "{path} in container {container} is not a regular file"
            ))
            .with_context("container", container));
        }
        let mut content = Vec::new();
        entry
            .read_to_end(&mut content)
            .map_err(|e| Error::from_io(e, format!("cannot read the archive of {path}")))?;
        Ok(Some(content))
    }

    /// Runs `sh -c script` as root in a helper container of `image` that mounts every volume
    /// and bind mount of the stopped `container` at the same paths (`--volumes-from`),
    /// without network, and removes the helper. For changing the files of a stopped
    /// datastore (a swap that must not race the server).
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] naming a missing container or image; [`ErrorKind::Io`] with
    /// the script's output when it exits non-zero.
    pub async fn run_on_volumes_of(
        &self,
        container: &str,
        image: &str,
        script: &str,
        what: &str,
    ) -> Result<()> {
        self.run_helper_with(image, &[], Some(container), &["sh", "-c", script], what)
            .await
            .map_err(|e| e.with_context("container", container))
    }
}
