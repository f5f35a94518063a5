//! Secrets on a container's command line (`redis-server --requirepass pw`, a healthcheck's
//! `redis-cli -a pw ping`, a URL with credentials): found, replaced by a placeholder naming
//! them, and put back when the container is recreated.

use std::collections::BTreeMap;

use crate::spec::{has_url_credentials, is_secret_env_name};

/// The placeholder a secret argument is recorded as: `${zdr-secret:NAME}`.
#[must_use]
pub fn placeholder(name: &str) -> String {
    format!("${{zdr-secret:{name}}}")
}

/// Whether a long option names a secret: `--requirepass`, `--masterauth`, `--password`,
/// `--api-key`, `--auth`, or any name [`is_secret_env_name`] finds secret.
fn secret_option(opt: &str) -> Option<String> {
    let bare = opt.strip_prefix("--")?;
    if bare.is_empty() || bare.contains('=') {
        return None;
    }
    let name = bare.replace('-', "_").to_ascii_uppercase();
    let known = ["REQUIREPASS", "MASTERAUTH", "PASS", "AUTH"];
    (known.contains(&name.as_str()) || is_secret_env_name(&name)).then_some(name)
}

/// One piece of text masked: the secrets of `text` as (name, value), in order, and the text
/// with each replaced by its placeholder. `redis_cli` says whether `-a` is redis-cli's
/// password flag here.
fn mask_text(text: &str, redis_cli: bool, found: &mut Vec<(String, String)>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending: Option<String> = None;
    let mut rest = text;
    while !rest.is_empty() {
        let ws = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..ws]);
        rest = &rest[ws..];
        if rest.is_empty() {
            break;
        }
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let token = &rest[..end];
        rest = &rest[end..];
        if let Some(name) = pending.take() {
            out.push_str(&placeholder(&record(found, name, token)));
            continue;
        }
        if let Some((opt, value)) = token.split_once('=')
            && let Some(name) = secret_option(opt)
            && !value.is_empty()
        {
            out.push_str(opt);
            out.push('=');
            out.push_str(&placeholder(&record(found, name, value)));
            continue;
        }
        if let Some(name) = secret_option(token) {
            pending = Some(name);
        } else if redis_cli && token == "-a" {
            pending = Some("REDISCLI_AUTH".to_owned());
        } else if has_url_credentials(token) {
            let name = format!("URL_{}", found.len() + 1);
            out.push_str(&placeholder(&record(found, name, token)));
            continue;
        }
        out.push_str(token);
    }
    out
}

/// Record `value` under `name` (the same value under the same name once; another value
/// under a numbered name) and return the name used.
fn record(found: &mut Vec<(String, String)>, name: String, value: &str) -> String {
    let mut candidate = name.clone();
    let mut n = 1;
    loop {
        match found.iter().find(|(k, _)| *k == candidate) {
            Some((_, v)) if v == value => return candidate,
            Some(_) => {
                n += 1;
                candidate = format!("{name}_{n}");
            }
            None => {
                found.push((candidate.clone(), value.to_owned()));
                return candidate;
            }
        }
    }
}

/// The argument lists of a container (entrypoint, command, healthcheck test), masked
/// together: secret values replaced by placeholders, and the secrets by name. A value that
/// follows a secret option in the next argument (`["--requirepass", "pw"]`) is masked too.
pub(crate) fn mask_lists(lists: &mut [&mut Vec<String>]) -> BTreeMap<String, String> {
    let mut found = Vec::new();
    for list in lists.iter_mut() {
        let redis_cli = list.iter().any(|a| a.contains("redis-cli"));
        let mut pending: Option<String> = None;
        for arg in list.iter_mut() {
            if let Some(name) = pending.take() {
                let used = record(&mut found, name, arg);
                *arg = placeholder(&used);
                continue;
            }
            // A lone option whose value is the next argument.
            if !arg.contains(char::is_whitespace) {
                if let Some(name) = secret_option(arg) {
                    pending = Some(name);
                    continue;
                }
                if redis_cli && arg == "-a" {
                    pending = Some("REDISCLI_AUTH".to_owned());
                    continue;
                }
            }
            *arg = mask_text(arg, redis_cli, &mut found);
        }
    }
    found.into_iter().collect()
}

