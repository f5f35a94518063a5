//! A real, throwaway S3 server for tests: SeaweedFS `weed mini`.
//!
//! [`SeaweedFs::start`] launches `weed mini` (master, volume server, filer and
//! S3 gateway in one process) in a fresh temporary directory, on freshly picked
//! ports, with one admin identity holding random credentials and one bucket.
//! It returns only once a small object has been written, read back and deleted
//! through the S3 API, so the server is truly usable. Several instances can run
//! at once (one per test binary, plus extra ones that a test kills).
//!
//! Tests must fail loudly when the server is missing: if `weed` is not on
//! `PATH`, [`SeaweedFs::start`] returns an error pointing at
//! `scripts/install-test-deps.sh`; it never skips.
//!
//! Behaviour notes (SeaweedFS 4.x):
//! - Every listening port is chosen here; each gRPC port is its HTTP port +
//!   10000 because some `weed mini` components (the maintenance worker dialing
//!   the admin server) assume that offset whatever the `.grpc` flags say.
//! - `-s3.autoCreateBucket=false`: like real S3, writing to a bucket that does
//!   not exist fails with `NoSuchBucket`; only [`SeaweedFs::bucket`] exists.
//! - `-master.resumeState=false`: with the default, a restarted master turns
//!   leader just after the volume server's first heartbeat, which is refused
//!   and retried 5-15 s later; PUTs hang until then. Volume ids and data are
//!   unaffected (the volume server reports them in its heartbeat).
//! - weed runs in its own process group under a small bash watchdog that kills
//!   it when the test process disappears without dropping [`SeaweedFs`].
//!   [`SeaweedFs::kill`] sends SIGKILL to the whole group;
//!   [`SeaweedFs::restart`] brings the same data directory back on the same
//!   ports, so acknowledged writes survive a kill.
//! - `$TMPDIR` is the data directory (glog's `weed.*` files land there); the
//!   gRPC unix sockets `/tmp/seaweedfs-*-grpc-<port>.sock` cannot be moved and
//!   are removed by [`SeaweedFs::kill`].

use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use opendal::Operator;
use opendal::services::S3;
use rand::Rng;
use rand::distr::Alphanumeric;
use tempfile::TempDir;

/// Address every SeaweedFS listener binds to.
const HOST: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Signing region reported to clients (SeaweedFS accepts any).
const REGION: &str = "us-east-1";
/// Bucket created on startup.
const BUCKET: &str = "zdr-test";
/// How long to wait for the server to become usable.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Upper bound for a single readiness probe (TCP connect + S3 round trip).
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// SeaweedFS convention: gRPC port = HTTP port + 10000.
const GRPC_OFFSET: u16 = 10_000;
/// Size limit of one SeaweedFS volume (MiB); see [`SeaweedFs::args`].
const VOLUME_SIZE_MB: u32 = 64;
/// Number of volumes the volume server may hold.
const VOLUME_COUNT: u32 = 32;
/// HTTP ports are picked in `[PORT_MIN, PORT_MAX]`, so that both a port and its
/// gRPC twin stay below the kernel's ephemeral range (32768+), where outgoing
/// connections could grab them between the pick and the bind.
const PORT_MIN: u16 = 10_000;
const PORT_MAX: u16 = 22_700;
/// Attempts with fresh ports when `weed` reports a port already taken.
const START_ATTEMPTS: usize = 4;
/// Log file (stdout + stderr of `weed`) inside the data directory.
const LOG_FILE: &str = "weed.log";
/// Runs `weed` (`"$@"`) under a bash watchdog that SIGKILLs it and deletes the
/// data directory (`$2`) once the test process (`$1`) is gone, e.g. after
/// Ctrl-C, which does not reach weed's own process group, or a SIGKILL of the
/// test binary; otherwise it exits with weed's status. Both live in one
/// process group, killed together.
const WATCHDOG: &str = r#"parent=$1 dir=$2; shift 2
"$@" &
weed=$!
while kill -0 "$weed" 2>/dev/null; do
    if ! kill -0 "$parent" 2>/dev/null; then
        kill -KILL "$weed"
        wait "$weed"
        rm -rf -- "$dir"
        exit 137
    fi
    sleep 0.5
done
wait "$weed"
"#;
/// Object used by the readiness probe (deleted before returning).
const PROBE_OBJECT: &str = ".zdr-seaweed-ready-probe";

