#!/usr/bin/env bash
# Topics and ACLs for tiphub on Apache Kafka (KRaft, StandardAuthorizer, allow.everyone.if.no.acl.found=false).
#
# Only the hub's service accounts read its topics: reading a topic directly must not bypass the
# sharing policy. Agencies may only write submissions. Run once per cluster with an admin principal
# (deploy/compose.yaml runs it as the kafka-init service, deploy/k8s/kafka-init-job.yaml as a Job).
#
# Environment:
#   BOOTSTRAP       broker list, e.g. kafka-1:9092
#   ADMIN_CONFIG    client properties file of the admin principal (SASL settings)
#   PREFIX          topic prefix (default: none), as TIPHUB_TOPIC_PREFIX
#   PARTITIONS      partitions of the partitioned topics (default 12), as TIPHUB_PARTITIONS
#   REPLICATION     replication factor (default 3)
#   AGENCIES        space-separated agency principals allowed to publish, e.g. "agency-nz-customs agency-nz-police"
set -euo pipefail

BIN=${KAFKA_BIN:-/opt/kafka/bin}
PREFIX=${PREFIX:-}
PARTITIONS=${PARTITIONS:-12}
REPLICATION=${REPLICATION:-3}
AGENCIES=${AGENCIES:-}
DAY_MS=86400000

topic() {  # name partitions retention.ms [more kafka-topics.sh options]
  local name="$1" partitions="$2" retention="$3"
  shift 3
  "$BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG" --create --if-not-exists \
    --topic "$PREFIX$name" --partitions "$partitions" --replication-factor "$REPLICATION" \
    --config "retention.ms=$retention" --config cleanup.policy=delete --config min.insync.replicas=2 "$@"
}

acl() {
  "$BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG" --add "$@"
}

# The contract's topics (streams/topics.py): partition counts and retention.
for t in tip.reports.accepted tip.erasures tip.signals tip.summaries tip.decisions tip.audit \
         tip.retractions tip.sightings tip.entities tip.triage; do
  topic "$t" "$PARTITIONS" -1
done
# The broker stamps submissions as it appends them: freshness and key revocation are judged by that time.
topic tip.reports.submitted "$PARTITIONS" $((7 * DAY_MS)) --config message.timestamp.type=LogAppendTime
topic tip.reports.verified "$PARTITIONS" $((7 * DAY_MS))
topic tip.reports.rejected "$PARTITIONS" $((30 * DAY_MS))
topic tip.audit.intake "$PARTITIONS" $((30 * DAY_MS))
topic tip.agreements 1 -1
topic tip.coverage 1 $((30 * DAY_MS))
topic tip.links 1 -1

# Workers: every stage reads and writes hub topics, in transactions, in their own consumer groups.
acl --allow-principal User:tiphub-worker --operation Read --operation Write --operation Describe \
    --operation DescribeConfigs --topic "${PREFIX}tip." --resource-pattern-type prefixed
acl --allow-principal User:tiphub-worker --operation Read --operation Describe \
    --group "${PREFIX}tiphub." --resource-pattern-type prefixed
acl --allow-principal User:tiphub-worker --operation Write --operation Describe \
    --transactional-id "${PREFIX}tiphub." --resource-pattern-type prefixed
acl --allow-principal User:tiphub-worker --operation IdempotentWrite --cluster

# The gateway reads every hub topic to serve policy-filtered views, and writes only what its
# endpoints produce: relayed submissions, summaries, triage and audit events.
acl --allow-principal User:tiphub-gateway --operation Read --operation Describe \
    --topic "${PREFIX}tip." --resource-pattern-type prefixed
for t in tip.reports.submitted tip.summaries tip.triage tip.audit.intake; do
  acl --allow-principal User:tiphub-gateway --operation Write --topic "$PREFIX$t"
done
# /metrics reports each stage's lag from its group's committed offsets.
acl --allow-principal User:tiphub-gateway --operation Describe --group "${PREFIX}tiphub." --resource-pattern-type prefixed
acl --allow-principal User:tiphub-gateway --operation IdempotentWrite --cluster

# Operators' commands (erase, retention sweep, audit verify, eval) run as tiphub-operator.
acl --allow-principal User:tiphub-operator --operation Read --operation Describe \
    --topic "${PREFIX}tip." --resource-pattern-type prefixed
for t in tip.erasures tip.audit.intake tip.agreements; do
  acl --allow-principal User:tiphub-operator --operation Write --topic "$PREFIX$t"
done
acl --allow-principal User:tiphub-operator --operation IdempotentWrite --cluster

# Agencies: write their signed, sealed submissions; read nothing.
for agency in $AGENCIES; do
  acl --allow-principal "User:$agency" --operation Write --operation Describe --topic "${PREFIX}tip.reports.submitted"
  acl --allow-principal "User:$agency" --operation IdempotentWrite --cluster
done

"$BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG" --list
