//! A PostgreSQL database that lives only inside a container (the image of
//! `scripts/build-test-images.sh`), backed up and restored through the facade with
//! `runner = "docker"`: `pg_dump`, `pg_restore` and `psql` run inside the container. The
//! component's `bin_dir` names a directory that does not exist, so any use of host tools
//! fails (the same config without the runner proves it).

use std::collections::HashMap;
use std::time::Duration;

use zdr::docker::bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use zdr::docker::bollard::query_parameters::CreateContainerOptionsBuilder;
use zdr::docker::{ContainerRef, Docker};
use zdr::{BackupOptions, Config, Progress, RestoreOptions, RunnerConfig, Stack};
use zdr_core::{Error, ErrorKind, Result};
use zdr_tests::containers::psql as sql;

const PG_IMAGE: &str = "zdr-test/postgres:current";
const PASSWORD: &str = "pw-docker-runner-test";

/// Removes the test's container and volume, on failure too.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let name = self.0.clone();
        let thread = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(docker) = Docker::connect().await {
                    let _ = docker.remove(&name, true).await;
                    let _ = docker.remove_volume(&name).await;
                }
            });
        });
        let _ = thread.join();
    }
}

fn config(dir: &std::path::Path, port: &str, runner: &str) -> Result<Config> {
    let text = format!(
        r#"
primary = "local"

[tiers.local]
type = "fs"
root = "{root}/tiers/local"

[components.db]
type = "postgres"
host = "127.0.0.1"
port = {port}
user = "postgres"
database = "app"
bin_dir = "/nonexistent/zdr-no-host-client-tools"
{runner}
"#,
        root = dir.display()
    );
    Config::parse(
        &text,
        "test",
        [(
            "ZDR_COMPONENTS__DB__PASSWORD".to_owned(),
            PASSWORD.to_owned(),
        )]
        .into_iter(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_in_a_container_backed_up_and_restored_with_tools_inside_it() -> Result<()> {
    let docker = Docker::connect().await?;
    if docker.client().inspect_image(PG_IMAGE).await.is_err() {
        return Err(Error::not_found(format!(
            "test image {PG_IMAGE} is missing: run scripts/build-test-images.sh first"
        )));
    }
    let name = format!("zdrt-facade-{:08x}", rand::random::<u32>());
    let _cleanup = Cleanup(name.clone());
    let body = ContainerCreateBody {
        image: Some(PG_IMAGE.to_owned()),
        env: Some(vec![
            format!("POSTGRES_PASSWORD={PASSWORD}"),
            "POSTGRES_DB=app".to_owned(),
        ]),
        exposed_ports: Some(vec!["5432/tcp".to_owned()]),
        host_config: Some(HostConfig {
            binds: Some(vec![format!("{name}:/var/lib/postgresql/data")]),
            port_bindings: Some(HashMap::from([(
                "5432/tcp".to_owned(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".to_owned()),
                    host_port: Some(String::new()),
                }]),
            )])),
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
        .map_err(|e| Error::unexpected(format!("create {name}: {e}")))?;
    docker.start(&name).await?;
    docker
        .wait_healthy(&name, None, Duration::from_secs(90))
        .await?;
    let port = docker
        .inspect(&name)
        .await?
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|p| p.get("5432/tcp").cloned().flatten())
        .and_then(|b| b.first().and_then(|b| b.host_port.clone()))
        .ok_or_else(|| Error::unexpected("no published port"))?;

    let inside = docker.exec_runner(&name);
    sql(
        &inside,
        "CREATE TABLE orders (id int PRIMARY KEY, item text);
         INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 1000) g;",
    )
    .await?;

    let dir = tempfile::tempdir().map_err(|e| Error::from_io(e, "tempdir"))?;
    let container_runner = format!("runner = \"docker\"\ncontainer = \"{name}\"");

    // Without the runner the host tools are asked for, and there are none in bin_dir.
    let local = Stack::open(config(dir.path(), &port, "")?).await?;
    let e = local
        .backup("db", &BackupOptions::default(), &Progress::none())
        .await
        .err()
        .ok_or_else(|| Error::unexpected("a backup ran without client tools"))?;
    assert!(e.to_string().contains("pg_dump"), "{e}");

    let docker_config = config(dir.path(), &port, &container_runner)?;
    assert_eq!(
        docker_config.runners.get("db"),
        Some(&RunnerConfig::Docker {
            container: ContainerRef::Name(name.clone()),
            user: None,
            host: "127.0.0.1".to_owned(),
            port: 5432,
            dependents: Vec::new(),
        })
    );
    let stack = Stack::open(docker_config).await?;
    let backup = stack
        .backup("db", &BackupOptions::default(), &Progress::none())
        .await?;

    // The data damaged, then restored by the safe path (side database, verify, swap).
    sql(
        &inside,
        "DELETE FROM orders WHERE id > 10; DROP TABLE IF EXISTS nothing;",
    )
    .await?;
    assert_eq!(sql(&inside, "SELECT count(*) FROM orders").await?, "10");
    let report = stack
        .restore("db", &RestoreOptions::default(), &Progress::none())
        .await?;
    assert_eq!(report.backup.id, backup.backup.id);
    assert!(report.verify.is_ok(), "{:?}", report.verify.problems);
    assert_eq!(
        sql(&inside, "SELECT count(*), sum(id) FROM orders").await?,
        "1000|500500"
    );

    // An unknown container is named when the operation starts.
    let ghost = format!("{name}-ghost");
    let stack = Stack::open(config(
        dir.path(),
        &port,
        &format!("runner = \"docker\"\ncontainer = \"{ghost}\""),
    )?)
    .await?;
    let e = stack
        .backup("db", &BackupOptions::default(), &Progress::none())
        .await
        .err()
        .ok_or_else(|| Error::unexpected("backed up through a missing container"))?;
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains(&ghost), "{e}");
    Ok(())
}

#[test]
fn runner_keys_are_checked() {
    let dir = std::path::Path::new("/tmp");
    for (keys, expect) in [
        ("runner = \"docker\"", "exactly one of container"),
        (
            "runner = \"docker\"\nservice = \"db\"",
            "[docker] has no project",
        ),
        ("runner = \"podman\"\ncontainer = \"x\"", "unknown runner"),
        ("container = \"x\"", "applies to runner = \"docker\" only"),
    ] {
        let e = config(dir, "5432", keys).err();
        let text = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains(expect), "{keys}: {text}");
    }
    let text = "primary = \"l\"\n[docker]\nproject = \"zentoria\"\n[tiers.l]\ntype = \"fs\"\nroot = \"/tmp/x\"\n\
         [components.db]\ntype = \"postgres\"\ndatabase = \"app\"\nrunner = \"docker\"\nservice = \"db\"\n\
         exec_user = \"postgres\"\ncontainer_host = \"/var/run/postgresql\"\n";
    let config = Config::parse(text, "t", std::iter::empty());
    let runner = config.ok().and_then(|c| c.runners.get("db").cloned());
    assert_eq!(
        runner,
        Some(RunnerConfig::Docker {
            container: ContainerRef::Service {
                project: "zentoria".to_owned(),
                service: "db".to_owned()
            },
            user: Some("postgres".to_owned()),
            host: "/var/run/postgresql".to_owned(),
            port: 5432,
            dependents: Vec::new(),
        })
    );
}
