//! `drsink check`: one line per check (queue, bucket, cluster or HEC,
//! template, write), stopping at the first failure with what to fix.
//!
//! Nothing is consumed: a message received from the queue is made visible
//! again at once, and the probe document written to the cluster is deleted.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::bail;
use clap::Args;
use reqwest::Method;
use serde_json::json;

use crate::aws::describe;
use crate::cli::{PipelineArgs, SinkKind};
use crate::ledger::LedgerSpec;
use crate::object::ObjectStore;
use crate::setup::{self, Naming, TemplateArgs};

#[derive(Args)]
pub struct CheckArgs {
    /// Queue of the S3 notifications to check (the worker's --queue-url).
    #[arg(long, env = "DRSINK_QUEUE_URL")]
    pub queue_url: Option<String>,

    /// Bucket to check, `BUCKET` or `BUCKET/PREFIX` (repeatable or comma-separated).
    #[arg(long, env = "DRSINK_BUCKET", value_delimiter = ',')]
    pub bucket: Vec<String>,

    #[command(flatten)]
    pub template: TemplateArgs,

    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

fn ok(what: &str, text: &str) {
    println!("ok    {what:<9}{text}");
}

/// Prints the failing line and returns the error that ends the run.
fn fail(what: &str, text: &str, fix: &str) -> anyhow::Error {
    println!("FAIL  {what:<9}{text}");
    println!("      fix: {fix}");
    anyhow::anyhow!("check failed: {what}: {text}; {fix}")
}

fn skip(what: &str, text: &str) {
    println!("skip  {what:<9}{text}");
}

pub async fn run(mut args: CheckArgs, aws: &aws_config::SdkConfig) -> anyhow::Result<()> {
    match &args.queue_url {
        Some(url) => check_queue(aws, url).await?,
        None => skip("queue", "no --queue-url given"),
    }
    if args.bucket.is_empty() {
        skip("bucket", "no --bucket given");
    }
    let s3_config = crate::sink::auth::s3_config(aws, &args.pipeline.assume_role)
        .await
        .map_err(|e| fail("bucket", &e, "fix --assume-role-arn / --external-id"))?;
    let store = ObjectStore::new(s3_config, args.pipeline.s3_force_path_style);
    for bucket in &args.bucket {
        check_bucket(&store, bucket).await?;
    }
    match args.pipeline.sink {
        SinkKind::Elasticsearch => check_cluster(&args, aws).await?,
        SinkKind::SplunkHec => {
            // The embedded ledger belongs to the worker beside it: opening it
            // would take its lock (or leave a new one behind). A shared Redis
            // ledger is opened, which checks that it answers.
            let hec = &mut args.pipeline.hec;
            if hec.dedup_ledger == LedgerSpec::Embedded {
                hec.dedup_ledger = LedgerSpec::None;
            }
            let sink = crate::sink::splunk::from_args(hec)
                .await
                .map_err(|e| fail("sink", &e.to_string(), "fix the --hec-* options"))?;
            crate::sink::Sink::check(&sink).await.map_err(|e| {
                fail(
                    "sink",
                    &e,
                    "check --hec-url, the token and that HEC is enabled",
                )
            })?;
            ok("sink", "Splunk HEC is healthy and accepts the token");
        }
    }
    println!("all checks passed");
    Ok(())
}

async fn check_queue(aws: &aws_config::SdkConfig, url: &str) -> anyhow::Result<()> {
    let sqs = aws_sdk_sqs::Client::new(aws);
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
        .send()
        .await
        .map_err(|e| {
            fail(
                "queue",
                &format!("{url}: cannot read the queue: {}", describe(&e)),
                "check --queue-url and AWS_REGION, and that the role may sqs:GetQueueAttributes on it",
            )
        })?;
    let attr = |name: &str| {
        attributes
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::from(name)))
            .cloned()
            .unwrap_or_else(|| "?".to_owned())
    };
    // A short visibility timeout, reset to 0 at once: the message is not
    // held (it counts one receive, like any consumer's look).
    let received = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(1)
        .wait_time_seconds(0)
        .visibility_timeout(5)
        .send()
        .await
        .map_err(|e| {
            fail(
                "queue",
                &format!("{url}: cannot receive: {}", describe(&e)),
                "let the role sqs:ReceiveMessage on the queue (and kms:Decrypt on its key if it is encrypted)",
            )
        })?;
    let mut released = 0;
    for message in received.messages() {
        if let Some(handle) = message.receipt_handle() {
            sqs.change_message_visibility()
                .queue_url(url)
                .receipt_handle(handle)
                .visibility_timeout(0)
                .send()
                .await
                .map_err(|e| {
                    fail(
                        "queue",
                        &format!(
                            "{url}: cannot change a message's visibility: {}",
                            describe(&e)
                        ),
                        "let the role sqs:ChangeMessageVisibility on the queue",
                    )
                })?;
            released += 1;
        }
    }
    ok(
        "queue",
        &format!(
            "{url}: receivable ({} visible, {} in flight, visibility timeout {} s; {released} message looked at and released)",
            attr("ApproximateNumberOfMessages"),
            attr("ApproximateNumberOfMessagesNotVisible"),
            attr("VisibilityTimeout"),
        ),
    );
    Ok(())
}

