//! `Stack::drill_project` against the real engine: a PostgreSQL and a Redis container, and an
//! "api" container depending on both whose healthcheck passes only where both datastores
//! answer to their names (on the live default bridge they do not; on the drill's private
//! network their copies do). The drill copies all three onto its own network, restores and
//! verifies the data in the copies, waits for the api copy to become healthy, and removes
//! everything; the live containers are untouched and nothing of the drill is left.

use std::collections::HashMap;
use std::time::Duration;

use zdr::recover::{ContainerRecoveryOptions, StepStatus};
use zdr::{BackupOptions, Config, Progress, Stack};
use zdr_core::{Error, ErrorKind, Result};
use zdr_docker::Docker;
use zdr_docker::bollard::models::{ContainerCreateBody, HealthConfig};
use zdr_docker::bollard::query_parameters::CreateContainerOptionsBuilder;
use zdr_tests::containers::{PgStack, RedisStack, app_body};

const PASSWORD: &str = "pw-drill-project-5e1b";

/// Removes the api container when the test ends.
struct Api(Docker, String);

impl Drop for Api {
    fn drop(&mut self) {
        let (docker, name) = (self.0.clone(), self.1.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async move {
                    let _ = docker.remove(&name, true).await;
                });
            }
        })
        .join();
    }
}

