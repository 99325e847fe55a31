#!/bin/sh
# Starts one of the three Sentinels (quorum 2, the local herd's timings: deploy/herd/services.py).
# It watches the primary the other Sentinels know, or node 0 on a first start; its config
# file is its own to rewrite (an emptyDir).
set -eu
. /scripts/primary.sh
cat > /sentinel/sentinel.conf <<CONF
port 26379
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $(hostname).herd-redis-sentinel
sentinel monitor herd-state $primary 6379 2
sentinel auth-pass herd-state $REDIS_PASSWORD
sentinel down-after-milliseconds herd-state 2000
sentinel failover-timeout herd-state 10000
sentinel parallel-syncs herd-state 1
CONF
exec redis-server /sentinel/sentinel.conf --sentinel
