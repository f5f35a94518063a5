//! Unfinished S3 multipart uploads: list and abort them.
//!
//! A write of more than one part to an S3 tier is a multipart upload. When the writer dies
//! (killed, its server gone, its run interrupted) the upload stays open on the server and
//! its parts keep taking space, invisible to a normal listing. OpenDAL has no call to list
//! them, so zdr speaks the two requests it needs itself (`GET ?uploads`, `DELETE
//! ?uploadId=`), signed with AWS Signature Version 4.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use zdr_core::{Error, ErrorKind, Result, Secret};

use crate::tier::S3Config;

/// An upload that was started and never completed or aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnfinishedUpload {
    /// The object key inside the bucket (the tier's root included).
    pub key: String,
    /// The server's id of the upload.
    pub upload_id: String,
    /// When it was started, if the server said.
    pub initiated: Option<DateTime<Utc>>,
}

/// Create the bucket `config` names on its endpoint unless it exists (a restore into a
/// bucket that is gone); true when it was created.
///
/// # Errors
/// Storage errors naming `name` (the tier or component) and the HTTP status (403 for
/// wrong credentials).
pub async fn ensure_bucket(name: &str, config: &S3Config) -> Result<bool> {
    S3Uploads::new(name, config)?.ensure_bucket().await
}

/// Delete the bucket `config` names, which must be empty (a drill's scratch bucket once its
/// objects are gone); a bucket that does not exist is not an error.
///
/// # Errors
/// Storage errors naming `name` and the HTTP status (409 for a bucket that is not empty).
pub async fn remove_bucket(name: &str, config: &S3Config) -> Result<()> {
    S3Uploads::new(name, config)?.remove_bucket().await
}

/// The unfinished multipart uploads under the root of the S3 tier `name` configured by
/// `config`: what interrupted writes left holding space on the server (zdr aborts its own
/// when a write fails, when its run is interrupted, and, past the grace period, in the next
/// run's sweep).
///
/// # Errors
/// A configuration that cannot work, or a server that cannot list them (storage error
/// naming the tier).
pub async fn unfinished_uploads(name: &str, config: &S3Config) -> Result<Vec<UnfinishedUpload>> {
    S3Uploads::new(name, config)?.list("").await
}

/// Lists and aborts the unfinished multipart uploads under one S3 tier's root.
#[derive(Clone)]
pub(crate) struct S3Uploads {
    tier: String,
    /// `scheme://host[:port]`.
    origin: String,
    /// `host[:port]` as signed.
    host: String,
    /// The path of the bucket: `/bucket` (path style) or empty (virtual host style).
    bucket_path: String,
    region: String,
    /// The tier's root inside the bucket, `dir/` or empty.
    root: String,
    credentials: Option<(String, Secret)>,
    client: reqwest::Client,
}

