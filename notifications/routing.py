"""WebSocket routes, served by Channels on every replica (config.asgi).

The notifications consumer (``/ws/notifications/``) is added here by the jobs and
notifications work; until then every socket is refused.
"""

websocket_urlpatterns: list = []
