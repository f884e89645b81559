//! Authentication and TLS of the Elasticsearch/OpenSearch connection, and
//! the assumed role of cross-account S3 reads.
//!
//! Basic auth, API key or bearer token go in one `Authorization` header
//! marked sensitive; `--es-aws-sigv4` signs every request with the AWS SDK's
//! own SigV4 signer (`aws-sigv4`) from the standard credential chain, for
//! Amazon OpenSearch Service (`es`) and OpenSearch Serverless (`aoss`, which
//! also needs the `x-amz-content-sha256` payload hash). Secrets are held in
//! [`Secret`], which never shows its value in `Debug` or `Display`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings,
};
use aws_sigv4::sign::v4;
use clap::{Args, ValueEnum};

pub use crate::redact::Secret;
use reqwest::header::{HeaderName, HeaderValue, AUTHORIZATION};

/// The AWS service a SigV4 signature is for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum AwsService {
    /// Amazon OpenSearch Service (managed domains).
    #[default]
    Es,
    /// Amazon OpenSearch Serverless.
    Aoss,
}

impl AwsService {
    pub fn name(self) -> &'static str {
        match self {
            AwsService::Es => "es",
            AwsService::Aoss => "aoss",
        }
    }
}

/// How drsink authenticates to Elasticsearch/OpenSearch.
#[derive(Debug, Clone, Default, Args)]
pub struct EsAuthArgs {
    /// User name for HTTP basic auth (with --es-password).
    #[arg(long, env = "DRSINK_ES_USERNAME")]
    pub es_username: Option<String>,

    /// Password for HTTP basic auth (never logged); prefer DRSINK_ES_PASSWORD.
    #[arg(long, env = "DRSINK_ES_PASSWORD", hide_env_values = true)]
    pub es_password: Option<Secret>,

    /// API key, sent as `Authorization: ApiKey <key>` (the base64 `encoded` form); never logged.
    #[arg(long, env = "DRSINK_ES_API_KEY", hide_env_values = true)]
    pub es_api_key: Option<Secret>,

    /// Bearer token, sent as `Authorization: Bearer <token>`; never logged.
    #[arg(long, env = "DRSINK_ES_BEARER_TOKEN", hide_env_values = true)]
    pub es_bearer_token: Option<Secret>,

    /// PEM file of the CA certificate(s) that signed the cluster's certificate.
    #[arg(long, env = "DRSINK_ES_CA_CERT")]
    pub es_ca_cert: Option<PathBuf>,

    /// PEM file of a client certificate (TLS client authentication; with --es-client-key).
    #[arg(long, env = "DRSINK_ES_CLIENT_CERT")]
    pub es_client_cert: Option<PathBuf>,

    /// PEM file of the client certificate's private key.
    #[arg(long, env = "DRSINK_ES_CLIENT_KEY")]
    pub es_client_key: Option<PathBuf>,

    /// Sign every request with AWS SigV4 (Amazon OpenSearch Service / Serverless),
    /// with credentials from the standard AWS chain.
    #[arg(long, env = "DRSINK_ES_AWS_SIGV4")]
    pub es_aws_sigv4: bool,

    /// Service name SigV4 signs for: `es` (OpenSearch Service) or `aoss` (Serverless).
    #[arg(long, env = "DRSINK_ES_AWS_SERVICE", value_enum, default_value_t = AwsService::Es, requires = "es_aws_sigv4")]
    pub es_aws_service: AwsService,

    /// Region SigV4 signs for [default: the AWS region].
    #[arg(long, env = "DRSINK_ES_AWS_REGION", requires = "es_aws_sigv4")]
    pub es_aws_region: Option<String>,
}

/// Cross-account S3 reads.
#[derive(Debug, Clone, Default, Args)]
pub struct AssumeRoleArgs {
    /// Role to assume (STS) for reading S3 objects, e.g. in the log archive account.
    #[arg(long, env = "DRSINK_ASSUME_ROLE_ARN")]
    pub assume_role_arn: Option<String>,

    /// External id the role's trust policy requires (with --assume-role-arn).
    #[arg(long, env = "DRSINK_EXTERNAL_ID", hide_env_values = true)]
    pub external_id: Option<Secret>,
}