impl std::fmt::Debug for S3Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Uploads")
            .field("tier", &self.tier)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl S3Uploads {
    /// The janitor of tier `tier` configured by `c`.
    pub(crate) fn new(tier: &str, c: &S3Config) -> Result<Self> {
        let region = c.region.clone().unwrap_or_else(|| "us-east-1".to_owned());
        let endpoint = c
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let bad = || {
            Error::bad_input(format!("tier {tier:?}: endpoint {endpoint:?} is not a URL"))
                .with_context("tier", tier)
        };
        let (scheme, rest) = endpoint.split_once("://").ok_or_else(bad)?;
        let host = rest.split('/').next().unwrap_or_default().to_owned();
        if host.is_empty() || !matches!(scheme, "http" | "https") {
            return Err(bad());
        }
        let (host, bucket_path) = if c.virtual_host_style {
            (format!("{}.{host}", c.bucket), String::new())
        } else {
            (host, format!("/{}", uri_encode(&c.bucket, false)))
        };
        let root = c
            .root
            .as_deref()
            .map(|r| r.trim_matches('/'))
            .filter(|r| !r.is_empty())
            .map(|r| format!("{r}/"))
            .unwrap_or_default();
        let credentials = match (&c.access_key_id, &c.secret_access_key) {
            (Some(id), Some(secret)) => Some((id.clone(), secret.clone())),
            _ => None,
        };
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| Error::unexpected(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            tier: tier.to_owned(),
            origin: format!("{scheme}://{host}"),
            host,
            bucket_path,
            region,
            root,
            credentials,
            client,
        })
    }

    /// The full object key of the tier's `key`.
    pub(crate) fn object_key(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    /// Every unfinished upload whose key starts with the tier's root followed by `prefix`.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<UnfinishedUpload>> {
        let prefix = self.object_key(prefix);
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        loop {
            let mut query = vec![
                ("prefix".to_owned(), prefix.clone()),
                ("uploads".to_owned(), String::new()),
            ];
            if let Some((key, id)) = &markers {
                query.push(("key-marker".to_owned(), key.clone()));
                query.push(("upload-id-marker".to_owned(), id.clone()));
            }
            let body = self
                .send("GET", "", &query, "list unfinished uploads")
                .await?;
            let page = parse_list(&body);
            out.extend(page.uploads);
            match (page.truncated, page.next_key, page.next_upload_id) {
                (true, Some(k), Some(i)) if markers.as_ref() != Some(&(k.clone(), i.clone())) => {
                    markers = Some((k, i));
                }
                _ => break,
            }
        }
        Ok(out)
    }

    /// The bytes the parts of `upload` hold (the first page of parts: up to 1,000).
    pub(crate) async fn parts_size(&self, upload: &UnfinishedUpload) -> Result<u64> {
        let query = vec![("uploadId".to_owned(), upload.upload_id.clone())];
        let body = self.send("GET", &upload.key, &query, "list parts").await?;
        let mut total = 0u64;
        let mut rest = body.as_str();
        while let Some(start) = rest.find("<Size>") {
            let after = &rest[start + "<Size>".len()..];
            let end = after.find("</Size>").unwrap_or(after.len());
            total += after[..end].trim().parse::<u64>().unwrap_or(0);
            rest = &after[end..];
        }
        Ok(total)
    }

    /// Abort `upload`: the server drops its parts.
    pub(crate) async fn abort(&self, upload: &UnfinishedUpload) -> Result<()> {
        let query = vec![("uploadId".to_owned(), upload.upload_id.clone())];
        self.send("DELETE", &upload.key, &query, "abort an unfinished upload")
            .await
            .map(|_| ())
            .map_err(|e| e.with_context("upload", &upload.upload_id))
    }

    /// Create the bucket unless it exists; true when it was created.
    pub(crate) async fn ensure_bucket(&self) -> Result<bool> {
        match self.send("HEAD", "", &[], "look up the bucket").await {
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match self
            .send_body(
                "PUT",
                "",
                &[],
                create_bucket_body(&self.region),
                "create the bucket",
            )
            .await
        {
            Ok(_) => Ok(true),
            // Created by someone else between the lookup and the creation.
            Err(e) if e.message().contains("BucketAlreadyOwnedByYou") => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Delete the (empty) bucket; a bucket already gone is not an error.
    pub(crate) async fn remove_bucket(&self) -> Result<()> {
        self.send("DELETE", "", &[], "delete the bucket")
            .await
            .map(|_| ())
    }

    async fn send(
        &self,
        method: &str,
        key: &str,
        query: &[(String, String)],
        what: &str,
    ) -> Result<String> {
        self.send_body(method, key, query, Vec::new(), what).await
    }

    async fn send_body(
        &self,
        method: &str,
        key: &str,
        query: &[(String, String)],
        body: Vec<u8>,
        what: &str,
    ) -> Result<String> {
        let path = if key.is_empty() {
            if self.bucket_path.is_empty() {
                "/".to_owned()
            } else {
                self.bucket_path.clone()
            }
        } else {
            format!("{}/{}", self.bucket_path, uri_encode(key, true))
        };
        let mut pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
            .collect();
        pairs.sort();
        let canonical_query = pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let url = format!("{}{path}?{canonical_query}", self.origin);
        let http_method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| Error::unexpected(format!("bad HTTP method {method}: {e}")))?;
        let payload = hex::encode(Sha256::digest(&body));
        let mut request = self.client.request(http_method, &url);
        if !body.is_empty() {
            request = request.body(body);
        }
        if let Some((id, secret)) = &self.credentials {
            let now = Utc::now();
            let signed = sign_v4(&SignInput {
                method,
                path: &path,
                query: &canonical_query,
                host: &self.host,
                region: &self.region,
                access_key_id: id,
                secret: secret.expose(),
                payload: &payload,
                now,
            });
            request = request
                .header("x-amz-date", signed.amz_date)
                .header("x-amz-content-sha256", &payload)
                .header("authorization", signed.authorization);
        }
        let where_ = |e: Error| {
            e.with_context("tier", &self.tier)
                .with_context("key", if key.is_empty() { "(bucket)" } else { key })
        };
        let response = request.send().await.map_err(|e| {
            where_(Error::new(ErrorKind::Storage, format!("{what} failed")).with_source(e))
                .temporary()
        })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if status.is_success() || (method == "DELETE" && status.as_u16() == 404) {
            return Ok(body);
        }
        let code = between(&body, "<Code>", "</Code>").unwrap_or_default();
        let kind = if method == "HEAD" && status.as_u16() == 404 {
            ErrorKind::NotFound
        } else {
            ErrorKind::Storage
        };
        let err = where_(Error::new(
            kind,
            format!("{what} failed: HTTP {status} {code}")
                .trim_end()
                .to_owned(),
        ));
        Err(if status.is_server_error() {
            err.temporary()
        } else {
            err
        })
    }
}

/// The body of a bucket creation in `region`: none in `us-east-1` (which refuses a location
/// constraint naming itself), elsewhere the `LocationConstraint` AWS needs to create the
/// bucket there rather than refuse it.
fn create_bucket_body(region: &str) -> Vec<u8> {
    if region.is_empty() || region == "us-east-1" {
        return Vec::new();
    }
    format!(
        "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
        xml_escape(region)
    )
    .into_bytes()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

struct SignInput<'a> {
    method: &'a str,
    /// The canonical (already encoded) path.
    path: &'a str,
    /// The canonical (encoded, sorted) query string.
    query: &'a str,
    host: &'a str,
    region: &'a str,
    access_key_id: &'a str,
    secret: &'a str,
    /// The hex SHA-256 of the body.
    payload: &'a str,
    now: DateTime<Utc>,
}

struct Signed {
    amz_date: String,
    authorization: String,
}

/// AWS Signature Version 4 for a request without a body, signing `host`,
/// `x-amz-content-sha256` and `x-amz-date`.
fn sign_v4(i: &SignInput<'_>) -> Signed {
    let amz_date = i.now.format("%Y%m%dT%H%M%SZ").to_string();
    let day = i.now.format("%Y%m%d").to_string();
    let signed_headers = "host;x-amz-content-sha256;x-amz-date";
    let canonical = format!(
        "{}\n{}\n{}\nhost:{}\nx-amz-content-sha256:{}\nx-amz-date:{amz_date}\n\n{signed_headers}\n{}",
        i.method, i.path, i.query, i.host, i.payload, i.payload
    );
    let scope = format!("{day}/{}/s3/aws4_request", i.region);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac_sha256(format!("AWS4{}", i.secret).as_bytes(), day.as_bytes());
    for part in [i.region, "s3", "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac_sha256(&key, to_sign.as_bytes()));
    Signed {
        authorization: format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            i.access_key_id
        ),
        amz_date,
    }
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer.finalize());
    out
}

