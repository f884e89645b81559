//! Stage 1: an SQS message body → the S3 objects it names.
//!
//! Accepted shapes: S3 event notifications (`Records[]`, possibly several),
//! the same wrapped by SNS (`Type: Notification`, the event as a JSON string in
//! `Message`), EventBridge `Object Created` events, and `s3:TestEvent`.

use chrono::{DateTime, Utc};
use serde_json::Value;

/// One S3 object to read, as named by a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    /// Decoded key (S3 notifications URL-encode it; EventBridge does not).
    pub key: String,
    /// Region of the bucket, when the notification says.
    pub region: Option<String>,
    pub version_id: Option<String>,
    /// When S3 says the object was created: the start of the DR lag.
    pub event_time: Option<DateTime<Utc>>,
}

impl ObjectRef {
    /// An object named by bucket and key alone (a listing, a dead letter):
    /// no region, version or event time.
    pub fn new(bucket: impl Into<String>, key: impl Into<String>) -> Self {
        ObjectRef {
            bucket: bucket.into(),
            key: key.into(),
            region: None,
            version_id: None,
            event_time: None,
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// What a message body asks of the worker.
#[derive(Debug, PartialEq, Eq)]
pub enum Notification {
    /// `s3:TestEvent`, sent when a bucket notification is configured.
    Test,
    /// Objects to index, and the names of events that name nothing to index
    /// (e.g. `ObjectRemoved:Delete`).
    Objects {
        objects: Vec<ObjectRef>,
        ignored: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotificationError {
    #[error("the body is not JSON ({0})")]
    NotJson(String),
    #[error("the body is JSON of no known notification shape")]
    UnknownShape,
    #[error("record {index} has no {field}")]
    MissingField { index: usize, field: &'static str },
    #[error("the object key `{0}` is not valid URL-encoded UTF-8")]
    BadKey(String),
}

/// Parses one SQS message body.
pub fn parse(body: &str) -> Result<Notification, NotificationError> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| NotificationError::NotJson(e.to_string()))?;
    parse_value(&value, true)
}

fn parse_value(value: &Value, unwrap_sns: bool) -> Result<Notification, NotificationError> {
    if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Notification::Test);
    }
    if let Some(records) = value.get("Records").and_then(Value::as_array) {
        return parse_s3_records(records);
    }
    if value.get("detail-type").and_then(Value::as_str).is_some()
        && value.get("source").and_then(Value::as_str) == Some("aws.s3")
    {
        return parse_eventbridge(value);
    }
    if unwrap_sns && value.get("Type").and_then(Value::as_str) == Some("Notification") {
        let inner = value
            .get("Message")
            .and_then(Value::as_str)
            .ok_or(NotificationError::UnknownShape)?;
        let inner: Value = serde_json::from_str(inner)
            .map_err(|e| NotificationError::NotJson(format!("SNS Message: {e}")))?;
        return parse_value(&inner, false);
    }
    Err(NotificationError::UnknownShape)
}

fn parse_s3_records(records: &[Value]) -> Result<Notification, NotificationError> {
    let mut objects = Vec::new();
    let mut ignored = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let event_name = record.get("eventName").and_then(Value::as_str).ok_or(
            NotificationError::MissingField {
                index,
                field: "eventName",
            },
        )?;
        // MinIO (and other S3-compatible stores) name it `s3:ObjectCreated:Put`.
        let created = event_name
            .strip_prefix("s3:")
            .unwrap_or(event_name)
            .starts_with("ObjectCreated:");
        if !created {
            ignored.push(event_name.to_owned());
            continue;
        }
        let s3 = record.get("s3");
        let text = |path: &[&str]| -> Option<&str> {
            path.iter()
                .try_fold(s3?, |v, k| v.get(*k))
                .and_then(Value::as_str)
        };
        let bucket = text(&["bucket", "name"]).ok_or(NotificationError::MissingField {
            index,
            field: "s3.bucket.name",
        })?;
        let raw_key = text(&["object", "key"]).ok_or(NotificationError::MissingField {
            index,
            field: "s3.object.key",
        })?;
        objects.push(ObjectRef {
            bucket: bucket.to_owned(),
            key: decode_key(raw_key)?,
            region: record
                .get("awsRegion")
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
            version_id: text(&["object", "versionId"])
                .filter(|v| !v.is_empty())
                .map(str::to_owned),
            event_time: parse_time(record.get("eventTime")),
        });
    }
    Ok(Notification::Objects { objects, ignored })
}

fn parse_eventbridge(event: &Value) -> Result<Notification, NotificationError> {
    let detail_type = event
        .get("detail-type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if detail_type != "Object Created" {
        return Ok(Notification::Objects {
            objects: Vec::new(),
            ignored: vec![detail_type.to_owned()],
        });
    }
    let detail = event.get("detail");
    let text = |path: &[&str]| -> Option<&str> {
        path.iter()
            .try_fold(detail?, |v, k| v.get(*k))
            .and_then(Value::as_str)
    };
    let missing = |field| NotificationError::MissingField { index: 0, field };
    Ok(Notification::Objects {
        objects: vec![ObjectRef {
            bucket: text(&["bucket", "name"])
                .ok_or(missing("detail.bucket.name"))?
                .to_owned(),
            // EventBridge keys are not URL-encoded.
            key: text(&["object", "key"])
                .ok_or(missing("detail.object.key"))?
                .to_owned(),
            region: event
                .get("region")
                .and_then(Value::as_str)
                .map(str::to_owned),
            version_id: text(&["object", "version-id"]).map(str::to_owned),
            event_time: parse_time(event.get("time")),
        }],
        ignored: Vec::new(),
    })
}

fn parse_time(value: Option<&Value>) -> Option<DateTime<Utc>> {
    let text = value?.as_str()?;
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// An S3 event notification naming one object, as S3 would send it: what
/// `backfill --via-queue` puts on the workers' queue.
pub fn s3_event(object: &ObjectRef, size: u64) -> String {
    let key: String = form_urlencoded::byte_serialize(object.key.as_bytes()).collect();
    let mut s3_object = serde_json::json!({ "key": key, "size": size });
    if let Some(version) = &object.version_id {
        s3_object["versionId"] = version.as_str().into();
    }
    let mut record = serde_json::json!({
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "eventName": "ObjectCreated:Put",
        "s3": { "s3SchemaVersion": "1.0", "bucket": { "name": object.bucket }, "object": s3_object },
    });
    if let Some(region) = &object.region {
        record["awsRegion"] = region.as_str().into();
    }
    if let Some(time) = object.event_time {
        record["eventTime"] = time
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into();
    }
    serde_json::json!({ "Records": [record] }).to_string()
}

/// S3 notifications encode keys as HTML form values: `+` is a space.
fn decode_key(raw: &str) -> Result<String, NotificationError> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|k| k.into_owned())
        .map_err(|_| NotificationError::BadKey(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/fixtures/notifications/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn objects(n: Notification) -> (Vec<ObjectRef>, Vec<String>) {
        match n {
            Notification::Objects { objects, ignored } => (objects, ignored),
            other => panic!("expected objects, got {other:?}"),
        }
    }

    #[test]
    fn direct_s3_event_names_every_record_with_decoded_keys() {
        let (objs, ignored) = objects(parse(&fixture("s3-direct-two-records.json")).unwrap());
        assert!(ignored.is_empty());
        let keys: Vec<_> = objs.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "app/2026/11/21/web 01 été.log.gz",
                "app/2026/11/21/web-02.log.gz"
            ]
        );
        assert_eq!(objs[0].bucket, "dr-logs-us-west-2");
        assert_eq!(objs[0].region.as_deref(), Some("us-west-2"));
        assert_eq!(
            objs[0].event_time.map(|t| t.to_rfc3339()),
            Some("2026-11-21T12:00:01.123+00:00".to_owned())
        );
    }

