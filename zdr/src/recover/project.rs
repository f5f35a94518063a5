//! The whole stack as a drill: every component that runs in a container, and the containers
//! that depend on them, copied onto a private network of their own, where the copies answer
//! to the service names — restored, verified, the app copies started against them and waited
//! healthy, then everything removed. The live containers, volumes and networks are never
//! touched.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use chrono::Utc;
use zdr_core::{BackupSelector, Error, ErrorKind, Progress, Result};
use zdr_docker::{ContainerSpec, Docker, NetworkSpec, RecreateOptions, VolumeChoice};

use super::system::{SystemDrillReport, rank};
use super::{
    ContainerRecoveryOptions, DRILL_LABEL, DRILL_OWNER_LABEL, PlanStep, Prepared, RecoveryMethod,
    RestoredRecord, Run, drill_copy, remove_abandoned_copies,
};
use crate::adapter::RestoreOptions;
use crate::config::RunnerConfig;
use crate::stack::Stack;

/// The label value of a project drill's app copies and network.
const APP_LABEL: &str = "project-app";
const STEP_NETWORK: &str = "network";
const STEP_APPS: &str = "apps";
const STEP_TEARDOWN: &str = "teardown";

/// The names a container answers to on its networks: its aliases, its compose service and
/// its own name — what the other containers of the stack reach it by.
fn names_of(spec: &ContainerSpec) -> Vec<String> {
    let mut names: BTreeSet<String> = spec
        .networks
        .iter()
        .flat_map(|n| n.aliases.iter().cloned())
        .collect();
    if let Some(service) = spec.labels.get(zdr_docker::LABEL_SERVICE) {
        names.insert(service.clone());
    }
    names.insert(spec.name.clone());
    names.into_iter().collect()
}

/// A drill copy of `spec` on network `net`, answering there to the names the original answers
/// to elsewhere (never on the live networks).
fn copy_on(
    spec: &ContainerSpec,
    label: &str,
    stamp: &str,
    net: &str,
) -> Result<(ContainerSpec, Vec<String>, RecreateOptions)> {
    let (mut copy, volumes) = drill_copy(spec, label, stamp)?;
    copy.network_mode = Some(net.to_owned());
    copy.networks = vec![NetworkSpec {
        name: net.to_owned(),
        aliases: names_of(spec),
    }];
    let mut recreate = RecreateOptions::new();
    for m in &copy.mounts {
        if let Some(v) = m.source.as_ref().filter(|v| volumes.contains(v)) {
            recreate = recreate.volume(m.target.clone(), VolumeChoice::Fresh(v.clone()));
        }
    }
    Ok((copy, volumes, recreate))
}

/// What a project drill made, removed at the end whatever happened.
#[derive(Default)]
struct Made {
    containers: Vec<String>,
    volumes: Vec<String>,
    network: Option<String>,
}