/// Ports handed out by this process, never handed out twice.
static USED_PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// The HTTP ports of one `weed mini` (each gRPC port is HTTP + 10000).
#[derive(Debug, Clone, Copy)]
struct Ports {
    master: u16,
    volume: u16,
    filer: u16,
    s3: u16,
    admin: u16,
}

impl Ports {
    /// Picks five HTTP ports whose gRPC twins are free too.
    fn pick() -> io::Result<Ports> {
        let mut used = USED_PORTS.lock().unwrap_or_else(PoisonError::into_inner);
        let used = used.get_or_insert_with(HashSet::new);
        let mut rng = rand::rng();
        let mut picked = Vec::with_capacity(5);
        let mut tries = 0u32;
        while picked.len() < 5 {
            tries += 1;
            if tries > 10_000 {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "SeaweedFS: no free port pair (P, P+10000) found in 10000..22700",
                ));
            }
            let port = rng.random_range(PORT_MIN..=PORT_MAX);
            let grpc = port + GRPC_OFFSET;
            if used.contains(&port) || used.contains(&grpc) {
                continue;
            }
            if port_free(port) && port_free(grpc) {
                used.insert(port);
                used.insert(grpc);
                picked.push(port);
            }
        }
        Ok(Ports {
            master: picked[0],
            volume: picked[1],
            filer: picked[2],
            s3: picked[3],
            admin: picked[4],
        })
    }
}

/// Whether a TCP listener can bind `127.0.0.1:port` right now.
fn port_free(port: u16) -> bool {
    TcpListener::bind(SocketAddr::from((HOST, port))).is_ok()
}

/// A running (or killed) SeaweedFS `weed mini` serving S3 on 127.0.0.1.
///
/// Dropping it kills the server and deletes its data directory.
pub struct SeaweedFs {
    weed: PathBuf,
    ports: Ports,
    access_key_id: String,
    secret_access_key: String,
    child: Option<Child>,
    // Last field: dropped after `Drop::drop` has killed the process.
    dir: TempDir,
}

impl std::fmt::Debug for SeaweedFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeaweedFs")
            .field("endpoint", &self.endpoint())
            .field("bucket", &BUCKET)
            .field("dir", &self.dir.path())
            .field("running", &self.child.is_some())
            .finish_non_exhaustive()
    }
}