/// RFC 3986 percent-encoding as SigV4 wants it; `/` kept when `keep_slash`.
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else if b == b'/' && keep_slash {
            out.push('/');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct ListPage {
    uploads: Vec<UnfinishedUpload>,
    truncated: bool,
    next_key: Option<String>,
    next_upload_id: Option<String>,
}

/// Parse a `ListMultipartUploadsResult`.
fn parse_list(body: &str) -> ListPage {
    let mut uploads = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find("<Upload>") {
        let after = &rest[start + "<Upload>".len()..];
        let Some(end) = after.find("</Upload>") else {
            break;
        };
        let item = &after[..end];
        if let (Some(key), Some(id)) = (
            between(item, "<Key>", "</Key>"),
            between(item, "<UploadId>", "</UploadId>"),
        ) {
            let initiated = between(item, "<Initiated>", "</Initiated>")
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc));
            uploads.push(UnfinishedUpload {
                key,
                upload_id: id,
                initiated,
            });
        }
        rest = &after[end..];
    }
    ListPage {
        uploads,
        truncated: between(body, "<IsTruncated>", "</IsTruncated>").as_deref() == Some("true"),
        next_key: between(body, "<NextKeyMarker>", "</NextKeyMarker>"),
        next_upload_id: between(body, "<NextUploadIdMarker>", "</NextUploadIdMarker>"),
    }
}

