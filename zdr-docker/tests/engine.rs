//! Against the real Docker engine, with the images of `scripts/build-test-images.sh`
//! (`zdr-test/postgres:current`, `zdr-test/base:current`). Each test uses its own container,
//! volume and network names and removes them at the end, on failure too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zdr_core::{CommandRunner, CommandSpec, Error, ErrorKind, Result, Secret};
use zdr_docker::bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Mount, MountType,
    NetworkCreateRequest, NetworkingConfig, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use zdr_docker::bollard::query_parameters::CreateContainerOptionsBuilder;
use zdr_docker::{ContainerRef, Docker, RecreateOptions, VolumeChoice};

const PG_IMAGE: &str = "zdr-test/postgres:current";
const BASE_IMAGE: &str = "zdr-test/base:current";
const REDIS_IMAGE: &str = "zdr-test/redis:current";
const PASSWORD: &str = "pw-9f2c6d1e-not-in-specs";
const HEALTHY: Duration = Duration::from_secs(90);

fn io(e: std::io::Error) -> Error {
    Error::from_io(e, "test I/O")
}

fn unique(what: &str) -> String {
    format!("zdrt-{what}-{:08x}", rand::random::<u32>())
}

async fn docker() -> Result<Docker> {
    let docker = Docker::connect().await?;
    for image in [PG_IMAGE, BASE_IMAGE] {
        if docker.client().inspect_image(image).await.is_err() {
            return Err(Error::not_found(format!(
                "test image {image} is missing: run scripts/build-test-images.sh first"
            )));
        }
    }
    Ok(docker)
}

/// Removes what a test made, on success and on failure (from its own thread and runtime:
/// `Drop` cannot wait on the test's runtime).
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    volumes: Vec<String>,
    networks: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let containers = std::mem::take(&mut self.containers);
        let volumes = std::mem::take(&mut self.volumes);
        let networks = std::mem::take(&mut self.networks);
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(docker) = Docker::connect().await else {
                    return;
                };
                for c in &containers {
                    let _ = docker.remove(c, true).await;
                }
                for v in &volumes {
                    let _ = docker.remove_volume(v).await;
                }
                for n in &networks {
                    let _ = docker.client().remove_network(n).await;
                }
            });
        });
        let _ = thread.join();
    }
}

struct Pg<'a> {
    name: &'a str,
    volume: &'a str,
    network: Option<(&'a str, &'a str)>,
    labels: HashMap<String, String>,
    restart: bool,
}

/// `docker run -d` of the PostgreSQL test image.
async fn run_pg(docker: &Docker, pg: Pg<'_>) -> Result<()> {
    let body = ContainerCreateBody {
        image: Some(PG_IMAGE.to_owned()),
        env: Some(vec![
            format!("POSTGRES_PASSWORD={PASSWORD}"),
            "POSTGRES_DB=app".to_owned(),
        ]),
        labels: Some(pg.labels),
        exposed_ports: Some(vec!["5432/tcp".to_owned()]),
        host_config: Some(HostConfig {
            mounts: Some(vec![Mount {
                target: Some("/var/lib/postgresql/data".to_owned()),
                source: Some(pg.volume.to_owned()),
                typ: Some(MountType::VOLUME),
                ..Mount::default()
            }]),
            // Published on a free host port of the loopback address.
            port_bindings: Some(HashMap::from([(
                "5432/tcp".to_owned(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".to_owned()),
                    host_port: Some(String::new()),
                }]),
            )])),
            restart_policy: pg.restart.then_some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ALWAYS),
                maximum_retry_count: None,
            }),
            network_mode: pg.network.map(|(n, _)| n.to_owned()),
            ..HostConfig::default()
        }),
        networking_config: pg.network.map(|(n, alias)| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                n.to_owned(),
                EndpointSettings {
                    aliases: Some(vec![alias.to_owned()]),
                    ..EndpointSettings::default()
                },
            )])),
        }),
        ..ContainerCreateBody::default()
    };
    let opts = CreateContainerOptionsBuilder::new().name(pg.name).build();
    docker
        .client()
        .create_container(Some(opts), body)
        .await
        .map_err(|e| Error::unexpected(format!("create {}: {e}", pg.name)))?;
    docker.start(pg.name).await
}