impl SeaweedFs {
    /// Starts a fresh SeaweedFS on free ports in a new temporary directory and
    /// waits (up to 60 s) until an object can be written to [`Self::bucket`].
    ///
    /// Fails with "SeaweedFS `weed` not found: run scripts/install-test-deps.sh"
    /// when `weed` is not on `PATH`; on a timeout or an early exit the error
    /// carries the tail of the server log.
    pub async fn start() -> io::Result<SeaweedFs> {
        let weed = find_weed()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut server = SeaweedFs::prepare(weed.clone())?;
            match server.launch().await {
                Ok(()) => return Ok(server),
                // Another process grabbed one of our ports between the pick
                // and weed's bind: weed exits at once; try other ports.
                Err(_) if attempt < START_ATTEMPTS && server.port_clash() => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// The S3 endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{HOST}:{}", self.ports.s3)
    }

    /// The bucket that exists on this server.
    pub fn bucket(&self) -> &str {
        BUCKET
    }

    /// Access key id of the admin identity.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    /// Secret access key of the admin identity.
    pub fn secret_access_key(&self) -> &str {
        &self.secret_access_key
    }

    /// Signing region to configure in clients (`us-east-1`).
    pub fn region(&self) -> &str {
        REGION
    }

    /// The server's data directory (also holds `weed.log`).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The log file receiving the server's stdout and stderr.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }

    /// Whether the server process is currently running (not killed, not exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(_)) | Err(_)) | None => false,
        }
    }

    /// An OpenDAL operator on [`Self::bucket`] with the admin credentials
    /// (path-style requests, no credential lookup in the environment).
    pub fn operator(&self) -> io::Result<Operator> {
        opendal::install_default();
        let builder = S3::default()
            .bucket(BUCKET)
            .endpoint(&self.endpoint())
            .region(REGION)
            .access_key_id(&self.access_key_id)
            .secret_access_key(&self.secret_access_key)
            .disable_config_load()
            .disable_ec2_metadata();
        Operator::new(builder).map_err(io::Error::other)
    }

    /// Kills the server with SIGKILL, its whole process group included, and
    /// reaps it. Data written so far stays in [`Self::data_dir`]. No-op when
    /// already killed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Only while it runs do its ports (hence these paths) surely belong
            // to it: a weed that exited on a port clash must not remove the
            // sockets of the instance that owns the port.
            if matches!(child.try_wait(), Ok(None)) {
                self.remove_grpc_sockets();
            }
            // The watchdog leads the process group of weed: its pid is the group id.
            if let Some(pgid) = i32::try_from(child.id())
                .ok()
                .and_then(rustix::process::Pid::from_raw)
            {
                // ESRCH (group already gone) is fine.
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Removes the `/tmp/seaweedfs-<component>-grpc-<port>.sock` files: weed
    /// serves gRPC on these too, at a path no flag (nor `$TMPDIR`) moves, and
    /// SIGKILL leaves them behind. Called while our process still holds the
    /// TCP ports, so no other instance can own these paths yet; a restart
    /// creates them again.
    fn remove_grpc_sockets(&self) {
        let p = self.ports;
        for (name, port) in [
            ("master", p.master),
            ("volume", p.volume),
            ("filer", p.filer),
            ("s3", p.s3),
            ("admin", p.admin),
        ] {
            let grpc = port + GRPC_OFFSET;
            let _ = fs::remove_file(format!("/tmp/seaweedfs-{name}-grpc-{grpc}.sock"));
        }
    }

    /// Restarts the server (killing it first if it still runs) on the same
    /// ports and data directory, and waits until it is usable again.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.kill();
        self.launch().await
    }

    /// Creates the data directory, credentials and config for a new server.
    fn prepare(weed: PathBuf) -> io::Result<SeaweedFs> {
        let dir = tempfile::Builder::new().prefix("zdr-seaweed-").tempdir()?;
        let access_key_id = format!("ZDR{}", random_token(17).to_uppercase());
        let secret_access_key = random_token(40);
        let config = format!(
            r#"{{
  "identities": [
    {{
      "name": "zdr-admin",
      "credentials": [{{ "accessKey": "{access_key_id}", "secretKey": "{secret_access_key}" }}],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }}
  ]
}}
"#
        );
        fs::write(dir.path().join("s3.json"), config)?;
        Ok(SeaweedFs {
            weed,
            ports: Ports::pick()?,
            access_key_id,
            secret_access_key,
            child: None,
            dir,
        })
    }

    /// The `weed mini` command line.
    fn args(&self) -> Vec<String> {
        let dir = self.dir.path();
        let p = self.ports;
        let d = dir.display();
        let mut args = vec![
            "mini".to_string(),
            format!("-dir={d}"),
            format!("-ip={HOST}"),
            format!("-ip.bind={HOST}"),
            format!("-s3.config={d}/s3.json"),
            format!("-bucket={BUCKET}"),
            "-s3.autoCreateBucket=false".to_string(),
            "-webdav=false".to_string(),
            "-admin.ui=false".to_string(),
            "-master.telemetry=false".to_string(),
            // Fast restarts: see the module docs.
            "-master.resumeState=false".to_string(),
            // Unix sockets default to /tmp/seaweedfs-*-<port>.sock: keep them private.
            format!("-filer.localSocket={d}/filer.sock"),
            format!("-s3.localSocket={d}/s3.sock"),
            // Extra listeners that default to fixed ports: off.
            "-s3.port.iceberg=0".to_string(),
            "-s3.port.lance=0".to_string(),
            // Small volumes, a fixed number of them: left to itself `weed mini` sizes its
            // volumes from the free disk space (up to 1 GiB each) and creates none at all when
            // less than one volume's worth is free, refusing every upload. The tests store at
            // most a few hundred MiB per server; volume files grow as written.
            format!("-master.volumeSizeLimitMB={VOLUME_SIZE_MB}"),
            format!("-volume.max={VOLUME_COUNT}"),
        ];
        for (name, port) in [
            ("master", p.master),
            ("volume", p.volume),
            ("filer", p.filer),
            ("s3", p.s3),
            ("admin", p.admin),
        ] {
            args.push(format!("-{name}.port={port}"));
            args.push(format!("-{name}.port.grpc={}", port + GRPC_OFFSET));
        }
        args
    }

    /// Spawns `weed mini` and waits until it serves S3; kills it on failure.
    async fn launch(&mut self) -> io::Result<()> {
        let dir = self.dir.path();
        // Stale unix sockets of a killed run.
        for sock in ["filer.sock", "s3.sock"] {
            let _ = fs::remove_file(dir.join(sock));
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new("bash")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("zdr-seaweed-watchdog")
            .arg(std::process::id().to_string())
            .arg(dir)
            .arg(&self.weed)
            .args(self.args())
            .current_dir(dir)
            // glog writes its weed.*.log files to $TMPDIR: keep them in our dir.
            .env("TMPDIR", dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .process_group(0)
            .spawn()
            .map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!(
                        "SeaweedFS: cannot run bash to start {}: {err}",
                        self.weed.display()
                    ),
                )
            })?;
        self.child = Some(child);
        let result = self.wait_ready().await;
        if result.is_err() {
            self.kill();
        }
        result
    }

    /// Polls until a probe object can be written, read back and deleted.
    async fn wait_ready(&mut self) -> io::Result<()> {
        let started = Instant::now();
        let deadline = started + READY_TIMEOUT;
        let op = self.operator()?;
        let s3_addr = SocketAddr::from((HOST, self.ports.s3));
        loop {
            if let Some(status) = self.exit_status()? {
                return Err(self.failure(&format!(
                    "`weed mini` exited with {status} before S3 was ready"
                )));
            }
            let attempt = tokio::time::timeout(PROBE_TIMEOUT, probe(&op, s3_addr)).await;
            let last_error = match attempt {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(err)) => err,
                Err(_) => format!("probe timed out after {PROBE_TIMEOUT:?}"),
            };
            if Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "S3 on {} not ready after {:?} (last error: {last_error})",
                    self.endpoint(),
                    started.elapsed()
                )));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    /// The exit status if the server process has exited.
    fn exit_status(&mut self) -> io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => child.try_wait(),
            None => Ok(None),
        }
    }

    /// Whether the log says a port was taken (weed exits at once then).
    fn port_clash(&self) -> bool {
        let log = log_tail(&self.log_path(), 16 * 1024);
        log.contains("Port allocation failed")
            || log.contains("is not available")
            || log.contains("address already in use")
    }

    /// An error with `what`, the ports, and the tail of the server log.
    fn failure(&self, what: &str) -> io::Error {
        let p = self.ports;
        let mut msg = format!(
            "SeaweedFS: {what}\n  data dir: {}\n  ports (http; grpc = +{GRPC_OFFSET}): \
             master {} volume {} filer {} s3 {} admin {}\n  log tail ({}):\n",
            self.dir.path().display(),
            p.master,
            p.volume,
            p.filer,
            p.s3,
            p.admin,
            self.log_path().display(),
        );
        for line in log_tail(&self.log_path(), 4096).lines() {
            let _ = writeln!(msg, "    {line}");
        }
        io::Error::other(msg)
    }
}

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One readiness probe: TCP connect, then write / read back / delete an object.
async fn probe(op: &Operator, addr: SocketAddr) -> Result<(), String> {
    tokio::task::spawn_blocking(move || TcpStream::connect_timeout(&addr, Duration::from_secs(1)))
        .await
        .map_err(|err| format!("connect task failed: {err}"))?
        .map_err(|err| format!("connect {addr}: {err}"))?;
    let payload = b"zdr seaweed readiness probe".to_vec();
    op.write(PROBE_OBJECT, payload.clone())
        .await
        .map_err(|err| format!("PUT probe: {err}"))?;
    let read = op
        .read(PROBE_OBJECT)
        .await
        .map_err(|err| format!("GET probe: {err}"))?;
    if read.to_vec() != payload {
        return Err("GET probe returned different bytes".to_string());
    }
    op.delete(PROBE_OBJECT)
        .await
        .map_err(|err| format!("DELETE probe: {err}"))?;
    match op.stat(PROBE_OBJECT).await {
        Err(err) if err.kind() == opendal::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(format!("HEAD probe after delete: {err}")),
        Ok(_) => Err("probe object still visible after delete".to_string()),
    }
}

/// The `weed` executable on `PATH`.
fn find_weed() -> io::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("weed"))
        .find(|candidate| {
            fs::metadata(candidate)
                .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "SeaweedFS `weed` not found: run scripts/install-test-deps.sh",
            )
        })
}

/// A random alphanumeric string.
fn random_token(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// The last `max` bytes of a file (lossy UTF-8), or a note if unreadable.
fn log_tail(path: &Path, max: u64) -> String {
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(max)))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    read().unwrap_or_else(|err| format!("<cannot read {}: {err}>", path.display()))
}
