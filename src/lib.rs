//! drsink: disaster-recovery log sink.
//!
//! The modules follow the data's path: `notification` (SQS body → object
//! references) → `object` (S3 byte stream) → `decompress` → `lines` →
//! `records` (log_id, event time, raw JSON) → `batch` → `sink` → `delivery`
//! (retries, dead letters, acknowledgement) → `worker` (SQS delete).
//! `pipeline` runs one object through all of it.

pub mod app;
pub mod aws;
pub mod backfill;
pub mod batch;
pub mod check;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod dead_letter;
pub mod decode;
pub mod decompress;
pub mod delivery;
pub mod fingerprint;
pub mod json_scan;
pub mod json_skim;
pub mod ledger;
pub mod lines;
pub mod listing;
pub mod metrics;
pub mod notification;
pub mod object;
pub mod pipeline;
pub mod progress;
pub mod rate;
pub mod records;
pub mod redact;
pub mod redrive;
pub mod routing;
pub mod setup;
pub mod shutdown;
pub mod sink;
pub mod stats;
pub mod timestamp;
pub mod values;
pub mod worker;
