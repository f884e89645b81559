//! Stage 2: an object reference → a byte stream from S3.
//!
//! The body is streamed, never held whole in memory, and read from the region
//! the notification names: in a DR setup the bucket may live in the other one.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::Client;
use tokio::io::AsyncBufRead;

use crate::aws::describe;
use crate::notification::ObjectRef;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The object was deleted (or never existed) after it was notified.
    #[error("{0} no longer exists")]
    Missing(String),
    /// The object is in an archive tier (S3 Glacier Flexible Retrieval,
    /// Deep Archive, an Intelligent-Tiering archive tier) and not restored:
    /// no read succeeds until someone restores it.
    #[error("{object} is archived ({class}) and not restored")]
    Archived { object: String, class: String },
    #[error("cannot read {object}: {reason}")]
    Failed { object: String, reason: String },
}

/// S3 clients, one per region, sharing the process's AWS configuration.
pub struct ObjectStore {
    base: aws_config::SdkConfig,
    force_path_style: bool,
    clients: Mutex<HashMap<String, Client>>,
}

impl ObjectStore {
    pub fn new(base: aws_config::SdkConfig, force_path_style: bool) -> Self {
        ObjectStore {
            base,
            force_path_style,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The S3 client for a region (default: the process's own).
    pub fn client(&self, region: Option<&str>) -> Client {
        let region = region
            .map(str::to_owned)
            .or_else(|| self.base.region().map(|r| r.to_string()))
            .unwrap_or_default();
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(region.clone())
            .or_insert_with(|| {
                let mut conf = aws_sdk_s3::config::Builder::from(&self.base)
                    .force_path_style(self.force_path_style);
                if !region.is_empty() {
                    conf = conf.region(aws_sdk_s3::config::Region::new(region));
                }
                Client::from_conf(conf.build())
            })
            .clone()
    }

    /// Opens the object (the notified version, when the notification names one).
    pub async fn open(
        &self,
        object: &ObjectRef,
    ) -> Result<impl AsyncBufRead + Send + Unpin + 'static, OpenError> {
        let response = self
            .client(object.region.as_deref())
            .get_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .set_version_id(object.version_id.clone())
            .send()
            .await;
        match response {
            Ok(output) => Ok(output.body.into_async_read()),
            Err(err) => match err.as_service_error() {
                // The notified version may be gone too (a lifecycle rule
                // expiring noncurrent versions); S3 names no type for that.
                Some(GetObjectError::NoSuchKey(_)) => Err(OpenError::Missing(object.to_string())),
                Some(e) if e.code() == Some("NoSuchVersion") => {
                    Err(OpenError::Missing(object.to_string()))
                }
                Some(GetObjectError::InvalidObjectState(e)) => {
                    let class = e
                        .storage_class()
                        .map_or("an archive storage class", |c| c.as_str());
                    Err(OpenError::Archived {
                        object: object.to_string(),
                        class: match e.access_tier() {
                            Some(tier) => format!("{class}, {} tier", tier.as_str()),
                            None => class.to_owned(),
                        },
                    })
                }
                _ => Err(OpenError::Failed {
                    object: object.to_string(),
                    reason: describe(&err),
                }),
            },
        }
    }
}
