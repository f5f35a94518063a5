//! A starter `zdr.toml` from a docker-compose file (`zdr init --compose`).
//!
//! Datastores are recognised by image (`postgres`, `redis`/`valkey`, `qdrant`, `vault`/`openbao`,
//! `minio`, `n8n`) and environment; each becomes a component reached on its published port,
//! PostgreSQL and Redis in their containers (`runner = "docker"`, `service = ...`: PostgreSQL's
//! tools run there, Redis's files are restored there) with the services that `depends_on`
//! them as their dependents. A MinIO service becomes an S3 tier (and a
//! commented `s3-bucket` component for its own objects, to be given its bucket names); an n8n
//! service an `n8n` component. Directories bind-mounted
//! from beside the compose file become `files` components (the config files of the runbook).
//! Passwords are never copied: the variables the compose file references are named, with the
//! `ZDR_*` variable to export instead. The result is checked by parsing it as a [`Config`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_yaml::Value;
use zdr_core::{Error, Result};

use crate::config::Config;

/// Options of [`config_from_compose`].
#[derive(Debug, Clone, Default)]
pub struct ComposeInit {
    /// The compose project name (default: the file's `name:`, else its directory's name, as
    /// docker-compose derives it).
    pub project: Option<String>,
    /// Where the local tier keeps backups (default `/var/backups/zdr`).
    pub backup_root: Option<PathBuf>,
}

/// One service recognised as something to back up.
#[derive(Debug, Clone, Serialize)]
pub struct Detected {
    /// The component's (or tier's) name in the config.
    pub name: String,
    /// The compose service.
    pub service: String,
    /// `postgres`, `redis`, `qdrant`, `vault`, `files` or `s3-tier`.
    pub kind: String,
}

/// What [`config_from_compose`] made.
#[derive(Debug, Clone, Serialize)]
pub struct ComposeInitReport {
    /// The compose project.
    pub project: String,
    /// The config text.
    pub toml: String,
    /// What was recognised.
    pub detected: Vec<Detected>,
    /// Services left out, and why.
    pub skipped: Vec<(String, String)>,
    /// The variables to export before running zdr (passwords, tokens, keys), with the
    /// compose variable each corresponds to.
    pub secrets: Vec<(String, String)>,
}

