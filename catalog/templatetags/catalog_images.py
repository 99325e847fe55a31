"""``{% product_picture picture sizes=... eager=... %}``: one ``catalog.images.Picture`` as a
``<picture>`` (AVIF, WebP, then a JPEG ``<img>`` with width and height, so nothing moves
when it loads), or the original alone while its sizes are not prepared; nothing for None.

``eager`` for the first picture above the fold (loaded at once, with high priority);
every other is ``loading="lazy"``. Every one decodes off the main thread.
"""

from django import template

register = template.Library()

CARD_SIZES = "(min-width: 40rem) 320px, 100vw"
PAGE_SIZES = "(min-width: 64rem) 1024px, 100vw"


@register.inclusion_tag("catalog/includes/picture.html")
def product_picture(picture, sizes: str = CARD_SIZES, eager: bool = False) -> dict:
    return {"picture": picture, "sizes": sizes, "eager": eager}


@register.inclusion_tag("catalog/includes/pictures.html")
def product_pictures(pictures, sizes: str = PAGE_SIZES) -> dict:
    """A product page's pictures: the first eager, the others lazy."""
    return {"pictures": pictures, "sizes": sizes}
