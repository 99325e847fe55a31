"""``manage.py serve``: run one replica (HTTP and WebSockets) under uvicorn.

On SIGTERM the replica drains before it stops: ``/readyz`` turns 503 at once, it
keeps serving for ``HERD_DRAIN_SECONDS`` while the load balancer notices and stops
sending it requests, then uvicorn stops accepting, lets requests in flight finish and
closes open WebSockets with 1012 "service restart", so clients reconnect elsewhere.
A second SIGTERM, or SIGINT, skips the wait. Each open WebSocket holds a file, so the
replica raises its soft open-file limit to the hard one first (often 1,024 by default).
"""

from __future__ import annotations

import resource
import signal
import threading

import uvicorn
from django.conf import settings
from django.core.management.base import BaseCommand

from scaling.ops import health
from scaling.ops.preflight import check_services


class DrainingServer(uvicorn.Server):
    def handle_exit(self, sig: int, frame) -> None:
        drain_seconds = settings.HERD_DRAIN_SECONDS
        if sig == signal.SIGTERM and not health.is_draining() and drain_seconds > 0:
            health.start_draining()
            timer = threading.Timer(drain_seconds, super().handle_exit, args=(sig, None))
            timer.daemon = True
            timer.start()
            return
        super().handle_exit(sig, frame)


def raise_file_limit() -> int:
    """The soft open-file limit raised to the hard one; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Command(BaseCommand):
    help = "Serve HTTP and WebSockets for one replica; drain on SIGTERM."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--graceful-timeout",
            type=float,
            default=20.0,
            help="seconds requests in flight may take to finish once the replica stops",
        )

    def handle(self, *args, host: str, port: int, graceful_timeout: float, **options) -> None:
        check_services()
        files = raise_file_limit()
        config = uvicorn.Config(
            "config.asgi:application",
            host=host,
            port=port,
            lifespan="off",
            proxy_headers=True,
            forwarded_allow_ips=settings.HERD_TRUSTED_PROXIES,
            access_log=False,
            timeout_graceful_shutdown=graceful_timeout,
            # At shutdown, after the drain, uvicorn (0.54) sends every open WebSocket a
            # close frame with code 1012 "service restart" (and the consumer a
            # websocket.disconnect with 1012), so browsers reconnect, through the load
            # balancer, to a replica that stays. All three of its WebSocket protocols do;
            # named here so that does not depend on which libraries "auto" finds.
            ws="websockets-sansio",
        )
        self.stdout.write(f"{settings.HERD_REPLICA_ID} serving on http://{host}:{port}/ (open files: {files})")
        DrainingServer(config).run()
