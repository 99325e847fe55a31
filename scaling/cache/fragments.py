"""Shared fragments: the parts of a page that are the same for every visitor, rendered
once and cached by what they show, so a logged-in page renders only its per-user bits.

``shared_fragment(template_name, values)`` (``shared_fragments`` for several, in one
round trip) renders the template with ``values`` alone:
no request, no user, no context processors, so nothing personal can reach the HTML. The
key is a hash of the release, the template name and ``repr(values)``; values must be
plain data whose ``repr`` shows all they hold (frozen dataclasses, strings, numbers,
dates, dicts, a ``QueryDict``). A changed value is a new key, so an entry can never be
stale and nothing flushes it; entries live ``FRAGMENT_SECONDS`` and the cache Redis
evicts the unused ones. ``extra()`` adds what the template needs that the values
determine (a form bound to the query string in ``values``); it is not hashed.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable

from django.conf import settings
from django.template.loader import render_to_string
from django.utils.safestring import SafeString, mark_safe
from redis.exceptions import RedisError

from scaling.cache.versions import cache_backend
from scaling.ops import metrics

FRAGMENT_SECONDS = 600


def fragment_key(template_name: str, values: dict) -> str:
    """The one place fragment keys are named."""
    digest = hashlib.sha256(repr((template_name, sorted(values.items()))).encode()).hexdigest()
    return f"{settings.HERD_RELEASE}:f:{digest}"


Spec = tuple[str, dict, Callable[[], dict] | None]  # template name, values, extra


def shared_fragment(template_name: str, values: dict, extra: Callable[[], dict] | None = None) -> SafeString:
    return shared_fragments([(template_name, values, extra)])[0]


def shared_fragments(specs: list[Spec]) -> list[SafeString]:
    """Several fragments of one page, looked up in one round trip; each as ``shared_fragment``."""

    def render(template_name: str, values: dict, extra: Callable[[], dict] | None) -> SafeString:
        return render_to_string(template_name, {**values, **(extra() if extra else {})})

    if not settings.HERD_CACHES_ENABLED:
        return [render(*spec) for spec in specs]
    keys = [fragment_key(template_name, values) for template_name, values, _ in specs]
    cache = cache_backend()
    try:
        found = cache.get_many(keys)  # {} when the cache Redis is away (IGNORE_EXCEPTIONS)
    except RedisError:
        found = {}
    made, fragments = {}, []
    for key, spec in zip(keys, specs, strict=True):
        html = found.get(key)
        metrics.count_cache("fragment", hit=html is not None)
        if html is None:
            html = made[key] = str(render(*spec))
        fragments.append(mark_safe(html))  # noqa: S308 (rendered by our templates, escaped there)
    if made:
        with contextlib.suppress(RedisError):
            cache.set_many(made, FRAGMENT_SECONDS)
    return fragments
