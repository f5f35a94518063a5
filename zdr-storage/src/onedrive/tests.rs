//! Unit tests of the OneDrive module.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use opendal::Buffer;
use zdr_core::{Error, ErrorKind, Result, StorageTier};

use super::config::*;
use super::oauth::*;
use super::rclone::*;
use super::transport::*;
use super::upload::*;
use super::*;

const SECRET_AT: &str = "EwAAAccessTokenValue";
const SECRET_RT: &str = "M.C5_RefreshTokenValue";

fn conf(body: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(body.as_bytes()).unwrap();
    f
}

fn rclone_cfg(remote: &str, path: &Path) -> OneDriveConfig {
    OneDriveConfig {
        root: Some("zdr".into()),
        rclone_remote: Some(remote.into()),
        rclone_config: Some(path.to_path_buf()),
        ..Default::default()
    }
}

fn no_env(_: &str) -> Option<OsString> {
    None
}

fn resolve(cfg: &OneDriveConfig) -> Result<Auth> {
    resolve_auth(cfg, &no_env, &|_| false)
}

fn good_conf() -> String {
    format!(
        "# rclone config\n\
         [other]\ntype = s3\n\n\
         [zentoria-onedrive]\n\
         type = onedrive\n\
         client_id = my-app-id\n\
         client_secret = my-app-secret\n\
         token = {{\"access_token\":\"{SECRET_AT}\",\"token_type\":\"Bearer\",\"refresh_token\":\"{SECRET_RT}\",\"expiry\":\"2026-01-16T12:00:00.000000+01:00\"}}\n\
         drive_id = 0123456789abcdef\n\
         drive_type = personal\n"
    )
}

fn assert_no_secrets(e: &Error) {
    let s = format!("{e} {e:?}");
    assert!(!s.contains(SECRET_AT), "{s}");
    assert!(!s.contains(SECRET_RT), "{s}");
}

#[test]
fn rclone_remote_gives_refresh_credentials() {
    let f = conf(&good_conf());
    let auth = resolve(&rclone_cfg("zentoria-onedrive:", f.path())).unwrap();
    let Auth::Refresh {
        client_id,
        client_secret,
        refresh_token,
    } = auth
    else {
        panic!("expected refresh credentials");
    };
    assert_eq!(client_id, "my-app-id");
    assert_eq!(client_secret.as_deref(), Some("my-app-secret"));
    assert_eq!(refresh_token, SECRET_RT);
}

#[test]
fn config_client_values_override_the_remote() {
    let f = conf(&good_conf());
    let mut cfg = rclone_cfg("zentoria-onedrive", f.path());
    cfg.client_id = Some("override-id".into());
    cfg.client_secret = Some("override-secret".into());
    let Auth::Refresh {
        client_id,
        client_secret,
        ..
    } = resolve(&cfg).unwrap()
    else {
        panic!("expected refresh credentials");
    };
    assert_eq!(client_id, "override-id");
    assert_eq!(client_secret.as_deref(), Some("override-secret"));
}

#[test]
fn rclone_missing_file_names_remote_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope.conf");
    let e = resolve(&rclone_cfg("zentoria-onedrive", &path))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    let s = e.to_string();
    assert!(s.contains("zentoria-onedrive"), "{s}");
    assert!(s.contains(&path.display().to_string()), "{s}");
    assert!(s.contains("does not exist"), "{s}");
}

#[test]
fn rclone_missing_section() {
    let f = conf(&good_conf());
    let e = resolve(&rclone_cfg("elsewhere", f.path()))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    let s = e.to_string();
    assert!(
        s.contains("\"elsewhere\"") && s.contains("no such remote"),
        "{s}"
    );
    assert!(s.contains(&f.path().display().to_string()), "{s}");
    assert_eq!(e.context_value("remote"), Some("elsewhere"));
}

#[test]
fn rclone_wrong_type() {
    let f = conf(&good_conf());
    let e = resolve(&rclone_cfg("other", f.path()))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert!(e.to_string().contains("type is \"s3\""), "{e}");
}

#[test]
fn rclone_without_refresh_token_never_prints_tokens() {
    let cases = [
        format!(
            "[r]\ntype = onedrive\nclient_id = id\ntoken = {{\"access_token\":\"{SECRET_AT}\",\"expiry\":\"x\"}}\n"
        ),
        format!(
            "[r]\ntype = onedrive\nclient_id = id\ntoken = {{\"access_token\":\"{SECRET_AT}\",\"refresh_token\":\"\"}}\n"
        ),
        "[r]\ntype = onedrive\nclient_id = id\n".to_owned(),
        // Broken JSON whose serde error would quote the value.
        format!(
            "[r]\ntype = onedrive\nclient_id = id\ntoken = {{\"refresh_token\":{SECRET_RT}}}\n"
        ),
        format!(
            "[r]\ntype = onedrive\nclient_id = id\ntoken = {{\"refresh_token\":[\"{SECRET_RT}\"]}}\n"
        ),
    ];
    for case in cases {
        let f = conf(&case);
        let e = resolve(&rclone_cfg("r", f.path())).map(|_| ()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput, "{case}");
        assert!(e.to_string().contains("\"r\""), "{e}");
        assert!(
            e.to_string().contains(&f.path().display().to_string()),
            "{e}"
        );
        assert_no_secrets(&e);
    }
}