async fn check_bucket(store: &ObjectStore, spec: &str) -> anyhow::Result<()> {
    let (bucket, prefix) = spec.split_once('/').unwrap_or((spec, ""));
    let where_ = format!("s3://{bucket}/{prefix}");
    if bucket.is_empty() {
        bail!(fail(
            "bucket",
            &format!("--bucket `{spec}` names no bucket"),
            "give --bucket as BUCKET or BUCKET/PREFIX"
        ));
    }
    let s3 = store.client(None);
    let listed = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .max_keys(1)
        .send()
        .await
        .map_err(|e| {
            fail(
                "bucket",
                &format!("{where_}: cannot list: {}", describe(&e)),
                "check --bucket and the region, and that the role may s3:ListBucket on it (without it a deleted object reads as AccessDenied, not NoSuchKey)",
            )
        })?;
    let Some(first) = listed.contents().first() else {
        ok(
            "bucket",
            &format!("{where_}: listable (empty, nothing to read)"),
        );
        return Ok(());
    };
    let key = first.key().unwrap_or_default();
    // A GET, not a HEAD: a HEAD passes without kms:Decrypt and on archived
    // objects. One byte (a range of an empty object is refused).
    let mut read = s3.get_object().bucket(bucket).key(key);
    if first.size().unwrap_or(0) > 0 {
        read = read.range("bytes=0-0");
    }
    if let Err(e) = read.send().await {
        if e.as_service_error()
            .is_some_and(|e| e.is_invalid_object_state())
        {
            ok(
                "bucket",
                &format!("{where_}: listable; s3://{bucket}/{key} is archived, so reading was not checked"),
            );
            return Ok(());
        }
        bail!(fail(
            "bucket",
            &format!("{where_}: cannot read s3://{bucket}/{key}: {}", describe(&e)),
            "let the role s3:GetObject (and s3:GetObjectVersion, kms:Decrypt for SSE-KMS) on the log prefixes",
        ));
    }
    ok(
        "bucket",
        &format!("{where_}: listable and readable (checked s3://{bucket}/{key})"),
    );
    Ok(())
}

async fn check_cluster(args: &CheckArgs, aws: &aws_config::SdkConfig) -> anyhow::Result<()> {
    let pipeline = &args.pipeline;
    let naming = Naming::new(
        &pipeline.index,
        &pipeline.fallback_index,
        args.template.template_name.as_deref(),
    )
    .map_err(|e| fail("cluster", &e, "fix --index / --fallback-index"))?;
    let es = setup::cluster_client(pipeline, aws).map_err(|e| {
        fail(
            "cluster",
            &format!("{e:#}"),
            "fix --es-url, or the TLS and credential options it names",
        )
    })?;
    let cluster = setup::detect(&es)
        .await
        .map_err(|e| fail("cluster", &e, setup::REACH_ADVICE))?;
    ok("cluster", &format!("{} is {cluster}", es.display_url()));

    let desired =
        setup::desired_template(cluster.flavour, &naming, &pipeline.timestamp_field, None)
            .map_err(|e| fail("template", &e, "fix --timestamp-field"))?;
    let rerun = "run `drsink setup` with the same --es-url, --index, --fallback-index, --template-name and --timestamp-field";
    match setup::installed_template(&es, &naming.name)
        .await
        .map_err(|e| {
            fail(
                "template",
                &e,
                "check the credentials (they need to read index templates)",
            )
        })? {
        None => bail!(fail(
            "template",
            &format!("index template {} is not installed", naming.name),
            rerun
        )),
        // The lifecycle setting depends on --retention-days, which check
        // does not know: compare without it.
        Some(mut installed) => {
            if let Some(index) = installed
                .pointer_mut("/template/settings/index")
                .and_then(serde_json::Value::as_object_mut)
            {
                index.remove("lifecycle");
            }
            if !setup::template_matches(&installed, &desired) {
                bail!(fail(
                    "template",
                    &format!(
                        "index template {} differs from what this drsink installs (index patterns {})",
                        naming.name,
                        naming.patterns.join(", ")
                    ),
                    rerun
                ));
            }
            ok(
                "template",
                &format!(
                    "{} is installed and current (index patterns {})",
                    naming.name,
                    naming.patterns.join(", ")
                ),
            );
        }
    }

    // Write where the worker writes (the fallback index), then remove the probe.
    let index = &pipeline.fallback_index;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let id = format!("drsink-check-{}-{nanos}", std::process::id());
    let doc = json!({
        "log_id": id,
        "message": "drsink check probe (deleted right away)",
        "drsink": { "source": "drsink check", "line": 0 },
    });
    let path = format!("{index}/_create/{id}");
    let (status, body) = es
        .admin(Method::PUT, &path, &[], Some(&doc))
        .await
        .map_err(|e| fail("write", &e, "check the network path to the cluster"))?;
    if !(200..300).contains(&status) {
        bail!(fail(
            "write",
            &format!(
                "writing a probe document to index {index} failed (HTTP {status}{})",
                setup::error_reason(&body)
            ),
            "let the credentials create documents (and indices) matching the index patterns; a read-only block means the cluster is out of disk"
        ));
    }
    let path = format!("{index}/_doc/{id}");
    match es.admin(Method::DELETE, &path, &[], None).await {
        Ok((200..=299, _)) => ok(
            "write",
            &format!("wrote and deleted a probe document in index {index}"),
        ),
        Ok((status, body)) => ok(
            "write",
            &format!(
                "wrote a probe document in index {index}; deleting it failed (HTTP {status}{}), delete _id {id} by hand",
                setup::error_reason(&body)
            ),
        ),
        Err(e) => ok(
            "write",
            &format!("wrote a probe document in index {index}; deleting it failed ({e}), delete _id {id} by hand"),
        ),
    }
    Ok(())
}