async fn names_with(docker: &Docker, part: &str) -> Result<Vec<String>> {
    let list = docker
        .client()
        .list_containers(Some(
            zdr_docker::bollard::query_parameters::ListContainersOptionsBuilder::new()
                .all(true)
                .build(),
        ))
        .await
        .map_err(|e| Error::unexpected(format!("list containers: {e}")))?;
    let mut names: Vec<String> = list
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .filter(|n| n.contains(part))
        .collect();
    let nets = docker
        .client()
        .list_networks(None::<zdr_docker::bollard::query_parameters::ListNetworksOptions>)
        .await
        .map_err(|e| Error::unexpected(format!("list networks: {e}")))?;
    names.extend(
        nets.into_iter()
            .filter_map(|n| n.name)
            .filter(|n| n.contains(part)),
    );
    Ok(names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_stack_is_drilled_on_a_private_network_and_removed() -> Result<()> {
    let pg = PgStack::start("zdrt-project-db", PASSWORD).await?;
    let redis = RedisStack::start("zdrt-project-cache", PASSWORD).await?;
    let docker = pg.docker.clone();
    pg.sql(
        "CREATE TABLE orders (id int PRIMARY KEY, item text);
         INSERT INTO orders SELECT g, 'item ' || g FROM generate_series(1, 800) g;",
    )
    .await?;
    redis
        .cli(&[
            "EVAL",
            "for i=1,300 do redis.call('SET','k'..i,i) end return 1",
            "0",
        ])
        .await?;
    let api = format!("{}-api", pg.name);
    docker
        .client()
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&api).build()),
            ContainerCreateBody {
                healthcheck: Some(HealthConfig {
                    test: Some(vec![
                        "CMD-SHELL".to_owned(),
                        format!("getent hosts {} && getent hosts {}", pg.name, redis.name),
                    ]),
                    interval: Some(1_000_000_000),
                    timeout: Some(5_000_000_000),
                    retries: Some(3),
                    ..HealthConfig::default()
                }),
                ..app_body()
            },
        )
        .await
        .map_err(|e| Error::unexpected(format!("create {api}: {e}")))?;
    let _api = Api(docker.clone(), api.clone());
    docker.start(&api).await?;

    let dir = tempfile::tempdir().map_err(|e| Error::from_io(e, "tempdir"))?;
    let text = format!(
        r#"
primary = "local"

[tiers.local]
type = "fs"
root = "{root}/tiers/local"

[components.db]
type = "postgres"
host = "127.0.0.1"
port = {pg_port}
user = "postgres"
database = "app"
bin_dir = "/nonexistent/zdr-no-host-client-tools"
runner = "docker"
container = "{pg_name}"
dependents = ["{api}"]

[components.cache]
type = "redis"
host = "127.0.0.1"
port = {redis_port}
runner = "docker"
container = "{redis_name}"
dependents = ["{api}"]

[components.configs]
type = "files"
path = "{root}"
"#,
        root = dir.path().display(),
        pg_port = pg.port,
        pg_name = pg.name,
        redis_port = redis.port,
        redis_name = redis.name,
    );
    let env = [
        (
            "ZDR_COMPONENTS__DB__PASSWORD".to_owned(),
            PASSWORD.to_owned(),
        ),
        (
            "ZDR_COMPONENTS__CACHE__PASSWORD".to_owned(),
            PASSWORD.to_owned(),
        ),
    ];
    let stack = Stack::open(Config::parse(&text, "test", env.clone().into_iter())?).await?;
    let options = ContainerRecoveryOptions {
        health_timeout: Duration::from_secs(120),
        ..ContainerRecoveryOptions::default()
    };

    // No backup yet: refused before anything is made.
    let e = stack
        .drill_project(&options, &Progress::none())
        .await
        .err()
        .ok_or_else(|| Error::unexpected("drilled without backups"))?;
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    // (Copies of this test's containers only: other suites may drill at the same time.)
    assert!(
        !names_with(&docker, "-zdr-drill-")
            .await?
            .iter()
            .any(|n| n.starts_with("/zdrt-project-"))
    );

    stack
        .backup("db", &BackupOptions::default(), &Progress::none())
        .await?;
    stack
        .backup("cache", &BackupOptions::default(), &Progress::none())
        .await?;
    let mut started = HashMap::new();
    for c in [&pg.name, &redis.name, &api] {
        started.insert(c.clone(), docker.status(c).await?.started_at);
    }

    let report = stack.drill_project(&options, &Progress::none()).await?;
    assert!(report.ok, "{report:#?}");
    let steps: Vec<(&str, StepStatus)> = report
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.status))
        .collect();
    assert_eq!(
        steps,
        [
            ("network", StepStatus::Done),
            ("drill-db", StepStatus::Done),
            ("drill-cache", StepStatus::Done),
            ("apps", StepStatus::Done),
            ("teardown", StepStatus::Done)
        ]
    );
    // The api copy became healthy: on the private network both datastore copies answer to
    // the live containers' names (the live api, on the default bridge, never does).
    assert_ne!(
        docker.status(&api).await?.health.as_deref(),
        Some("healthy")
    );
    let apps = &report.steps[3].detail;
    assert!(
        apps.contains("-zdr-drill-") && apps.contains("healthy"),
        "{apps}"
    );
    assert!(
        report
            .to_markdown()
            .contains("the whole stack on a private network")
    );
    assert_eq!(report.stored.len(), 2);
    // Nothing of the drill is left (its copies, its network); the live containers kept
    // running as they were.
    assert_eq!(report.steps[0].id, "network");
    let network = report.steps[0].detail.clone();
    let left: Vec<String> = names_with(&docker, "zdr-drill-")
        .await?
        .into_iter()
        .filter(|n| n.starts_with("/zdrt-project-") || *n == network)
        .collect();
    assert!(left.is_empty(), "{left:?}");
    for (c, t) in &started {
        assert_eq!(&docker.status(c).await?.started_at, t, "{c} was touched");
    }
    assert_eq!(pg.sql("SELECT count(*) FROM orders").await?, "800");

    // A component outside containers only: nothing to copy.
    let local = Config::parse(
        &format!(
            "primary = \"local\"\n[tiers.local]\ntype = \"fs\"\nroot = \"{}/t\"\n[components.configs]\ntype = \"files\"\npath = \"{}\"\n",
            dir.path().display(),
            dir.path().display()
        ),
        "test",
        std::iter::empty(),
    )?;
    let e = Stack::open(local)
        .await?
        .drill_project(&options, &Progress::none())
        .await
        .err()
        .ok_or_else(|| Error::unexpected("drilled a stack without containers"))?;
    assert_eq!(e.kind(), ErrorKind::BadInput, "{e}");
    assert!(e.to_string().contains("runner = \"docker\""), "{e}");
    Ok(())
}