#[test]
fn rclone_builtin_app_needs_client_id() {
    let f = conf(&format!(
        "[od]\ntype = onedrive\nclient_id =\nclient_secret =\ntoken = {{\"refresh_token\":\"{SECRET_RT}\"}}\n"
    ));
    let e = resolve(&rclone_cfg("od", f.path()))
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert!(e.to_string().contains("no client_id"), "{e}");
    assert!(e.hint().is_some_and(|h| h.contains("client_id")));
    assert_no_secrets(&e);
}

#[test]
fn rclone_region_requires_endpoints() {
    let body = format!(
        "[od]\ntype = onedrive\nclient_id = id\nregion = us\ntoken = {{\"refresh_token\":\"{SECRET_RT}\"}}\n"
    );
    let f = conf(&body);
    let e = resolve(&rclone_cfg("od", f.path()))
        .map(|_| ())
        .unwrap_err();
    assert!(e.to_string().contains("region \"us\""), "{e}");
    let mut cfg = rclone_cfg("od", f.path());
    cfg.graph_endpoint = Some("https://graph.microsoft.us".into());
    cfg.token_endpoint = Some("https://login.microsoftonline.us/common/oauth2/v2.0/token".into());
    assert!(resolve(&cfg).is_ok());
    let f = conf(&body.replace("region = us", "region = global"));
    assert!(resolve(&rclone_cfg("od", f.path())).is_ok());
}

#[test]
fn rclone_encrypted_config_is_refused() {
    let f = conf("# Encrypted rclone configuration File\n\nRCLONE_ENCRYPT_V0:\nabcdef\n");
    let e = resolve(&rclone_cfg("od", f.path()))
        .map(|_| ())
        .unwrap_err();
    assert!(e.to_string().contains("encrypted"), "{e}");
}

#[test]
fn ini_parser_handles_comments_quotes_and_repeats() {
    let ini = parse_ini(
        "; top comment\nstray = ignored\n[a]\n  key = \"quoted value\" \n# c\nk2=v=with=eq\n[b]\n\n[a]\nkey = later\n",
    );
    let names: Vec<_> = ini.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b", "a"]);
    assert_eq!(
        ini[0].1,
        [
            ("key".to_owned(), "quoted value".to_owned()),
            ("k2".to_owned(), "v=with=eq".to_owned())
        ]
    );
    // Repeated sections merge; later keys win.
    let f = conf(&format!(
        "[r]\ntype = onedrive\nclient_id = first\n[r]\nclient_id = second\ntoken = {{\"refresh_token\":\"{SECRET_RT}\"}}\n"
    ));
    let remote = read_rclone_remote(f.path(), "r").unwrap();
    assert_eq!(remote.client_id.as_deref(), Some("second"));
    assert!(!format!("{remote:?}").contains(SECRET_RT));
}

#[test]
fn default_rclone_config_follows_rclone() {
    let env = |k: &str| match k {
        "HOME" => Some(OsString::from("/home/op")),
        "XDG_CONFIG_HOME" => Some(OsString::from("/xdg")),
        _ => None,
    };
    assert_eq!(
        default_rclone_config(&env, &|_| false),
        Some(PathBuf::from("/xdg/rclone/rclone.conf"))
    );
    assert_eq!(
        default_rclone_config(&env, &|p| p
            == Path::new("/home/op/.config/rclone/rclone.conf")),
        Some(PathBuf::from("/home/op/.config/rclone/rclone.conf"))
    );
    let with_var = |k: &str| (k == "RCLONE_CONFIG").then(|| OsString::from("/etc/rc.conf"));
    assert_eq!(
        default_rclone_config(&with_var, &|_| false),
        Some(PathBuf::from("/etc/rc.conf"))
    );
    assert_eq!(default_rclone_config(&no_env, &|_| true), None);
}