/// The unescaped text between the first `open` and the following `close`.
fn between(s: &str, open: &str, close: &str) -> Option<String> {
    let start = s.find(open)? + open.len();
    let len = s[start..].find(close)?;
    Some(unescape(&s[start..start + len]))
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-256 of the empty body.
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn signature_matches_the_aws_s3_example() {
        // The GET Object example of the AWS S3 SigV4 documentation, with the body hash of an
        // empty payload and no range header: the derived signing key and the shape of the
        // request are checked against an independent computation of the same algorithm.
        let now = DateTime::parse_from_rfc3339("2013-05-24T00:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default();
        let s = sign_v4(&SignInput {
            method: "GET",
            path: "/test.txt",
            query: "",
            host: "examplebucket.s3.amazonaws.com",
            region: "us-east-1",
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            payload: EMPTY_SHA256,
            now,
        });
        assert_eq!(s.amz_date, "20130524T000000Z");
        assert!(
            s.authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature="
            ),
            "{}",
            s.authorization
        );
        // The AWS "GET Bucket lifecycle" example signs exactly these three headers with an
        // empty body: its published signature.
        let s = sign_v4(&SignInput {
            method: "GET",
            path: "/",
            query: "lifecycle=",
            host: "examplebucket.s3.amazonaws.com",
            region: "us-east-1",
            access_key_id: "AKIAIOSFODNN7EXAMPLE",
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            payload: EMPTY_SHA256,
            now,
        });
        assert!(
            s.authorization
                .ends_with("fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
            "{}",
            s.authorization
        );
    }

    #[test]
    fn a_bucket_outside_us_east_1_is_created_with_its_location_constraint() {
        assert!(create_bucket_body("us-east-1").is_empty());
        assert!(create_bucket_body("").is_empty());
        assert_eq!(
            String::from_utf8(create_bucket_body("eu-central-1")).unwrap_or_default(),
            "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>eu-central-1</LocationConstraint></CreateBucketConfiguration>"
        );
    }

    #[test]
    fn list_pages_parse() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult><Bucket>b</Bucket><NextKeyMarker>r/a&amp;b</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker><IsTruncated>true</IsTruncated>
<Upload><Key>r/a.lz4</Key><UploadId>u1</UploadId><Initiated>2026-11-30T10:00:00.000Z</Initiated></Upload>
<Upload><Key>r/a&amp;b</Key><UploadId>u2</UploadId></Upload></ListMultipartUploadsResult>"#;
        let page = parse_list(body);
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[0].key, "r/a.lz4");
        assert!(page.uploads[0].initiated.is_some());
        assert_eq!(page.uploads[1].key, "r/a&b");
        assert!(page.truncated);
        assert_eq!(page.next_key.as_deref(), Some("r/a&b"));
        assert_eq!(page.next_upload_id.as_deref(), Some("u2"));
        assert_eq!(uri_encode("a b/c~", true), "a%20b/c~");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
    }
}
