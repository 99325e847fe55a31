"""The mechanisms that let Herd run as a herd of identical, stateless replicas, one
subpackage per layer: ``db`` (routing, replicas, read-your-writes, WAL positions),
``cache`` (query and object caches), ``web`` (HTTP: headers, edge caching, sessions,
uploads, storage, throttles), ``ops`` (health, metrics, logs, dashboard, preflight),
``sharding`` (per-user data on shard databases, an app of its own) and ``queue`` (the
Dramatiq broker). The map: docs/ARCHITECTURE.md.
"""
