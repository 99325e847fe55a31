"""The mechanisms that let Herd run as a herd of identical, stateless replicas.

One module per mechanism:

- ``router``: which database a query goes to (writes to the primary, reads to a
  healthy replica);
- ``replicas``: which replicas are healthy (reachable, replay lag small);
- ``health``: ``/healthz`` and ``/readyz``, and the draining state after SIGTERM;
- ``middleware``: ``X-Served-By`` on every response;
- ``shards``: per-user data on shard databases (map, ids, router, writes, fan-out);
  ``shard_moves``: moving a logical shard online (docs/SHARDING.md);
- ``preflight``: one-line errors for bad configuration instead of tracebacks;
- ``management/commands/serve``: one replica's ASGI server, draining on SIGTERM.
"""
