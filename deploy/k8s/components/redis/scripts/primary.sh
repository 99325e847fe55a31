# Sourced by redis-state.sh and sentinel.sh: sets $primary to the state Redis's primary as
# the Sentinels know it (after a failover it may be any node), or node 0 on a first start.
primary=""
for sentinel in 0 1 2; do
  primary=$(redis-cli -h "herd-redis-sentinel-$sentinel.herd-redis-sentinel" -p 26379 \
    SENTINEL get-master-addr-by-name herd-state 2>/dev/null | head -n 1) && [ -n "$primary" ] && break
done
[ -n "$primary" ] || primary="herd-redis-state-0.herd-redis-state"
