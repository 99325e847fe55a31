#!/usr/bin/env python3
"""HAProxy's configuration for deploy/compose.yaml, from the local herd's template.

    python3 -m deploy.compose_haproxy > deploy/compose/haproxy.cfg

The rendered file is committed (compose mounts it); deploy/tests/test_manifests.py
fails when it drifts from deploy/haproxy.cfg.template or from the web services that
compose.yaml defines. Standard library only, like deploy/herd/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from deploy.herd.haproxy import render_haproxy_config

# Explicit services web1..web3 in compose.yaml, not `deploy.replicas`: HAProxy names
# each server as the replica names itself (HERD_REPLICA_ID, X-Served-By), so the stats
# page and the runtime API (`set server replicas/web2 state drain`) speak of the same
# web2 as the logs, as in the local herd.
COMPOSE_WEB_SERVICES = ["web1", "web2", "web3"]
COMPOSE_WEB_PORT = 8000
COMPOSE_HAPROXY_CONFIG = Path(__file__).resolve().parent / "compose" / "haproxy.cfg"


def render_compose_haproxy_config() -> str:
    """The configuration the haproxy service of compose.yaml runs (official haproxy:2.6 image)."""
    return render_haproxy_config(
        bind="*:8000",
        stats_bind="*:8404",
        # The image runs as the user haproxy, whose home this is.
        stats_socket="/var/lib/haproxy/admin.sock",
        # The replicas and the worker purge here (HERD_EDGE_ADMIN in compose.yaml); the port
        # is not published: only the compose network reaches it.
        edge_admin="ipv4@0.0.0.0:8405",
        servers=[(name, f"{name}:{COMPOSE_WEB_PORT}") for name in COMPOSE_WEB_SERVICES],
    )


if __name__ == "__main__":
    sys.stdout.write(render_compose_haproxy_config())
