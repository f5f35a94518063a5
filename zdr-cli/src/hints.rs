//! The command line's words for the library's hints: where the library names an option, the
//! CLI names its flag.

use zdr::Error;

/// Name the command-line flags and commands where the library names its options.
pub(crate) fn for_cli(e: Error) -> Error {
    let message = e.to_string();
    let hint = e.hint().unwrap_or_default().to_owned();
    let cli = if message.contains("base backups apply to postgres") {
        Some("--base applies to postgres components")
    } else if message.contains("a target name (database or collection)") {
        Some("--database names the target database (postgres) or collection (qdrant)")
    } else if message.contains("apply to postgres components") {
        Some("--database, --table, --as, --jobs and --in-place apply to postgres components")
    } else if message.contains("apply to redis components") {
        Some("--match, --db and --no-replace apply to redis components")
    } else if message.contains("apply to vault components") {
        Some("--force, --mount-map and --allow-plaintext apply to vault components")
    } else if message.contains("logical applies to") {
        Some("--logical applies to redis, vault and qdrant components")
    } else if message.contains("needs explicit confirmation") {
        Some("pass --yes-destroy-live, or use the default safe restore (side database + swap)")
    } else if message.contains("table_as") {
        Some("--as needs --table")
    } else if hint.contains("list the catalog") {
        Some("`zdr list` shows the backups on each tier")
    } else if hint.contains("take a base backup first") {
        Some("take one with `zdr backup COMPONENT --base`")
    } else if hint.contains("choose the target timeline") {
        Some("choose the target timeline with --timeline, or another base backup")
    } else if hint.contains("choose another data directory") {
        Some("choose another one with --to, or remove it")
    } else if hint.contains("set allow_plaintext") {
        Some("configure [encryption], or pass --allow-plaintext")
    } else if hint.contains("check the configured api_key") {
        Some("check api_key (ZDR_COMPONENTS__<NAME>__API_KEY)")
    } else if hint.contains("check the token and its policy") {
        Some("check the token (ZDR_COMPONENTS__<NAME>__TOKEN) and its policy")
    } else if hint.contains("verify the backup on the source tier") {
        Some("run `zdr verify --tier SOURCE` on the source tier")
    } else if hint.contains("as its storage snapshot") {
        Some(
            "stop Qdrant and start it once with `--storage-snapshot <file>`; per-collection backups restore through zdr",
        )
    } else if hint.contains("archive_command is failing") || hint.contains("check archive_mode") {
        Some(
            "archive_command is failing: see pg_stat_archiver and the server log, or run `zdr check COMPONENT`",
        )
    } else if hint.contains("point-in-time recovery") {
        Some("base backups are restored with `zdr pitr`, not `zdr restore`")
    } else {
        None
    };
    match cli {
        Some(h) => e.with_hint(h),
        None => e,
    }
}