impl Made {
    async fn teardown(&self, docker: &Docker) -> Result<String> {
        for c in &self.containers {
            match docker.remove(c, true).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        for v in &self.volumes {
            docker.remove_abandoned_helpers(v).await?;
            if docker.volume_exists(v).await? {
                docker.remove_volume(v).await?;
            }
        }
        if let Some(n) = &self.network {
            docker.remove_network(n).await?;
        }
        Ok(format!(
            "removed {} container(s), {} volume(s){}",
            self.containers.len(),
            self.volumes.len(),
            self.network
                .as_ref()
                .map(|n| format!(" and network {n}"))
                .unwrap_or_default()
        ))
    }
}

impl Stack {
    /// The whole stack as a drill, the live containers never touched: a private network
    /// (`zdr-drill-<time>`); on it, a copy of each component's container (those with
    /// `runner = "docker"`, in recovery order) answering to the names the original answers to
    /// (its aliases, compose service and container name), on fresh volumes and free host
    /// ports, waited healthy, the newest usable backup restored into it and verified; then a
    /// copy of each container that depends on them (`dependents`, compose `depends_on`), on
    /// the same network, started and waited healthy — so the apps run against the restored
    /// data; then everything removed, also when a step failed. Copies and networks a killed
    /// project drill left are removed first. The report (`drill-project-<time>`) is stored
    /// like the system drill's.
    ///
    /// # Errors
    /// No component in a container, or what [`Stack::plan_container_recovery`] refuses for
    /// one of them (no backup, no spec, a secret value missing), before anything is made.
    /// A failing step is in the report.
    pub async fn drill_project(
        &self,
        options: &ContainerRecoveryOptions,
        progress: &Progress,
    ) -> Result<SystemDrillReport> {
        let started = Instant::now();
        let started_at = Utc::now();
        let stamp = started_at.format("%Y%m%dt%H%M%S%3fz").to_string();
        let mut names: Vec<(String, u8)> = Vec::new();
        for (name, runner) in &self.config().runners {
            if matches!(runner, RunnerConfig::Docker { .. }) {
                names.push((name.clone(), rank(self.component_type(name)?)));
            }
        }
        if names.is_empty() {
            return Err(Error::bad_input(
                "no component runs in a container (runner = \"docker\"): a project drill copies containers",
            )
            .with_hint("zdr drill --scenario system drills components outside containers"));
        }
        names.sort_by_key(|(n, r)| (*r, n.clone()));
        // Everything is found before anything is made.
        let mut prepared: Vec<(String, Prepared)> = Vec::new();
        // The copies are restored from their logical backups.
        let logical = ContainerRecoveryOptions {
            method: RecoveryMethod::Logical,
            ..options.clone()
        };
        for (name, _) in &names {
            prepared.push((
                name.clone(),
                self.prepare_container_recovery(name, &logical).await?,
            ));
        }
        let Some(docker) = prepared.first().map(|(_, p)| p.docker.clone()) else {
            return Err(Error::unexpected("no component prepared"));
        };
        let own: BTreeSet<String> = prepared
            .iter()
            .filter_map(|(_, p)| p.live.clone())
            .collect();
        let mut apps: Vec<String> = Vec::new();
        for (_, p) in &prepared {
            for d in &p.plan.dependents {
                if !own.contains(d) && !apps.contains(d) {
                    apps.push(d.clone());
                }
            }
        }
        let mut app_specs = Vec::new();
        for a in &apps {
            let spec = docker.spec(a).await?;
            let secrets = docker.secrets_from(a, &spec).await?;
            app_specs.push((spec, secrets));
        }

        // Leftovers of a killed project drill: its copies, volumes and network.
        for (name, _) in &names {
            remove_abandoned_copies(&docker, name, progress).await?;
        }
        remove_abandoned_copies(&docker, APP_LABEL, progress).await?;
        for (net, labels) in docker.labelled_networks(DRILL_OWNER_LABEL).await? {
            let alive = labels
                .get(DRILL_OWNER_LABEL)
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| std::path::Path::new("/proc").join(pid.to_string()).exists());
            if !alive {
                docker.remove_network(&net).await?;
                progress.info(format!(
                    "removed the drill network {net} left by an interrupted drill"
                ));
            }
        }

        let net = format!("zdr-drill-{stamp}");
        let step = |id: String, action: String, timeout: u64| PlanStep {
            id,
            action,
            precondition: String::new(),
            verification: String::new(),
            timeout_secs: timeout,
        };
        let mut steps = vec![step(
            STEP_NETWORK.to_owned(),
            format!("create the private network {net}"),
            60,
        )];
        for (name, p) in &prepared {
            steps.push(step(
                format!("drill-{name}"),
                format!(
                    "copy {} onto {net} as {}, wait healthy, restore backup {} from tier {} and verify",
                    p.spec.name,
                    names_of(&p.spec).join(", "),
                    p.plan.backup.id,
                    p.plan.backup.tier
                ),
                options.health_timeout.as_secs() + 3600,
            ));
        }
        steps.push(step(
            STEP_APPS.to_owned(),
            if apps.is_empty() {
                "no dependent containers".to_owned()
            } else {
                format!("copy {} onto {net} and wait healthy", apps.join(", "))
            },
            options
                .health_timeout
                .as_secs()
                .saturating_mul(u64::try_from(apps.len().max(1)).unwrap_or(1)),
        ));
        steps.push(step(
            STEP_TEARDOWN.to_owned(),
            "remove every copy, its volumes and the network".to_owned(),
            300,
        ));