/// Runs `spec` through `runner`, feeding `input` to stdin; returns exit code, stdout, stderr.
async fn run(
    runner: &dyn CommandRunner,
    spec: CommandSpec,
    input: Option<Vec<u8>>,
) -> Result<(Option<i32>, Vec<u8>, String)> {
    let spec = if input.is_some() {
        spec.with_stdin()
    } else {
        spec
    };
    let mut cmd = runner.spawn(&spec).await?;
    let stdin = cmd.stdin.take();
    let writer = tokio::spawn(async move {
        if let (Some(mut w), Some(data)) = (stdin, input) {
            // In pieces, as a stream.
            for chunk in data.chunks(16 * 1024) {
                w.write_all(chunk).await?;
            }
            w.shutdown().await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut out = Vec::new();
    let mut err = String::new();
    let (mut o, mut e) = (cmd.stdout.take(), cmd.stderr.take());
    let read_out = async {
        if let Some(o) = o.as_mut() {
            o.read_to_end(&mut out).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let read_err = async {
        if let Some(e) = e.as_mut() {
            e.read_to_string(&mut err).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let (a, b) = tokio::join!(read_out, read_err);
    a.map_err(io)?;
    b.map_err(io)?;
    writer
        .await
        .map_err(|e| Error::unexpected(e.to_string()))?
        .map_err(io)?;
    let exit = cmd.handle.wait().await?;
    Ok((exit.code, out, err))
}

fn psql(db: &str) -> CommandSpec {
    CommandSpec::new("psql").args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-U",
        "postgres",
        "-d",
        db,
        "-At",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runner_streams_sql_in_and_a_dump_out() -> Result<()> {
    let docker = docker().await?;
    let name = unique("exec");
    let mut cleanup = Cleanup::default();
    cleanup.containers.push(name.clone());
    cleanup.volumes.push(name.clone());
    run_pg(
        &docker,
        Pg {
            name: &name,
            volume: &name,
            network: None,
            labels: HashMap::new(),
            restart: false,
        },
    )
    .await?;
    docker.wait_healthy(&name, None, HEALTHY).await?;
    let runner = docker.exec_runner(&name);
    assert_eq!(runner.describe(), format!("docker exec {name}"));

    // SQL streamed into psql's stdin: 20k rows, over 1 MB of statements.
    let mut sql = b"CREATE TABLE items (id int PRIMARY KEY, body text);\n".to_vec();
    for batch in 0..200 {
        sql.extend_from_slice(b"INSERT INTO items VALUES ");
        for i in batch * 100..(batch + 1) * 100 {
            let sep = if i % 100 == 99 { ";\n" } else { ",\n" };
            sql.extend_from_slice(format!("({i}, 'row {i} {}'){sep}", "x".repeat(30)).as_bytes());
        }
    }
    assert!(sql.len() > 1_000_000);
    let (code, _, err) = run(&runner, psql("app"), Some(sql)).await?;
    assert_eq!(code, Some(0), "psql: {err}");

    // A dump read out of pg_dump's stdout, then piped into a new database.
    let (code, dump, err) = run(
        &runner,
        CommandSpec::new("pg_dump").args(["-U", "postgres", "-d", "app"]),
        None,
    )
    .await?;
    assert_eq!(code, Some(0), "pg_dump: {err}");
    let text = String::from_utf8_lossy(&dump);
    assert!(
        text.contains("CREATE TABLE public.items"),
        "{}",
        &text[..text.len().min(500)]
    );
    assert!(text.contains("19999\trow 19999"));
    let (code, _, err) = run(
        &runner,
        psql("app").args(["-c", "CREATE DATABASE copy"]),
        None,
    )
    .await?;
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = run(&runner, psql("copy"), Some(dump)).await?;
    assert_eq!(code, Some(0), "restore: {err}");
    let (code, out, err) = run(
        &runner,
        psql("copy").args(["-c", "SELECT count(*), sum(id) FROM items"]),
        None,
    )
    .await?;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(String::from_utf8_lossy(&out).trim(), "20000|199990000");

    // A failing command: its exit code and stderr come through.
    let (code, _, err) = run(
        &runner,
        psql("app").args(["-c", "SELECT * FROM no_such_table"]),
        None,
    )
    .await?;
    assert_eq!(code, Some(1));
    assert!(err.contains("no_such_table"), "{err}");
    let (code, _, _) = run(&runner, CommandSpec::new("sh").args(["-c", "exit 7"]), None).await?;
    assert_eq!(code, Some(7));

    // The environment (secrets too) reaches the command, not its arguments; so does cwd.
    let mut spec = CommandSpec::new("sh")
        .args([
            "-c",
            "printf '%s|%s|' \"$PLAIN\" \"$SECRET_X\"; pwd; cat /proc/self/cmdline",
        ])
        .env("PLAIN", "p")
        .secret_env("SECRET_X", "s3cr3t-value");
    spec.cwd = Some("/tmp".into());
    let (code, out, _) = run(&runner, spec, None).await?;
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("p|s3cr3t-value|/tmp\n"), "{out}");
    assert_eq!(out.matches("s3cr3t-value").count(), 1, "{out}");

    // Runner-level variables replace the spec's (PGHOST inside the container).
    let inner = runner.clone().with_env("PLAIN", "inside");
    let (code, out, _) = run(
        &inner,
        CommandSpec::new("sh")
            .args(["-c", "printf %s \"$PLAIN\""])
            .env("PLAIN", "host"),
        None,
    )
    .await?;
    assert_eq!(
        (code, String::from_utf8_lossy(&out).as_ref()),
        (Some(0), "inside")
    );

    // A program the container lacks is NotFound at spawn, naming it.
    let e = runner
        .spawn(&CommandSpec::new("pg_no_such_tool"))
        .await
        .err()
        .ok_or_else(|| Error::unexpected("a missing program ran"))?;
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("pg_no_such_tool"), "{e}");
    assert!(e.to_string().contains(&name), "{e}");

    // Killed on drop, as a local child.
    let marker = "sleep 31337";
    let running = runner
        .spawn(&CommandSpec::new("sleep").args(["31337"]))
        .await?;
    let ps = CommandSpec::new("sh").args([
        "-c",
        "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done",
    ]);
    // The exec'd process shows up once the engine has started it.
    let start = Instant::now();
    loop {
        let (_, out, _) = run(&runner, ps.clone(), None).await?;
        if String::from_utf8_lossy(&out).contains(marker) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the command never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(running);
    let start = Instant::now();
    loop {
        let (_, out, _) = run(&runner, ps.clone(), None).await?;
        if !String::from_utf8_lossy(&out).contains(marker) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not killed on drop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // kill() stops it too, and the container keeps running.
    let mut running = runner
        .spawn(&CommandSpec::new("sleep").args(["31338"]))
        .await?;
    running.handle.kill().await?;
    let (_, out, _) = run(&runner, ps, None).await?;
    assert!(!String::from_utf8_lossy(&out).contains("sleep 31338"));
    assert!(docker.status(&name).await?.running);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_container_restarts_and_wait_healthy_sees_the_new_start() -> Result<()> {
    let docker = docker().await?;
    let name = unique("kill");
    let mut cleanup = Cleanup::default();
    cleanup.containers.push(name.clone());
    cleanup.volumes.push(name.clone());
    run_pg(
        &docker,
        Pg {
            name: &name,
            volume: &name,
            network: None,
            labels: HashMap::new(),
            restart: true,
        },
    )
    .await?;
    let before = docker.wait_healthy(&name, None, HEALTHY).await?;
    assert_eq!(before.health.as_deref(), Some("healthy"));
    let t0 = before
        .started_at
        .ok_or_else(|| Error::unexpected("no StartedAt"))?;
    // `docker kill`: the engine counts it as a manual stop (no automatic restart); started
    // again, the wait sees the new start.
    docker.kill(&name, "KILL").await?;
    let killed = docker.status(&name).await?;
    assert!(!killed.running);
    assert_eq!(killed.exit_code, Some(137));
    docker.start(&name).await?;
    let after = docker.wait_healthy(&name, Some(t0), HEALTHY).await?;
    let t1 = after
        .started_at
        .ok_or_else(|| Error::unexpected("no StartedAt"))?;
    assert!(t1 > t0, "{t1} after {t0}");
    assert!(after.running);
    assert_eq!(after.health.as_deref(), Some("healthy"));

    // A crash (the main process killed from outside): restarted by its restart policy; the
    // engine may still read "healthy" from before, which the wait does not take.
    let pid = docker
        .inspect(&name)
        .await?
        .state
        .and_then(|s| s.pid)
        .ok_or_else(|| Error::unexpected("no pid"))?;
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .map_err(io)?;
    assert!(killed.success());
    let crashed = docker.wait_healthy(&name, Some(t1), HEALTHY).await?;
    let t2 = crashed
        .started_at
        .ok_or_else(|| Error::unexpected("no StartedAt"))?;
    assert!(t2 > t1, "{t2} after {t1}");
    let t1 = t2;
    // And the server answers.
    let (code, out, err) = run(
        &docker.exec_runner(&name),
        psql("app").args(["-c", "SELECT 1"]),
        None,
    )
    .await?;
    assert_eq!(
        (code, String::from_utf8_lossy(&out).trim()),
        (Some(0), "1"),
        "{err}"
    );

    // Stop / start / restart through the library each give a new start.
    docker.restart(&name, Some(Duration::from_secs(10))).await?;
    let again = docker.wait_healthy(&name, Some(t1), HEALTHY).await?;
    assert!(again.started_at > Some(t1));
    docker.stop(&name, Some(Duration::from_secs(10))).await?;
    assert!(!docker.status(&name).await?.running);
    // Stopped: a wait for a new start times out naming the container.
    let e = docker
        .wait_healthy(&name, again.started_at, Duration::from_millis(500))
        .await
        .err()
        .ok_or_else(|| Error::unexpected("a stopped container was healthy"))?;
    assert!(e.to_string().contains(&name), "{e}");
    docker.start(&name).await?;
    docker
        .wait_healthy(&name, again.started_at, HEALTHY)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_recorded_without_secrets_recreates_the_container_on_a_fresh_volume() -> Result<()> {
    let docker = docker().await?;
    let name = unique("spec");
    let project = unique("proj");
    let network = unique("net");
    let fresh = format!("{name}-fresh");
    let copy = format!("{name}-copy");
    let mut cleanup = Cleanup::default();
    cleanup.containers.push(name.clone());
    cleanup
        .volumes
        .extend([name.clone(), fresh.clone(), copy.clone()]);
    cleanup.networks.push(network.clone());
    docker
        .client()
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            ..NetworkCreateRequest::default()
        })
        .await
        .map_err(|e| Error::unexpected(format!("network: {e}")))?;
    run_pg(
        &docker,
        Pg {
            name: &name,
            volume: &name,
            network: Some((&network, "db")),
            labels: HashMap::from([
                (zdr_docker::LABEL_PROJECT.to_owned(), project.clone()),
                (zdr_docker::LABEL_SERVICE.to_owned(), "db".to_owned()),
            ]),
            restart: true,
        },
    )
    .await?;

    // Found through its compose labels.
    let listed = docker.compose_containers(&project, None).await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].service.as_deref(), Some("db"));
    let found = docker
        .resolve(&ContainerRef::Service {
            project: project.clone(),
            service: "db".to_owned(),
        })
        .await?;
    assert_eq!(found, name);
    let e = docker
        .resolve(&ContainerRef::Service {
            project: project.clone(),
            service: "cache".to_owned(),
        })
        .await
        .err()
        .ok_or_else(|| Error::unexpected("an unknown service resolved"))?;
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(
        e.to_string().contains("cache") && e.to_string().contains(&project),
        "{e}"
    );

    docker.wait_healthy(&name, None, HEALTHY).await?;
    let runner = docker.exec_runner(&name);
    let (code, _, err) = run(
        &runner,
        psql("app").args(["-c", "CREATE TABLE old_data (x int)"]),
        None,
    )
    .await?;
    assert_eq!(code, Some(0), "{err}");

    // The spec: secrets by name only.
    let spec = docker.spec(&name).await?;
    let json = serde_json::to_string_pretty(&spec).map_err(|e| Error::unexpected(e.to_string()))?;
    assert!(!json.contains(PASSWORD), "{json}");
    assert_eq!(spec.secret_names(), vec!["POSTGRES_PASSWORD"]);
    assert_eq!(spec.image, PG_IMAGE);
    assert_eq!(spec.stop_signal.as_deref(), Some("SIGINT"));
    assert!(spec.healthcheck.is_some());
    assert_eq!(
        spec.restart_policy.as_ref().map(|r| r.name.as_str()),
        Some("always")
    );
    assert_eq!(spec.networks.len(), 1);
    assert_eq!(spec.networks[0].aliases, vec!["db".to_owned()]);
    assert_eq!(
        spec.mount("/var/lib/postgresql/data")
            .and_then(|m| m.source.as_deref()),
        Some(name.as_str())
    );
    assert_eq!(spec.ports.len(), 1);
    let spec: zdr_docker::ContainerSpec =
        serde_json::from_str(&json).map_err(|e| Error::unexpected(e.to_string()))?;
    let secrets = docker.secrets_from(&name, &spec).await?;
    assert_eq!(
        secrets.get("POSTGRES_PASSWORD").map(Secret::expose),
        Some(PASSWORD)
    );

    // The volume in use cannot be removed.
    let e = docker
        .remove_volume(&name)
        .await
        .err()
        .ok_or_else(|| Error::unexpected("a volume in use was removed"))?;
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains(&name), "{e}");

    // The crash: container gone; the failed volume kept aside (copy) and exported for forensics.
    docker.remove(&name, true).await?;
    docker.copy_volume(&name, &copy, BASE_IMAGE).await?;
    let mut tar_bytes = Vec::new();
    docker
        .export_volume(&copy, BASE_IMAGE)
        .await?
        .read_to_end(&mut tar_bytes)
        .await
        .map_err(io)?;
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut names = Vec::new();
    for entry in archive.entries().map_err(io)? {
        let entry = entry.map_err(io)?;
        names.push(entry.path().map_err(io)?.display().to_string());
    }
    assert!(
        names
            .iter()
            .any(|n| n.trim_start_matches("./") == "PG_VERSION"),
        "{:?}",
        &names[..names.len().min(20)]
    );
    docker.remove_volume(&name).await?;

    // Recreating needs the secret: a missing one is named.
    let options = RecreateOptions::new().volume(
        "/var/lib/postgresql/data",
        VolumeChoice::Fresh(fresh.clone()),
    );
    let e = docker
        .recreate(&spec, &options)
        .await
        .err()
        .ok_or_else(|| Error::unexpected("recreated without the secret"))?;
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert!(e.to_string().contains("POSTGRES_PASSWORD"), "{e}");
    assert!(!e.to_string().contains(PASSWORD));
    // The recorded volume is gone: not silently made anew.
    let e = docker
        .recreate(&spec, &RecreateOptions::new().secrets(secrets.clone()))
        .await
        .err()
        .ok_or_else(|| Error::unexpected("recreated on a lost volume"))?;
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains(&name), "{e}");

    let started = Instant::now();
    docker.recreate(&spec, &options.secrets(secrets)).await?;
    docker.wait_healthy(&name, None, HEALTHY).await?;
    let healthy_after = started.elapsed();
    let again = docker.spec(&name).await?;
    assert_eq!(again.networks, spec.networks, "aliases kept");
    assert_eq!(again.labels, spec.labels);
    assert_eq!(again.restart_policy, spec.restart_policy);
    assert_eq!(
        again
            .mount("/var/lib/postgresql/data")
            .and_then(|m| m.source.clone()),
        Some(fresh.clone())
    );
    // A fresh volume: initdb ran again, the old table is not there; the password works over
    // the network alias (scram, not the local trust).
    let (code, out, err) = run(
        &runner,
        psql("app")
            .args([
                "-h",
                "db",
                "-c",
                "SELECT count(*) FROM pg_tables WHERE tablename = 'old_data'",
            ])
            .secret_env("PGPASSWORD", PASSWORD),
        None,
    )
    .await?;
    assert_eq!(
        (code, String::from_utf8_lossy(&out).trim()),
        (Some(0), "0"),
        "{err}"
    );
    let (code, _, err) = run(
        &runner,
        psql("app")
            .args(["-h", "db", "-c", "SELECT 1"])
            .secret_env("PGPASSWORD", "wrong"),
        None,
    )
    .await?;
    assert_ne!(code, Some(0));
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(healthy_after < HEALTHY);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_what_failed() -> Result<()> {
    // A socket that does not exist, and one nobody listens on.
    let missing = "/tmp/zdr-test-no-such-docker.sock";
    let e = Docker::connect_to(&format!("unix://{missing}"))
        .await
        .err()
        .ok_or_else(|| Error::unexpected("connected to nothing"))?;
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.to_string().contains(missing), "{e}");
    let dir = std::env::temp_dir().join(unique("sock"));
    std::fs::create_dir_all(&dir).map_err(io)?;
    let dead = dir.join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).map_err(io)?);
    let e = Docker::connect_to(&dead.display().to_string())
        .await
        .err()
        .ok_or_else(|| Error::unexpected("connected to a dead socket"))?;
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(e.kind(), ErrorKind::Io);
    assert!(e.to_string().contains(&dead.display().to_string()), "{e}");
    assert!(e.hint().is_some());

    let docker = docker().await?;
    assert_eq!(docker.api_version(), "1.41", "negotiated with the engine");
    let ghost = unique("ghost");
    for e in [
        docker.inspect(&ghost).await.err(),
        docker.stop(&ghost, None).await.err(),
        docker.kill(&ghost, "KILL").await.err(),
        docker.remove(&ghost, true).await.err(),
        docker.remove_volume(&ghost).await.err(),
        docker
            .wait_healthy(&ghost, None, Duration::from_secs(1))
            .await
            .err(),
        docker.export_volume(&ghost, BASE_IMAGE).await.err(),
    ] {
        let e = e.ok_or_else(|| Error::unexpected("a missing object was found"))?;
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains(&ghost), "{e}");
    }
    let e = docker
        .exec_runner(&ghost)
        .spawn(&CommandSpec::new("true"))
        .await
        .err()
        .ok_or_else(|| Error::unexpected("ran in a missing container"))?;
    assert!(e.to_string().contains(&ghost), "{e}");

    // A container that never becomes healthy: the wait times out naming it and its probe.
    let name = unique("sick");
    let mut cleanup = Cleanup::default();
    cleanup.containers.push(name.clone());
    let body = ContainerCreateBody {
        image: Some(BASE_IMAGE.to_owned()),
        cmd: Some(vec!["sleep".to_owned(), "600".to_owned()]),
        healthcheck: Some(HealthConfig {
            test: Some(vec![
                "CMD-SHELL".to_owned(),
                "echo probe-says-no; false".to_owned(),
            ]),
            interval: Some(200_000_000),
            timeout: Some(1_000_000_000),
            retries: Some(1),
            ..HealthConfig::default()
        }),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_owned()),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    docker
        .client()
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            body,
        )
        .await
        .map_err(|e| Error::unexpected(format!("create: {e}")))?;
    docker.start(&name).await?;
    let started = Instant::now();
    let e = docker
        .wait_healthy(&name, None, Duration::from_secs(3))
        .await
        .err()
        .ok_or_else(|| Error::unexpected("a failing healthcheck passed"))?;
    assert!(started.elapsed() < Duration::from_secs(6));
    assert_eq!(e.kind(), ErrorKind::Source);
    let text = e.to_string();
    assert!(text.contains(&name), "{text}");
    assert!(text.contains("unhealthy"), "{text}");
    assert!(text.contains("probe-says-no"), "{text}");
    Ok(())
}