/// One compose service, as far as zdr needs it.
struct Service {
    name: String,
    image: String,
    env: BTreeMap<String, String>,
    ports: Vec<(String, u16, u16)>,
    binds: Vec<(String, String)>,
    depends_on: Vec<String>,
    command: String,
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_service(name: &str, v: &Value) -> Service {
    let image = v.get("image").and_then(text_of).unwrap_or_default();
    let mut env = BTreeMap::new();
    match v.get("environment") {
        Some(Value::Sequence(items)) => {
            for item in items.iter().filter_map(text_of) {
                let (k, val) = item.split_once('=').unwrap_or((item.as_str(), ""));
                env.insert(k.to_owned(), val.to_owned());
            }
        }
        Some(Value::Mapping(m)) => {
            for (k, val) in m {
                if let Some(k) = text_of(k) {
                    env.insert(k, text_of(val).unwrap_or_default());
                }
            }
        }
        _ => {}
    }
    let mut ports = Vec::new();
    if let Some(Value::Sequence(items)) = v.get("ports") {
        for item in items {
            match item {
                Value::Mapping(_) => {
                    let target = item.get("target").and_then(text_of);
                    let published = item.get("published").and_then(text_of);
                    let ip = item.get("host_ip").and_then(text_of).unwrap_or_default();
                    if let (Some(t), Some(p)) = (
                        target.and_then(|t| t.parse().ok()),
                        published.and_then(|p| p.parse().ok()),
                    ) {
                        ports.push((ip, p, t));
                    }
                }
                other => {
                    if let Some(s) = text_of(other) {
                        let s = s.split('/').next().unwrap_or_default();
                        // `[::1]:5432:5432`: an IPv6 host address in brackets.
                        let (ip, rest) = match s.strip_prefix('[').and_then(|r| r.split_once("]:"))
                        {
                            Some((ip, rest)) => (Some(ip.to_owned()), rest),
                            None => (None, s),
                        };
                        let parts: Vec<&str> = rest.split(':').collect();
                        let parsed = match (ip, parts.as_slice()) {
                            (Some(ip), [h, c]) => Some((ip, *h, *c)),
                            (None, [h, c]) => Some((String::new(), *h, *c)),
                            (None, [ip, h, c]) => Some(((*ip).to_owned(), *h, *c)),
                            _ => None,
                        };
                        if let Some((ip, h, c)) = parsed
                            && let (Ok(h), Ok(c)) = (h.parse(), c.parse())
                        {
                            ports.push((ip, h, c));
                        }
                    }
                }
            }
        }
    }
    let mut binds = Vec::new();
    if let Some(Value::Sequence(items)) = v.get("volumes") {
        for item in items {
            let (source, target) = match item {
                Value::Mapping(_) => (
                    item.get("source").and_then(text_of).unwrap_or_default(),
                    item.get("target").and_then(text_of).unwrap_or_default(),
                ),
                other => {
                    let s = text_of(other).unwrap_or_default();
                    let mut parts = s.splitn(3, ':');
                    (
                        parts.next().unwrap_or_default().to_owned(),
                        parts.next().unwrap_or_default().to_owned(),
                    )
                }
            };
            if source.starts_with('.') || source.starts_with('/') {
                binds.push((source, target));
            }
        }
    }
    let depends_on = match v.get("depends_on") {
        Some(Value::Sequence(items)) => items.iter().filter_map(text_of).collect(),
        Some(Value::Mapping(m)) => m.keys().filter_map(text_of).collect(),
        _ => Vec::new(),
    };
    let command = match v.get("command") {
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(text_of)
            .collect::<Vec<_>>()
            .join(" "),
        Some(other) => text_of(other).unwrap_or_default(),
        None => String::new(),
    };
    Service {
        name: name.to_owned(),
        image,
        env,
        ports,
        binds,
        depends_on,
        command,
    }
}

/// The image's short name: `docker.io/library/postgres:15-alpine` → `postgres`.
fn image_name(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or_default();
    let last = no_digest.rsplit('/').next().unwrap_or_default();
    last.split(':')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// The variables a compose value references (`${VAR}`, `${VAR:-x}`, `$VAR`).
fn referenced(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let braced = rest.starts_with('{');
        let body = if braced { &rest[1..] } else { rest };
        let name: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Where a secret comes from in the compose file: the variables its value references.
fn compose_source(service: &Service, names: &[&str]) -> String {
    names
        .iter()
        .find_map(|n| service.env.get(*n))
        .map(|v| {
            let refs = referenced(v);
            if refs.is_empty() {
                format!("the value of {} in the compose file", names.join("/"))
            } else {
                format!("${{{}}}", refs.join("}, ${"))
            }
        })
        .unwrap_or_else(|| "the service's password".to_owned())
}

/// A host as a URL carries it: an IPv6 address in brackets.
fn url_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// A config key: lower case letters, digits and `_`.
fn key_name(s: &str) -> String {
    let k: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if k.is_empty() {
        "service".to_owned()
    } else {
        k
    }
}

/// Compose's default project name: the directory's name in lower case, letters, digits, `-`
/// and `_` kept (as Docker Compose v2 derives it).
fn default_project(dir: &Path) -> String {
    let base = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let p: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if p.is_empty() {
        "default".to_owned()
    } else {
        p
    }
}

fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A starter config from the compose file `text` (read from `path`, whose directory resolves
/// relative bind mounts).
///
/// # Errors
/// [`zdr_core::ErrorKind::BadInput`] for a file that is not YAML (naming the file, line and
/// column) or has no `services`.
pub fn config_from_compose(
    text: &str,
    path: &Path,
    options: &ComposeInit,
) -> Result<ComposeInitReport> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(" at line {}, column {}", l.line(), l.column()))
            .unwrap_or_default();
        Error::bad_input(format!("{} is not a compose file{at}: {e}", path.display()))
            .with_context("file", path.display())
    })?;
    let Some(Value::Mapping(services)) = doc.get("services") else {
        return Err(Error::bad_input(format!(
            "{} has no services: not a compose file zdr can read",
            path.display()
        ))
        .with_context("file", path.display()));
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let project = options
        .project
        .clone()
        .or_else(|| doc.get("name").and_then(text_of))
        .unwrap_or_else(|| default_project(&dir));
    let services: Vec<Service> = services
        .iter()
        .filter_map(|(k, v)| text_of(k).map(|k| parse_service(&k, v)))
        .collect();
    let root = options
        .backup_root
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/backups/zdr"));

    let mut detected = Vec::new();
    let mut skipped = Vec::new();
    let mut secrets = Vec::new();
    let mut tiers = String::new();
    let mut components = String::new();
    let mut replicas = Vec::new();
    let dependents_of = |name: &str| -> Vec<String> {
        services
            .iter()
            .filter(|s| s.depends_on.iter().any(|d| d == name))
            .map(|s| s.name.clone())
            .collect()
    };
    let host_port = |s: &Service, container: u16| -> Option<(String, u16)> {
        s.ports
            .iter()
            .find(|(_, _, c)| *c == container)
            .map(|(ip, h, _)| {
                let ip = match ip.as_str() {
                    "" | "0.0.0.0" => "127.0.0.1".to_owned(),
                    "::" => "::1".to_owned(),
                    _ => ip.clone(),
                };
                (ip, *h)
            })
    };
    for s in &services {
        let kind = image_name(&s.image);
        // Two services whose names differ only in punctuation (`a-b`, `a_b`) get distinct keys.
        let mut name = key_name(&s.name);
        let base = name.clone();
        let mut n = 2;
        while detected.iter().any(|d: &Detected| d.name == name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        let upper = name.to_ascii_uppercase();
        match kind.as_str() {
            "postgres" | "postgis" | "timescaledb" | "timescaledb-ha" | "pgvector" => {
                let user = s
                    .env
                    .get("POSTGRES_USER")
                    .filter(|u| referenced(u).is_empty() && !u.is_empty())
                    .cloned()
                    .unwrap_or_else(|| "postgres".to_owned());
                let database = s
                    .env
                    .get("POSTGRES_DB")
                    .filter(|d| referenced(d).is_empty() && !d.is_empty())
                    .cloned()
                    .unwrap_or_else(|| user.clone());
                let (host, port) = host_port(s, 5432).unwrap_or(("127.0.0.1".to_owned(), 5432));
                let _ = writeln!(
                    components,
                    "\n[components.{name}]\ntype = \"postgres\"\nhost = {}\nport = {port}{}\nuser = {}\ndatabase = {}\nrunner = \"docker\"\nservice = {}",
                    toml_str(&host),
                    if host_port(s, 5432).is_none() {
                        "   # not published: publish 5432 on 127.0.0.1, zdr reads its facts through it"
                    } else {
                        ""
                    },
                    toml_str(&user),
                    toml_str(&database),
                    toml_str(&s.name),
                );
                let deps = dependents_of(&s.name);
                if !deps.is_empty() {
                    let list: Vec<String> = deps.iter().map(|d| toml_str(d)).collect();
                    let _ = writeln!(components, "dependents = [{}]", list.join(", "));
                }
                secrets.push((
                    format!("ZDR_COMPONENTS__{upper}__PASSWORD"),
                    compose_source(s, &["POSTGRES_PASSWORD"]),
                ));
                detected.push(Detected {
                    name,
                    service: s.name.clone(),
                    kind: "postgres".to_owned(),
                });
            }
            "redis" | "redis-stack" | "redis-stack-server" | "valkey" | "keydb" => {
                let (host, port) = host_port(s, 6379).unwrap_or(("127.0.0.1".to_owned(), 6379));
                let _ = writeln!(
                    components,
                    "\n[components.{name}]\ntype = \"redis\"\nurl = {}\nrunner = \"docker\"\nservice = {}",
                    toml_str(&format!("redis://{}:{port}", url_host(&host))),
                    toml_str(&s.name),
                );
                let deps = dependents_of(&s.name);
                if !deps.is_empty() {
                    let list: Vec<String> = deps.iter().map(|d| toml_str(d)).collect();
                    let _ = writeln!(components, "dependents = [{}]", list.join(", "));
                }
                if s.command.contains("requirepass") || s.env.contains_key("REDIS_PASSWORD") {
                    let from = referenced(&s.command);
                    secrets.push((
                        format!("ZDR_COMPONENTS__{upper}__PASSWORD"),
                        if from.is_empty() {
                            "the requirepass of the service".to_owned()
                        } else {
                            format!("${{{}}}", from.join("}, ${"))
                        },
                    ));
                }
                detected.push(Detected {
                    name,
                    service: s.name.clone(),
                    kind: "redis".to_owned(),
                });
            }
            "qdrant" => {
                let (host, port) = host_port(s, 6333).unwrap_or(("127.0.0.1".to_owned(), 6333));
                let _ = writeln!(
                    components,
                    "\n[components.{name}]\ntype = \"qdrant\"\nurl = {}",
                    toml_str(&format!("http://{}:{port}", url_host(&host)))
                );
                detected.push(Detected {
                    name,
                    service: s.name.clone(),
                    kind: "qdrant".to_owned(),
                });
            }
            "vault" | "openbao" => {
                let (host, port) = host_port(s, 8200).unwrap_or(("127.0.0.1".to_owned(), 8200));
                let _ = writeln!(
                    components,
                    "\n[components.{name}]\ntype = \"vault\"\naddress = {}\nmounts = [\"secret\"]",
                    toml_str(&format!("http://{}:{port}", url_host(&host)))
                );
                secrets.push((
                    format!("ZDR_COMPONENTS__{upper}__TOKEN"),
                    "a Vault token allowed to read the mounts and take raft snapshots".to_owned(),
                ));
                detected.push(Detected {
                    name,
                    service: s.name.clone(),
                    kind: "vault".to_owned(),
                });
            }
            "minio" => {
                let (host, port) = host_port(s, 9000).unwrap_or(("127.0.0.1".to_owned(), 9000));
                let _ = writeln!(
                    tiers,
                    "\n[tiers.{name}]\ntype = \"s3\"\nbucket = \"zdr-backups\"\nendpoint = {}",
                    toml_str(&format!("http://{}:{port}", url_host(&host)))
                );
                secrets.push((
                    format!("ZDR_TIERS__{upper}__ACCESS_KEY_ID"),
                    compose_source(s, &["MINIO_ROOT_USER", "MINIO_ACCESS_KEY"]),
                ));
                secrets.push((
                    format!("ZDR_TIERS__{upper}__SECRET_ACCESS_KEY"),
                    compose_source(s, &["MINIO_ROOT_PASSWORD", "MINIO_SECRET_KEY"]),
                ));
                // Its own objects (the apps' uploads) are a component too, once its buckets
                // are named.
                let _ = writeln!(
                    components,
                    "\n# The objects in {service} itself: name its buckets, then uncomment\n# (ZDR_COMPONENTS__{upper}_OBJECTS__SECRET_ACCESS_KEY holds the secret key).\n# [components.{name}_objects]\n# type = \"s3-bucket\"\n# endpoint = {}\n# buckets = [\"uploads\"]\n# access_key_id = \"...\"",
                    toml_str(&format!("http://{}:{port}", url_host(&host))),
                    service = s.name,
                );
                replicas.push(name.clone());
                detected.push(Detected {
                    name,
                    service: s.name.clone(),
                    kind: "s3-tier".to_owned(),
                });
            }
            "n8n" => {
                let published = host_port(s, 5678);
                let (host, port) = published.clone().unwrap_or(("127.0.0.1".to_owned(), 5678));
                let _ = writeln!(
                    components,
                    "\n[components.{name}]\ntype = \"n8n\"\nurl = {}{}",
                    toml_str(&format!("http://{}:{port}", url_host(&host))),
                    if published.is_none() {
                        "   # not published: publish 5678 on 127.0.0.1, zdr uses its REST API"
                    } else {
                        ""
                    },
                );
                secrets.push((
                    format!("ZDR_COMPONENTS__{upper}__API_KEY"),
                    "an n8n API key (Settings > n8n API) allowed to read and write workflows and tags"
                        .to_owned(),
                ));
                detected.push(Detected {
                    name,
                    service: s.name.clone(),
                    kind: "n8n".to_owned(),
                });
            }
            _ => {
                skipped.push((
                    s.name.clone(),
                    if s.image.is_empty() {
                        "no image (built locally): not a datastore zdr knows".to_owned()
                    } else {
                        format!("image {}: not a datastore zdr knows", s.image)
                    },
                ));
            }
        }
        // Config directories bind-mounted from beside the compose file — not a datastore's
        // own (its data directory is backed up through the datastore, never as files).
        let datastore = detected.last().is_some_and(|d| d.service == s.name);
        for (source, target) in &s.binds {
            if datastore || !source.starts_with('.') {
                continue;
            }
            let p = dir.join(source);
            let p = std::fs::canonicalize(&p).unwrap_or(p);
            if !p.is_dir() || !p.starts_with(&dir) {
                continue;
            }
            let cname = key_name(&format!("{}_{}", s.name, target.trim_start_matches('/')));
            let cname = format!("files_{}", cname.trim_end_matches('_'));
            let _ = writeln!(
                components,
                "\n[components.{cname}]   # {} mounted at {target} in {}\ntype = \"files\"\npath = {}",
                source,
                s.name,
                toml_str(&p.display().to_string())
            );
            detected.push(Detected {
                name: cname,
                service: s.name.clone(),
                kind: "files".to_owned(),
            });
        }
    }

    let mut toml = format!(
        "# zdr.toml made by `zdr init --compose {}` for compose project {project}.\n\
         # Review it: every key is documented in zdr's README.\n\
         primary = \"local\"\n",
        path.display()
    );
    if !replicas.is_empty() {
        let list: Vec<String> = replicas.iter().map(|r| toml_str(r)).collect();
        let _ = writeln!(toml, "replicate_to = [{}]", list.join(", "));
    }
    let _ = write!(
        toml,
        "\n[pipeline]\ncompression = \"zstd\"\nlevel = 3\n\n[docker]\nproject = {}\n\n[tiers.local]\ntype = \"fs\"\nroot = {}\n",
        toml_str(&project),
        toml_str(&root.display().to_string())
    );
    toml.push_str(&tiers);
    toml.push_str(&components);
    if !secrets.is_empty() {
        toml.push_str("\n# Secrets are never written here. Export before running zdr:\n");
        for (var, from) in &secrets {
            let _ = writeln!(toml, "#   {var}   ({from})");
        }
    }
    if !skipped.is_empty() {
        toml.push_str("\n# Services without data of their own (restarted as dependents):\n");
        for (s, why) in &skipped {
            let _ = writeln!(toml, "#   {s}: {why}");
        }
    }
    // What zdr writes, zdr must read.
    Config::parse(&toml, "generated config", std::iter::empty()).map_err(|e| {
        Error::unexpected(format!(
            "the config made from {} does not parse: {e}",
            path.display()
        ))
    })?;
    Ok(ComposeInitReport {
        project,
        toml,
        detected,
        skipped,
        secrets,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STACK: &str = r#"
version: "3.8"
services:
  postgres:
    image: postgres:15-alpine
    container_name: zentoria-db
    environment:
      POSTGRES_USER: postgres
      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}
      POSTGRES_DB: zentoria_main
    ports:
      - "127.0.0.1:5432:5432"
    volumes:
      - pgdata:/var/lib/postgresql/data
  redis:
    image: redis:7
    command: redis-server --requirepass ${REDIS_PASSWORD}
    ports: ["6379:6379"]
  qdrant:
    image: qdrant/qdrant:v1.12.0
    ports:
      - target: 6333
        published: 16333
  vault:
    image: hashicorp/vault:1.15
    ports: ["8200:8200"]
  minio:
    image: minio/minio
    environment:
      - MINIO_ROOT_USER=${MINIO_USER}
      - MINIO_ROOT_PASSWORD=${MINIO_PASSWORD}
    ports: ["9000:9000"]
  backend:
    build: ./backend
    depends_on: [postgres, redis]
  n8n:
    image: n8nio/n8n
    depends_on:
      postgres:
        condition: service_healthy
volumes:
  pgdata:
"#;

    #[test]
    fn the_runbooks_stack_becomes_a_config_that_parses() -> Result<()> {
        let r = config_from_compose(
            STACK,
            Path::new("/nonexistent/zentoria/docker-compose.yml"),
            &ComposeInit::default(),
        )?;
        assert_eq!(r.project, "zentoria");
        let config = Config::parse(&r.toml, "t", std::iter::empty())?;
        let kinds: Vec<(&str, &str)> = r
            .detected
            .iter()
            .map(|d| (d.name.as_str(), d.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("postgres", "postgres"),
                ("redis", "redis"),
                ("qdrant", "qdrant"),
                ("vault", "vault"),
                ("minio", "s3-tier"),
                ("n8n", "n8n")
            ]
        );
        assert!(
            r.toml
                .contains("url = \"http://127.0.0.1:5678\"   # not published"),
            "{}",
            r.toml
        );
        assert!(
            r.toml
                .contains("# type = \"s3-bucket\"\n# endpoint = \"http://127.0.0.1:9000\""),
            "{}",
            r.toml
        );
        assert_eq!(config.replicate_to, ["minio"]);
        assert!(
            r.toml
                .contains("port = 5432\nuser = \"postgres\"\ndatabase = \"zentoria_main\""),
            "{}",
            r.toml
        );
        assert!(
            r.toml.contains("dependents = [\"backend\", \"n8n\"]"),
            "{}",
            r.toml
        );
        assert!(
            r.toml.contains("url = \"http://127.0.0.1:16333\""),
            "{}",
            r.toml
        );
        assert!(
            r.toml.contains(
                "url = \"redis://127.0.0.1:6379\"\nrunner = \"docker\"\nservice = \"redis\""
            ),
            "{}",
            r.toml
        );
        let vars: Vec<&str> = r.secrets.iter().map(|(v, _)| v.as_str()).collect();
        assert_eq!(
            vars,
            [
                "ZDR_COMPONENTS__POSTGRES__PASSWORD",
                "ZDR_COMPONENTS__REDIS__PASSWORD",
                "ZDR_COMPONENTS__VAULT__TOKEN",
                "ZDR_TIERS__MINIO__ACCESS_KEY_ID",
                "ZDR_TIERS__MINIO__SECRET_ACCESS_KEY",
                "ZDR_COMPONENTS__N8N__API_KEY"
            ]
        );
        assert!(r.toml.contains("(${POSTGRES_PASSWORD})"), "{}", r.toml);
        assert!(r.toml.contains("(${MINIO_PASSWORD})"), "{}", r.toml);
        assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
        Ok(())
    }

    #[test]
    fn not_a_compose_file_is_named_with_its_line() {
        let e = config_from_compose(
            "services:\n  db:\n    image: [unclosed\n",
            Path::new("/x/docker-compose.yml"),
            &ComposeInit::default(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            e.contains("/x/docker-compose.yml") && e.contains("line"),
            "{e}"
        );
        let e = config_from_compose(
            "version: '3'\n",
            Path::new("/x/c.yml"),
            &ComposeInit::default(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(e.contains("has no services"), "{e}");
    }

    #[test]
    fn ipv6_ports_and_clashing_names() -> Result<()> {
        let r = config_from_compose(
            "services:\n  cache-a:\n    image: redis\n    ports: ['[::1]:16379:6379']\n  cache_a:\n    image: valkey/valkey\n    ports: ['[::]:26379:6379']\n",
            Path::new("/nonexistent/s/compose.yml"),
            &ComposeInit::default(),
        )?;
        let names: Vec<&str> = r.detected.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["cache_a", "cache_a_2"]);
        assert!(
            r.toml.contains("url = \"redis://[::1]:16379\""),
            "{}",
            r.toml
        );
        assert!(
            r.toml.contains("url = \"redis://[::1]:26379\""),
            "{}",
            r.toml
        );
        Ok(())
    }

    #[test]
    fn variables_are_found_in_compose_values() {
        assert_eq!(referenced("${A}:x$B ${C:-d}"), ["A", "B", "C"]);
        assert_eq!(
            image_name("docker.io/library/postgres:15@sha256:ab"),
            "postgres"
        );
        assert_eq!(key_name("zentoria-db"), "zentoria_db");
    }
}