/// The AWS configuration of S3 reads: `base`, or with `--assume-role-arn`
/// the same with credentials of the assumed role (refreshed before they
/// expire by the SDK's provider).
pub async fn s3_config(
    base: &aws_config::SdkConfig,
    args: &AssumeRoleArgs,
) -> Result<aws_config::SdkConfig, String> {
    let Some(role) = &args.assume_role_arn else {
        if args.external_id.is_some() {
            return Err("--external-id needs --assume-role-arn".to_owned());
        }
        return Ok(base.clone());
    };
    if !role.starts_with("arn:") {
        return Err(format!(
            "--assume-role-arn `{role}` is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)"
        ));
    }
    let mut builder = aws_config::sts::AssumeRoleProvider::builder(role.clone())
        .session_name("drsink")
        .configure(base);
    if let Some(id) = &args.external_id {
        builder = builder.external_id(id.expose());
    }
    let provider = builder.build().await;
    Ok(base
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .build())
}

/// What each request to the cluster carries.
#[derive(Debug, Clone, Default)]
pub enum EsAuth {
    #[default]
    None,
    /// A ready `Authorization` header value (marked sensitive).
    Header(HeaderValue),
    SigV4(std::sync::Arc<SigV4>),
}

/// Client settings and authentication of the Elasticsearch/OpenSearch connection.
#[derive(Debug, Clone, Default)]
pub struct EsConnection {
    pub auth: EsAuth,
    ca_certs: Vec<reqwest::Certificate>,
    identity: Option<reqwest::Identity>,
}

impl EsConnection {
    /// Whether the cluster is OpenSearch Serverless (`--es-aws-service aoss`),
    /// which answers only index-level APIs (`GET /` is a 404 there).
    pub fn is_serverless(&self) -> bool {
        matches!(&self.auth, EsAuth::SigV4(signer) if signer.service == AwsService::Aoss)
    }

    /// Whether a client certificate (`--es-client-cert`) is presented.
    pub fn has_client_certificate(&self) -> bool {
        self.identity.is_some()
    }

    pub fn from_args(args: &EsAuthArgs, aws: &aws_config::SdkConfig) -> Result<Self, String> {
        let schemes = [
            args.es_username.is_some() || args.es_password.is_some(),
            args.es_api_key.is_some(),
            args.es_bearer_token.is_some(),
            args.es_aws_sigv4,
        ];
        if schemes.iter().filter(|&&on| on).count() > 1 {
            return Err("choose one of --es-username/--es-password, --es-api-key, --es-bearer-token and --es-aws-sigv4".to_owned());
        }
        let auth = match (&args.es_username, &args.es_password) {
            (Some(user), Some(password)) => EsAuth::Header(basic(user, password)?),
            (Some(_), None) => return Err("--es-username needs --es-password".to_owned()),
            (None, Some(_)) => return Err("--es-password needs --es-username".to_owned()),
            (None, None) => {
                if let Some(key) = &args.es_api_key {
                    EsAuth::Header(sensitive(
                        &format!("ApiKey {}", key.expose()),
                        "--es-api-key",
                    )?)
                } else if let Some(token) = &args.es_bearer_token {
                    EsAuth::Header(sensitive(
                        &format!("Bearer {}", token.expose()),
                        "--es-bearer-token",
                    )?)
                } else if args.es_aws_sigv4 {
                    let region = args
                        .es_aws_region
                        .clone()
                        .or_else(|| aws.region().map(|r| r.to_string()))
                        .ok_or("--es-aws-sigv4 needs a region: --es-aws-region or AWS_REGION")?;
                    let credentials = aws
                        .credentials_provider()
                        .ok_or("--es-aws-sigv4: no AWS credentials provider is configured")?;
                    EsAuth::SigV4(std::sync::Arc::new(SigV4::new(
                        credentials,
                        region,
                        args.es_aws_service,
                    )))
                } else {
                    EsAuth::None
                }
            }
        };
        let ca_certs = match &args.es_ca_cert {
            Some(path) => ca_certificates(path, "--es-ca-cert")?,
            None => Vec::new(),
        };
        let identity = match (&args.es_client_cert, &args.es_client_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read(cert, "--es-client-cert")?;
                pem.push(b'\n');
                pem.extend_from_slice(&read(key, "--es-client-key")?);
                // The parser's error could quote the key; say only what failed.
                Some(reqwest::Identity::from_pem(&pem).map_err(|_| {
                    format!(
                        "--es-client-cert {} / --es-client-key {}: not a PEM certificate and private key",
                        cert.display(),
                        key.display()
                    )
                })?)
            }
            (Some(_), None) => return Err("--es-client-cert needs --es-client-key".to_owned()),
            (None, Some(_)) => return Err("--es-client-key needs --es-client-cert".to_owned()),
            (None, None) => None,
        };
        Ok(EsConnection {
            auth,
            ca_certs,
            identity,
        })
    }

    /// An HTTP client with this connection's TLS settings.
    pub fn client(&self, timeout: Duration) -> Result<reqwest::Client, String> {
        // A redirect is not followed: the credentials would go along to
        // wherever it points (reqwest keeps them when only the scheme
        // changes), and a POST would turn into a GET.
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none());
        for cert in &self.ca_certs {
            builder = builder.add_root_certificate(cert.clone());
        }
        if let Some(identity) = &self.identity {
            builder = builder.identity(identity.clone());
        }
        builder
            .build()
            .map_err(|e| format!("cannot set up the HTTP client: {e}"))
    }

    /// Adds the credentials (or the SigV4 signature) to a built request.
    pub async fn authorize(&self, request: &mut reqwest::Request) -> Result<(), String> {
        match &self.auth {
            EsAuth::None => Ok(()),
            EsAuth::Header(value) => {
                request.headers_mut().insert(AUTHORIZATION, value.clone());
                Ok(())
            }
            EsAuth::SigV4(signer) => signer.sign(request).await,
        }
    }
}