/// A password on the command line (`redis-server --requirepass`, and the healthcheck's
/// `redis-cli -a`) is recorded by name only, read back from the live container, and put back
/// when the container is recreated; without its value the recreation is refused before
/// anything is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_secrets_are_recorded_by_name_and_put_back() -> Result<()> {
    let docker = docker().await?;
    if docker.client().inspect_image(REDIS_IMAGE).await.is_err() {
        return Err(Error::not_found(format!(
            "test image {REDIS_IMAGE} is missing: run scripts/build-test-images.sh first"
        )));
    }
    let name = unique("cmdsecret");
    let volume = format!("{name}-data");
    let fresh = format!("{name}-fresh");
    let mut cleanup = Cleanup::default();
    cleanup.containers.push(name.clone());
    cleanup.volumes.extend([volume.clone(), fresh.clone()]);
    let body = ContainerCreateBody {
        image: Some(REDIS_IMAGE.to_owned()),
        cmd: Some(vec![
            "redis-server".to_owned(),
            "--requirepass".to_owned(),
            PASSWORD.to_owned(),
        ]),
        healthcheck: Some(bollard::models::HealthConfig {
            test: Some(vec![
                "CMD-SHELL".to_owned(),
                format!("redis-cli -a {PASSWORD} --no-auth-warning ping | grep -q PONG"),
            ]),
            interval: Some(1_000_000_000),
            retries: Some(30),
            ..Default::default()
        }),
        host_config: Some(HostConfig {
            mounts: Some(vec![Mount {
                target: Some("/data".to_owned()),
                source: Some(volume.clone()),
                typ: Some(MountType::VOLUME),
                ..Mount::default()
            }]),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    };
    let opts = CreateContainerOptionsBuilder::new().name(&name).build();
    docker
        .client()
        .create_container(Some(opts), body)
        .await
        .map_err(|e| Error::unexpected(format!("create {name}: {e}")))?;
    docker.start(&name).await?;
    docker.wait_healthy(&name, None, HEALTHY).await?;

    let spec = docker.spec(&name).await?;
    let json = serde_json::to_string(&spec).map_err(|e| Error::unexpected(e.to_string()))?;
    assert!(!json.contains(PASSWORD), "{json}");
    let mut names = spec.secret_names();
    names.sort_unstable();
    assert_eq!(names, vec!["REDISCLI_AUTH", "REQUIREPASS"]);
    assert_eq!(
        spec.command
            .as_deref()
            .and_then(|c| c.get(2))
            .map(String::as_str),
        Some(zdr_docker::placeholder("REQUIREPASS").as_str())
    );
    let secrets = docker.secrets_from(&name, &spec).await?;
    assert_eq!(
        secrets.get("REQUIREPASS").map(Secret::expose),
        Some(PASSWORD)
    );
    assert_eq!(
        secrets.get("REDISCLI_AUTH").map(Secret::expose),
        Some(PASSWORD)
    );
    docker.remove(&name, true).await?;

    // Without the values: refused, and no container or fresh volume made.
    let on_fresh = zdr_docker::RecreateOptions::new()
        .volume("/data", zdr_docker::VolumeChoice::Fresh(fresh.clone()));
    let e = docker
        .recreate(&spec, &on_fresh)
        .await
        .err()
        .ok_or_else(|| Error::unexpected("recreated without the password"))?;
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    assert!(
        e.to_string().contains("REQUIREPASS") || e.to_string().contains("REDISCLI_AUTH"),
        "{e}"
    );
    assert!(docker.inspect(&name).await.is_err(), "no container made");
    assert!(!docker.volume_exists(&fresh).await?, "no fresh volume made");

    // With them: the password is back on the command line and in the healthcheck.
    docker.recreate(&spec, &on_fresh.secrets(secrets)).await?;
    docker.wait_healthy(&name, None, HEALTHY).await?;
    let c = docker.inspect(&name).await?;
    let cmd = c.config.and_then(|c| c.cmd).unwrap_or_default();
    assert_eq!(cmd.get(2).map(String::as_str), Some(PASSWORD), "{cmd:?}");
    Ok(())
}