/// `args` with every placeholder replaced by its value from `secrets`; the first name without
/// a value is the error.
pub(crate) fn unmask(
    args: &[String],
    secrets: &BTreeMap<String, zdr_core::Secret>,
) -> Result<Vec<String>, String> {
    args.iter()
        .map(|a| {
            let mut out = String::with_capacity(a.len());
            let mut rest = a.as_str();
            while let Some(at) = rest.find("${zdr-secret:") {
                out.push_str(&rest[..at]);
                let after = &rest[at + "${zdr-secret:".len()..];
                let Some(close) = after.find('}') else {
                    out.push_str(&rest[at..]);
                    rest = "";
                    break;
                };
                let name = &after[..close];
                let value = secrets.get(name).ok_or_else(|| name.to_owned())?;
                out.push_str(value.expose());
                rest = &after[close + 1..];
            }
            out.push_str(rest);
            Ok(out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn command_line_secrets_are_masked_and_come_back() {
        let mut cmd = v(&[
            "redis-server",
            "--requirepass",
            "hunter2",
            "--masterauth=hunter2",
            "--port",
            "6379",
        ]);
        let mut health = v(&["CMD-SHELL", "redis-cli -a hunter2 ping | grep PONG"]);
        let mut entry = v(&["app", "--db-url", "postgres://u:pw@db/x", "--api-key=k3y"]);
        let found = mask_lists(&mut [&mut entry, &mut cmd, &mut health]);
        let all = format!("{cmd:?}{health:?}{entry:?}");
        for secret in ["hunter2", "pw@", "k3y"] {
            assert!(!all.contains(secret), "{all}");
        }
        assert_eq!(cmd[2], "${zdr-secret:REQUIREPASS}");
        assert_eq!(cmd[3], "--masterauth=${zdr-secret:MASTERAUTH}");
        assert_eq!(cmd[5], "6379");
        assert_eq!(
            health[1],
            "redis-cli -a ${zdr-secret:REDISCLI_AUTH} ping | grep PONG"
        );
        assert_eq!(entry[2], "${zdr-secret:URL_1}");
        assert_eq!(entry[3], "--api-key=${zdr-secret:API_KEY}");
        assert_eq!(
            found.get("REQUIREPASS").map(String::as_str),
            Some("hunter2")
        );
        assert_eq!(found.get("API_KEY").map(String::as_str), Some("k3y"));
        let secrets = found
            .iter()
            .map(|(k, v)| (k.clone(), zdr_core::Secret::new(v.clone())))
            .collect();
        assert_eq!(
            unmask(&cmd, &secrets).unwrap_or_default(),
            v(&[
                "redis-server",
                "--requirepass",
                "hunter2",
                "--masterauth=hunter2",
                "--port",
                "6379"
            ])
        );
        assert_eq!(
            unmask(&health, &secrets).unwrap_or_default()[1],
            "redis-cli -a hunter2 ping | grep PONG"
        );
        assert_eq!(
            unmask(&cmd, &BTreeMap::new()),
            Err("REQUIREPASS".to_owned())
        );
    }

    #[test]
    fn one_shell_string_and_two_values_under_one_option() {
        let mut cmd = v(&[
            "sh",
            "-c",
            "redis-server --requirepass a1 && x --requirepass b2",
        ]);
        let found = mask_lists(&mut [&mut cmd]);
        assert_eq!(
            cmd[2],
            "redis-server --requirepass ${zdr-secret:REQUIREPASS} && x --requirepass ${zdr-secret:REQUIREPASS_2}"
        );
        assert_eq!(found.len(), 2);
        // Nothing secret: nothing changes.
        let mut plain = v(&["postgres", "-c", "shared_buffers=256MB", "-p", "5432"]);
        assert!(mask_lists(&mut [&mut plain]).is_empty());
        assert_eq!(plain[2], "shared_buffers=256MB");
        // `-a` is a password only for redis-cli.
        let mut other = v(&["tar", "-a", "file"]);
        assert!(mask_lists(&mut [&mut other]).is_empty());
    }
}
