"""Template helpers of the catalog pages: ``{% stars value %}`` draws a rating.

The stars are drawn by CSS (``static/herd.css``, classes ``stars-0`` .. ``stars-50``, in
half stars) and hidden from assistive technology; the text next to them says the rating.
"""

from __future__ import annotations

from django import template

from catalog.models import MAX_RATING

register = template.Library()


@register.inclusion_tag("catalog/_stars.html")
def stars(value: float | int | None, count: int | None = None, words: bool = True) -> dict:
    """A rating out of ``MAX_RATING`` as stars rounded to the nearest half, and its words
    (``words=False`` where the page says the rating in its own words next to them)."""
    value = max(0.0, min(float(value or 0), float(MAX_RATING)))
    halves = round(value * 2)
    return {"value": value, "step": halves * 5, "maximum": MAX_RATING, "count": count, "words": words}