/// The CA certificates of a PEM bundle (`--es-ca-cert`, `--hec-ca-cert`),
/// trusted besides the built-in roots.
pub fn ca_certificates(path: &Path, flag: &str) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = read(path, flag)?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{flag} {}: not a PEM certificate: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{flag} {}: no certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

fn sensitive(value: &str, flag: &str) -> Result<HeaderValue, String> {
    let mut header = HeaderValue::from_str(value)
        .map_err(|_| format!("{flag} holds characters not allowed in an HTTP header"))?;
    header.set_sensitive(true);
    Ok(header)
}

fn basic(user: &str, password: &Secret) -> Result<HeaderValue, String> {
    use base64_engine::encode;
    let raw = format!("{user}:{}", password.expose());
    sensitive(
        &format!("Basic {}", encode(raw.as_bytes())),
        "--es-username/--es-password",
    )
}

/// Standard base64 (RFC 4648, padded), enough for a basic-auth header.
mod base64_engine {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(input: &[u8]) -> String {
        let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

/// Refresh credentials this long before they expire.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(300);

/// Signs requests with AWS SigV4, with credentials from a provider (cached
/// until shortly before they expire).
pub struct SigV4 {
    provider: SharedCredentialsProvider,
    region: String,
    service: AwsService,
    cached: tokio::sync::Mutex<Option<Credentials>>,
}

impl std::fmt::Debug for SigV4 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigV4")
            .field("region", &self.region)
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl SigV4 {
    pub fn new(provider: SharedCredentialsProvider, region: String, service: AwsService) -> Self {
        SigV4 {
            provider,
            region,
            service,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    async fn credentials(&self) -> Result<Credentials, String> {
        let mut cached = self.cached.lock().await;
        if let Some(credentials) = cached.as_ref() {
            let fresh = credentials
                .expiry()
                .is_none_or(|at| at > SystemTime::now() + CREDENTIALS_MARGIN);
            if fresh {
                return Ok(credentials.clone());
            }
        }
        let credentials = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| format!("cannot get AWS credentials to sign requests: {e}"))?;
        *cached = Some(credentials.clone());
        Ok(credentials)
    }

    pub async fn sign(&self, request: &mut reqwest::Request) -> Result<(), String> {
        let credentials = self.credentials().await?;
        sign_request(
            request,
            &credentials,
            &self.region,
            self.service.name(),
            self.service == AwsService::Aoss,
            SystemTime::now(),
        )
    }
}

/// Signs `request` in place: adds `x-amz-date`, `authorization` (and
/// `x-amz-security-token` for temporary credentials, `x-amz-content-sha256`
/// with `payload_hash_header`).
pub fn sign_request(
    request: &mut reqwest::Request,
    credentials: &Credentials,
    region: &str,
    service: &str,
    payload_hash_header: bool,
    time: SystemTime,
) -> Result<(), String> {
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    if payload_hash_header {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let params: aws_sigv4::http_request::SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| format!("cannot sign the request: {e}"))?
        .into();
    let body: &[u8] = match request.body() {
        None => &[],
        Some(body) => body
            .as_bytes()
            .ok_or("cannot sign a streamed request body")?,
    };
    let headers: Vec<(&str, &str)> = request
        .headers()
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect();
    let signable = SignableRequest::new(
        request.method().as_str(),
        request.url().as_str(),
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| format!("cannot sign the request: {e}"))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| format!("cannot sign the request: {e}"))?
        .into_parts();
    let (new_headers, _) = instructions.into_parts();
    for header in new_headers {
        let name = HeaderName::from_static(header.name());
        let mut value = HeaderValue::from_str(header.value())
            .map_err(|e| format!("cannot sign the request: {e}"))?;
        value.set_sensitive(header.sensitive() || name == AUTHORIZATION);
        request.headers_mut().insert(name, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_credentials() -> Credentials {
        // The credentials of AWS's SigV4 test suite.
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        )
    }

    fn suite_time() -> SystemTime {
        // 2015-08-30T12:36:00Z
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    /// A request to the AWS SigV4 test suite's host, signed as the suite
    /// does: us-east-1, service "service", at 20150830T123600Z.
    fn suite_request(method: reqwest::Method) -> reqwest::Request {
        let mut request = reqwest::Client::new()
            .request(method, "https://example.amazonaws.com/")
            .build()
            .expect("valid request");
        sign_request(
            &mut request,
            &example_credentials(),
            "us-east-1",
            "service",
            false,
            suite_time(),
        )
        .expect("signed");
        request
    }

    #[test]
    fn signature_matches_the_aws_test_suite_post_vanilla() {
        let request = suite_request(reqwest::Method::POST);
        let auth = request.headers()[AUTHORIZATION].to_str().expect("ascii");
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
        assert_eq!(request.headers()["x-amz-date"], "20150830T123600Z");
        assert!(request.headers()[AUTHORIZATION].is_sensitive());
    }

    #[test]
    fn signature_matches_the_aws_test_suite_get_vanilla() {
        let request = suite_request(reqwest::Method::GET);
        let auth = request.headers()[AUTHORIZATION].to_str().expect("ascii");
        assert!(
            auth.ends_with(
                "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            ),
            "{auth}"
        );
    }

    #[test]
    fn aoss_signs_the_payload_hash() {
        let client = reqwest::Client::new();
        let mut request = client
            .post("https://abc.us-west-2.aoss.amazonaws.com/_bulk")
            .header("content-type", "application/x-ndjson")
            .body("{\"create\":{}}\n{}\n")
            .build()
            .expect("valid request");
        let credentials = Credentials::new("AKID", "SECRET", Some("TOKEN".into()), None, "t");
        sign_request(
            &mut request,
            &credentials,
            "us-west-2",
            "aoss",
            true,
            suite_time(),
        )
        .expect("signed");
        let headers = request.headers();
        // sha256 of the body
        assert_eq!(
            headers["x-amz-content-sha256"]
                .to_str()
                .expect("ascii")
                .len(),
            64
        );
        assert_eq!(headers["x-amz-security-token"], "TOKEN");
        let auth = headers[AUTHORIZATION].to_str().expect("ascii");
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-west-2/aoss/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature="
        ), "{auth}");
    }

    #[test]
    fn secrets_never_show() {
        let args = EsAuthArgs {
            es_username: Some("elastic".into()),
            es_password: Some(Secret::new("hunter2-secret")),
            ..Default::default()
        };
        assert!(!format!("{args:?}").contains("hunter2"));
        let aws = aws_config::SdkConfig::builder().build();
        let connection = EsConnection::from_args(&args, &aws).expect("valid");
        assert!(!format!("{connection:?}").contains("hunter2"));
        let EsAuth::Header(value) = &connection.auth else {
            panic!("basic auth expected");
        };
        assert_eq!(value, "Basic ZWxhc3RpYzpodW50ZXIyLXNlY3JldA==");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64_engine::encode(b""), "");
        assert_eq!(base64_engine::encode(b"f"), "Zg==");
        assert_eq!(base64_engine::encode(b"fo"), "Zm8=");
        assert_eq!(base64_engine::encode(b"foo"), "Zm9v");
        assert_eq!(base64_engine::encode(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[tokio::test]
    async fn assume_role_needs_an_arn() {
        let base = aws_config::SdkConfig::builder().build();
        let only_id = AssumeRoleArgs {
            assume_role_arn: None,
            external_id: Some(Secret::new("x")),
        };
        assert!(s3_config(&base, &only_id).await.is_err());
        let bad = AssumeRoleArgs {
            assume_role_arn: Some("reader".into()),
            external_id: None,
        };
        assert!(s3_config(&base, &bad)
            .await
            .is_err_and(|e| e.contains("not a role ARN")));
        assert!(s3_config(&base, &AssumeRoleArgs::default()).await.is_ok());
    }

    #[test]
    fn one_scheme_at_a_time() {
        let args = EsAuthArgs {
            es_api_key: Some(Secret::new("k")),
            es_bearer_token: Some(Secret::new("t")),
            ..Default::default()
        };
        let aws = aws_config::SdkConfig::builder().build();
        assert!(EsConnection::from_args(&args, &aws).is_err());
    }
}
