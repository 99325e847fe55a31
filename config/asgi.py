"""The ASGI entry point of a replica: one process, one port, HTTP and WebSockets.

HTTP goes to Django's *WSGI* handler, run on a small thread pool (a2wsgi): under
Django's async handler every synchronous middleware costs a thread hop, which made
pages 3 to 4 times slower here (figures in docs/SERVING.md); health probes are
answered before that pool (``scaling.ops.health.HealthFront``). WebSockets go to
Channels, authenticated by the session, from allowed origins only.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from a2wsgi import WSGIMiddleware
from django.core.wsgi import get_wsgi_application

# Django must be set up before Channels' auth imports the models.
django_wsgi_app = get_wsgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from notifications.routing import websocket_urlpatterns  # noqa: E402
from scaling.ops.health import HealthFront  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Probes are answered before the thread pool, so they never queue behind pages.
        "http": HealthFront(WSGIMiddleware(django_wsgi_app, workers=settings.HERD_HTTP_THREADS)),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