        let mut run = Run::new(&steps, progress);
        let mut made = Made::default();
        let result: Result<()> = async {
            run.step(STEP_NETWORK, async {
                let labels = HashMap::from([
                    (DRILL_LABEL.to_owned(), "project".to_owned()),
                    (DRILL_OWNER_LABEL.to_owned(), std::process::id().to_string()),
                ]);
                docker.create_network(&net, &labels).await?;
                made.network = Some(net.clone());
                Ok(net.clone())
            })
            .await?;
            for (name, p) in &prepared {
                let id = format!("drill-{name}");
                run.step(&id, async {
                    let (copy, volumes, recreate) = copy_on(&p.spec, name, &stamp, &net)?;
                    made.containers.push(copy.name.clone());
                    made.volumes.extend(volumes);
                    docker
                        .recreate(&copy, &recreate.secrets(p.secrets.clone()))
                        .await?;
                    docker
                        .wait_healthy(&copy.name, None, options.health_timeout)
                        .await?;
                    let drill = self.drill_stack(name, &docker, &copy.name).await?;
                    let r = drill
                        .restore(
                            name,
                            &RestoreOptions {
                                tier: options.tier.clone(),
                                backup: BackupSelector::Id(p.backup.id.clone()),
                                // A throwaway copy: nothing live to keep.
                                no_safety_copy: true,
                                ..RestoreOptions::default()
                            },
                            progress,
                        )
                        .await?;
                    let (record, outcome) = RestoredRecord::checked(&r);
                    outcome?;
                    Ok(format!(
                        "{} answers as {}; backup {} restored, {} check(s) passed",
                        copy.name,
                        names_of(&p.spec).join(", "),
                        record.backup,
                        record.verified
                    ))
                })
                .await?;
            }
            run.step(STEP_APPS, async {
                let mut done = Vec::new();
                for (spec, secrets) in &app_specs {
                    let (copy, volumes, recreate) = copy_on(spec, APP_LABEL, &stamp, &net)?;
                    made.containers.push(copy.name.clone());
                    made.volumes.extend(volumes);
                    docker
                        .recreate(&copy, &recreate.secrets(secrets.clone()))
                        .await?;
                    let s = docker
                        .wait_healthy(&copy.name, None, options.health_timeout)
                        .await?;
                    done.push(format!(
                        "{} {}",
                        s.name,
                        s.health.as_deref().unwrap_or("running (no healthcheck)")
                    ));
                }
                Ok(if done.is_empty() {
                    "no dependent containers".to_owned()
                } else {
                    done.join(", ")
                })
            })
            .await?;
            Ok(())
        }
        .await;
        let teardown = run
            .step(STEP_TEARDOWN, made.teardown(&docker))
            .await
            .map(|_| ());
        let ok = result.is_ok() && teardown.is_ok();
        let mut report = SystemDrillReport::finished("project", started_at, started, ok, run);
        self.store_report(&mut report, progress).await;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_answers_to_the_originals_names_on_its_own_network_only() {
        let json = serde_json::json!({
            "name": "zentoria-db-1",
            "image": "postgres:15",
            "env": [],
            "mounts": [],
            "networks": [{"name": "zentoria_default", "aliases": ["db", "database"]}],
            "exposed_ports": [],
            "ports": [],
            "labels": {"com.docker.compose.service": "db"},
            "network_mode": "zentoria_default"
        });
        let spec: ContainerSpec = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
        let (copy, _, _) =
            copy_on(&spec, "db", "s1", "zdr-drill-s1").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(copy.network_mode.as_deref(), Some("zdr-drill-s1"));
        assert_eq!(copy.networks.len(), 1, "{:?}", copy.networks);
        assert_eq!(copy.networks[0].name, "zdr-drill-s1");
        assert_eq!(
            copy.networks[0].aliases,
            ["database", "db", "zentoria-db-1"]
        );
        assert!(copy.name.contains("-zdr-drill-s1"));
    }
}