#[test]
fn direct_credentials_rules() {
    let cfg = OneDriveConfig {
        refresh_token: Some(SECRET_RT.into()),
        ..Default::default()
    };
    let e = resolve(&cfg).map(|_| ()).unwrap_err();
    assert!(e.to_string().contains("client_id"), "{e}");
    assert_no_secrets(&e);

    let cfg = OneDriveConfig {
        refresh_token: Some(SECRET_RT.into()),
        access_token: Some(SECRET_AT.into()),
        client_id: Some("id".into()),
        ..Default::default()
    };
    assert!(resolve(&cfg).is_err());

    let e = resolve(&OneDriveConfig::default()).map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);

    let f = conf(&good_conf());
    let mut cfg = rclone_cfg("zentoria-onedrive", f.path());
    cfg.refresh_token = Some(SECRET_RT.into());
    assert!(resolve(&cfg).is_err());

    let cfg = OneDriveConfig {
        access_token: Some(SECRET_AT.into()),
        ..Default::default()
    };
    assert!(matches!(resolve(&cfg), Ok(Auth::Access(_))));
}

#[test]
fn debug_redacts_secrets() {
    let cfg = OneDriveConfig {
        root: Some("zdr".into()),
        client_id: Some("my-app-id".into()),
        client_secret: Some("top-secret-value".into()),
        refresh_token: Some(SECRET_RT.into()),
        access_token: Some(SECRET_AT.into()),
        rclone_remote: Some("zentoria-onedrive".into()),
        ..Default::default()
    };
    let s = format!("{cfg:?} {cfg:#?}");
    assert!(!s.contains("top-secret-value"), "{s}");
    assert_no_secrets(&Error::bad_input(s.clone()));
    assert!(
        s.contains("my-app-id") && s.contains("zentoria-onedrive"),
        "{s}"
    );
    assert!(s.contains("<redacted>"), "{s}");
    let unset = format!("{:?}", OneDriveConfig::default());
    assert!(!unset.contains("<redacted>"), "{unset}");
}

#[test]
fn secrets_deserialize_from_plain_strings() {
    let cfg: OneDriveConfig = serde_json::from_str(
        r#"{"client_id":"id","client_secret":"cs-value","refresh_token":"rt-value","access_token":"at-value"}"#,
    )
    .unwrap();
    assert_eq!(
        cfg.client_secret.as_ref().map(|s| s.expose()),
        Some("cs-value")
    );
    assert_eq!(
        cfg.refresh_token.as_ref().map(|s| s.expose()),
        Some("rt-value")
    );
    assert_eq!(
        cfg.access_token.as_ref().map(|s| s.expose()),
        Some("at-value")
    );
    let s = format!("{cfg:?}");
    assert!(
        !s.contains("cs-value") && !s.contains("rt-value") && !s.contains("at-value"),
        "{s}"
    );
}