    #[test]
    fn sns_wrapped_event_is_unwrapped() {
        let (objs, _) = objects(parse(&fixture("sns-wrapped-s3.json")).unwrap());
        assert_eq!(objs.len(), 1);
        assert!(objs[0].key.starts_with("cloudtrail/AWSLogs/"));
    }

    #[test]
    fn eventbridge_key_is_taken_verbatim() {
        let (objs, _) = objects(parse(&fixture("eventbridge-object-created.json")).unwrap());
        assert_eq!(
            objs[0].key,
            "firehose/2026/11/21/12/dr-stream-1-2026-11-21-12-00-00-abc def.gz"
        );
        assert_eq!(objs[0].region.as_deref(), Some("us-west-2"));
    }

    #[test]
    fn test_event_and_removals_name_nothing_to_index() {
        assert_eq!(
            parse(&fixture("s3-test-event.json")).unwrap(),
            Notification::Test
        );
        let (objs, ignored) = objects(parse(&fixture("s3-object-removed.json")).unwrap());
        assert!(objs.is_empty());
        assert_eq!(ignored, ["ObjectRemoved:Delete"]);
    }

    #[test]
    fn generated_events_parse_back_to_the_same_object() {
        let object = ObjectRef {
            bucket: "archive".into(),
            key: "app/2026/11/21/web 01+été%.log.gz".into(),
            region: Some("us-west-2".into()),
            version_id: Some("v1".into()),
            event_time: Some(
                DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
                    .unwrap()
                    .with_timezone(&Utc),
            ),
        };
        let (objs, _) = objects(parse(&s3_event(&object, 10)).unwrap());
        assert_eq!(objs, [object]);
    }

    #[test]
    fn poison_bodies_are_errors_not_panics() {
        assert!(matches!(
            parse("not json"),
            Err(NotificationError::NotJson(_))
        ));
        assert_eq!(parse("{\"a\":1}"), Err(NotificationError::UnknownShape));
        assert_eq!(
            parse(r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{}}]}"#),
            Err(NotificationError::MissingField {
                index: 0,
                field: "s3.bucket.name"
            })
        );
    }
}
