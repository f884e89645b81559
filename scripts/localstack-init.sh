#!/usr/bin/env bash
# Creates what `drsink worker` consumes: one SQS queue, two buckets (two
# "regions" dual-writing the same logs) whose ObjectCreated notifications go to
# that queue, and uploads the same application logs to both (one copy gzip'd),
# so the worker has duplicates to merge.
#
# Used by docker-compose.yml (mounted as a LocalStack ready.d init hook, where
# `awslocal` is available) and runnable by hand against any S3+SQS endpoint:
#   AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_REGION=us-east-1 \
#   AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test scripts/localstack-init.sh
# It prints the queue URL on its last line. Idempotent: existing queue and
# buckets are reused.
#
#   DRSINK_DEMO_QUEUE     queue name (default drsink-demo)
#   DRSINK_DEMO_BUCKETS   bucket names (default "drsink-demo-region-a drsink-demo-region-b")
#   DRSINK_DEMO_FIXTURES  directory holding dualwrite-region-{a,b}.ndjson
#                         (default: the repository's fixtures/; none found: nothing uploaded)
set -euo pipefail

QUEUE="${DRSINK_DEMO_QUEUE:-drsink-demo}"
read -r -a BUCKETS <<<"${DRSINK_DEMO_BUCKETS:-drsink-demo-region-a drsink-demo-region-b}"
FIXTURES="${DRSINK_DEMO_FIXTURES:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/fixtures}"
export AWS_REGION="${AWS_REGION:-us-east-1}" AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-${AWS_REGION:-us-east-1}}"

if command -v awslocal >/dev/null 2>&1 && [[ -z "${AWS_ENDPOINT_URL:-}" ]]; then
  aws() { awslocal "$@"; }
elif command -v aws >/dev/null 2>&1; then
  # AWS CLI v1 does not read AWS_ENDPOINT_URL itself.
  aws() { command aws ${AWS_ENDPOINT_URL:+--endpoint-url "$AWS_ENDPOINT_URL"} "$@"; }
else
  echo "localstack-init.sh: needs the AWS CLI (aws) or awslocal" >&2
  exit 2
fi

queue_url=$(aws sqs create-queue --queue-name "$QUEUE" --query QueueUrl --output text)
queue_arn=$(aws sqs get-queue-attributes --queue-url "$queue_url" --attribute-names QueueArn \
  --query Attributes.QueueArn --output text)
echo "queue $queue_url ($queue_arn)" >&2

notification='{"QueueConfigurations":[{"Id":"drsink","QueueArn":"'"$queue_arn"'","Events":["s3:ObjectCreated:*"]}]}'
for bucket in "${BUCKETS[@]}"; do
  if ! aws s3api head-bucket --bucket "$bucket" >/dev/null 2>&1; then
    if [[ "$AWS_REGION" == "us-east-1" ]]; then
      aws s3api create-bucket --bucket "$bucket" >/dev/null
    else
      aws s3api create-bucket --bucket "$bucket" \
        --create-bucket-configuration "LocationConstraint=$AWS_REGION" >/dev/null
    fi
  fi
  aws s3api put-bucket-notification-configuration --bucket "$bucket" \
    --notification-configuration "$notification"
  echo "bucket s3://$bucket notifies $QUEUE of every new object" >&2
done

# The same logs from both "regions": the worker indexes each log_id once.
if [[ -f "$FIXTURES/dualwrite-region-a.ndjson" && -f "$FIXTURES/dualwrite-region-b.ndjson" ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  gzip -c "$FIXTURES/dualwrite-region-a.ndjson" >"$tmp/a.ndjson.gz"
  aws s3api put-object --bucket "${BUCKETS[0]}" --key "app/2026/11/21/web-01.ndjson.gz" \
    --body "$tmp/a.ndjson.gz" >/dev/null
  last="${BUCKETS[${#BUCKETS[@]}-1]}"
  aws s3api put-object --bucket "$last" --key "app/2026/11/21/web-01.ndjson" \
    --body "$FIXTURES/dualwrite-region-b.ndjson" >/dev/null
  echo "uploaded the dual-written sample logs to s3://${BUCKETS[0]} and s3://$last" >&2
fi
echo "$queue_url"