#[test]
fn config_rejects_unknown_fields() {
    let ok: OneDriveConfig =
        serde_json::from_str(r#"{"root":"zdr","rclone_remote":"zentoria-onedrive"}"#).unwrap();
    assert_eq!(ok.rclone_remote.as_deref(), Some("zentoria-onedrive"));
    assert!(serde_json::from_str::<OneDriveConfig>(r#"{"drive_id":"x"}"#).is_err());
}

#[test]
fn urls_are_rewritten_only_at_the_known_endpoints() {
    let g = Some("http://127.0.0.1:9/prefix");
    let t = Some("http://127.0.0.1:9/tok");
    assert_eq!(
        rewrite_url(
            "https://graph.microsoft.com/v1.0/me/drive/root:/a:/content",
            g,
            t
        )
        .as_deref(),
        Some("http://127.0.0.1:9/prefix/v1.0/me/drive/root:/a:/content")
    );
    assert_eq!(
        rewrite_url(DEFAULT_TOKEN_ENDPOINT, g, t).as_deref(),
        Some("http://127.0.0.1:9/tok")
    );
    assert_eq!(
        rewrite_url("https://graph.microsoft.community/x", g, t),
        None
    );
    assert_eq!(
        rewrite_url("https://my.microsoftpersonalcontent.com/d", g, t),
        None
    );
    assert_eq!(
        rewrite_url("https://graph.microsoft.com/v1.0/me", None, t),
        None
    );
    assert_eq!(rewrite_url(DEFAULT_TOKEN_ENDPOINT, g, None), None);
}

#[test]
fn last_fragment_detection() {
    let put = |range: &str| {
        Request::put("http://x/upload/1")
            .header(http::header::CONTENT_RANGE, range)
            .body(())
            .unwrap()
    };
    assert!(is_last_fragment(&put("bytes 3932160-10498124/10498125")));
    assert!(!is_last_fragment(&put("bytes 0-3932159/10498125")));
    assert!(!is_last_fragment(&put("garbage")));
    let get = Request::get("http://x").body(()).unwrap();
    assert!(!is_last_fragment(&get));
}

#[test]
fn form_encoding() {
    assert_eq!(form_encode("a b+c/d=e&f~"), "a%20b%2Bc%2Fd%3De%26f~");
}

#[test]
fn upload_session_helpers() {
    assert_eq!(FRAGMENT_SIZE, 10 * 1024 * 1024);
    assert_eq!(FRAGMENT_SIZE % FRAGMENT_UNIT, 0);
    assert_eq!(
        next_expected(br#"{"nextExpectedRanges":["12345-"]}"#),
        Some(Some(12345))
    );
    assert_eq!(
        next_expected(br#"{"expirationDateTime":"x","nextExpectedRanges":["0-327679","400000-"]}"#),
        Some(Some(0))
    );
    assert_eq!(next_expected(br#"{"nextExpectedRanges":[]}"#), Some(None));
    assert_eq!(next_expected(br#"{"id":"x"}"#), None);
    assert_eq!(next_expected(b"not json"), None);
    assert_eq!(
        encode_path("zdr/a b/c+d%.tar.zst"),
        "zdr/a%20b/c%2Bd%25.tar.zst"
    );
    assert_eq!(encode_path("\u{e9}t\u{e9}"), "%C3%A9t%C3%A9");
    assert!(retryable(StatusCode::SERVICE_UNAVAILABLE));
    assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
    assert!(!retryable(StatusCode::INSUFFICIENT_STORAGE));
    assert!(!retryable(StatusCode::BAD_REQUEST));
    assert!(!retryable(StatusCode::NOT_IMPLEMENTED));
}

#[test]
fn retry_after_and_error_descriptions() {
    let resp = |status: u16, retry: Option<&str>, body: &str| {
        let mut b = Response::builder().status(status);
        if let Some(r) = retry {
            b = b.header(http::header::RETRY_AFTER, r);
        }
        b.body(Buffer::from(body.to_owned())).unwrap()
    };
    let cap = Duration::from_secs(300);
    assert_eq!(
        retry_after(&resp(429, Some("7"), ""), cap),
        Some(Duration::from_secs(7))
    );
    assert_eq!(retry_after(&resp(429, Some("99999"), ""), cap), Some(cap));
    assert_eq!(
        retry_after(&resp(503, Some("Wed, 21 Oct 2015 07:28:00 GMT"), ""), cap),
        None
    );
    assert_eq!(retry_after(&resp(503, None, ""), cap), None);
    let r = resp(
        403,
        None,
        r#"{"error":{"code":"accessDenied","message":"Access denied."}}"#,
    );
    assert_eq!(
        describe(&r),
        "HTTP 403 Forbidden (accessDenied: Access denied.)"
    );
    assert_eq!(describe(&resp(502, None, "<html>")), "HTTP 502 Bad Gateway");
    let e = opendal::Error::new(opendal::ErrorKind::Unexpected, "send http request")
        .with_context("url", "https://up.example/upload/secret?tempauth=SECRET");
    assert!(!describe_transport(&e).contains("SECRET"));
}

#[test]
fn tier_builds_offline_and_hides_secrets() {
    let cfg = OneDriveConfig {
        root: Some("/backups//zdr/".into()),
        client_id: Some("id".into()),
        refresh_token: Some(SECRET_RT.into()),
        graph_endpoint: Some("http://127.0.0.1:9/".into()),
        spool_dir: Some(PathBuf::from("/var/spool/zdr")),
        ..Default::default()
    };
    let tier = OneDriveTier::new("offsite", &cfg).unwrap();
    assert_eq!(tier.name(), "offsite");
    assert_eq!(tier.graph.root, "backups/zdr");
    assert_eq!(
        tier.graph.drive_root,
        "http://127.0.0.1:9/v1.0/me/drive/root"
    );
    assert_eq!(tier.graph.item_path("a/b c"), "backups/zdr/a/b%20c");
    let shown = format!("{tier:?} {cfg:?}");
    assert!(!shown.contains(SECRET_RT), "{shown}");
    assert!(shown.contains("/var/spool/zdr"), "{shown}");

    let cfg = OneDriveConfig {
        root: Some("zdr".into()),
        ..Default::default()
    };
    let e = OneDriveTier::new("offsite", &cfg).map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert_eq!(e.context_value("tier"), Some("offsite"));
}

#[test]
fn operator_builds_offline_and_checks_endpoints() {
    let mut cfg = OneDriveConfig {
        root: Some("zdr".into()),
        client_id: Some("id".into()),
        refresh_token: Some(SECRET_RT.into()),
        graph_endpoint: Some("https://graph.microsoft.us/".into()),
        token_endpoint: Some("https://login.microsoftonline.us/common/oauth2/v2.0/token".into()),
        ..Default::default()
    };
    let op = operator(&cfg).unwrap();
    assert!(op.info().capability().write);
    cfg.graph_endpoint = Some("graph.microsoft.us".into());
    let e = operator(&cfg).map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadInput);
    assert!(e.to_string().contains("graph_endpoint"), "{e}");
}
