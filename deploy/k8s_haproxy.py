#!/usr/bin/env python3
"""HAProxy's configuration for the cluster's edge (deploy/k8s/components/edge/), from the
local herd's template: the same edge cache, request id and L7 retries as compose.

    python3 -m deploy.k8s_haproxy > deploy/k8s/components/edge/haproxy.cfg

The rendered file is committed (kustomize puts it in a ConfigMap); deploy/tests/
test_manifests.py fails when it drifts, when ``haproxy -c`` refuses it, or when an
overlay may run more web pods than it has server slots. Standard library only.
"""

from __future__ import annotations

import sys
from pathlib import Path

from deploy.herd.haproxy import render_haproxy_config

# Server slots the edge fills from DNS: at least the largest maxReplicas of the web HPA
# in any overlay (a test checks). Unfilled slots stay in maintenance and cost nothing.
EDGE_SERVER_SLOTS = 20
EDGE_PORT = 8080
EDGE_STATS_PORT = 8404
WEB_PORT = 8000
EDGE_HAPROXY_CONFIG = Path(__file__).resolve().parent / "k8s" / "components" / "edge" / "haproxy.cfg"

# The headless Service herd-web-headless lists the ready web pods as A records; the
# Deployment sets HERD_WEB_DNS to its full name (HAProxy's resolver does not apply the
# search domains of resolv.conf), and HAProxy expands it inside double quotes. Each slot
# is named web1..webN; which pod a slot holds shows in the stats page, not in its name.
SERVERS = f'    server-template web {EDGE_SERVER_SLOTS} "${{HERD_WEB_DNS}}:{WEB_PORT}" check'

# Behind the OpenShift router or ingress-nginx, which end TLS: their X-Forwarded-Proto
# (https) stands, or Django would redirect every request to https again. The peer of the
# edge is the router; both write the address they saw last in X-Forwarded-For (the route
# replaces the header, ingress-nginx sets it to $remote_addr, or appends it with
# compute-full-forwarded-for): that last value becomes the source, then the template
# drops the header and `option forwardfor` writes that source alone. Only the router may
# reach the edge (its NetworkPolicy), so no one else can name a client address.
BEHIND_ROUTER = (
    "    http-request set-var(txn.behind_router) bool(true)\n"
    "    http-request set-src req.hdr_ip(X-Forwarded-For,-1) if { req.hdr_ip(X-Forwarded-For,-1) -m found }\n"
)


def render_edge_haproxy_config() -> str:
    """The configuration of the edge pods (official haproxy:2.6 image, read-only root, /run/haproxy writable)."""
    return render_haproxy_config(
        bind=f"*:{EDGE_PORT}",
        stats_bind=f"*:{EDGE_STATS_PORT}",
        stats_socket="/run/haproxy/admin.sock",
        # Loopback only: the app does not purge the cluster's edge (docs/DEPLOY.md, "The edge").
        edge_admin="ipv4@127.0.0.1:8405",
        servers=SERVERS,
        behind_router=BEHIND_ROUTER,
    )


if __name__ == "__main__":
    sys.stdout.write(render_edge_haproxy_config())
