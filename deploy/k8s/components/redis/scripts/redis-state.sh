#!/bin/sh
# Starts a node of the state Redis. Its role comes from the Sentinels when they know a
# primary (after a failover it may be any node); on a first start, node 0 is the primary.
set -eu
self="$(hostname).herd-redis-state"
. /scripts/primary.sh
replica_of=""
[ "$primary" = "$self" ] || replica_of="--replicaof $primary 6379"
# exec: redis-server is PID 1 and gets SIGTERM itself.
# shellcheck disable=SC2086
exec redis-server --port 6379 --dir /data --save "" \
  --maxmemory-policy noeviction --appendonly yes --appendfsync everysec \
  --requirepass "$REDIS_PASSWORD" --masterauth "$REDIS_PASSWORD" \
  --replica-announce-ip "$self" $replica_of
