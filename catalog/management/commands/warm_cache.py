"""``manage.py warm_cache``: prepare the most visited pages before anyone asks for them."""

from django.core.management.base import BaseCommand

from catalog import cache, selectors
from catalog.models import Product
from catalog.pages import product_pages


class Command(BaseCommand):
    help = "Fill the cache with the most visited product pages, the category index and the first list pages."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--products", type=int, default=500, help="how many product pages (most visited first)")

    def handle(self, *args, products: int, **options) -> None:
        categories = selectors.categories()
        selectors.product_list()
        for category in categories:
            selectors.product_list(category_slug=category.slug)
        warmed = 0
        for slug in cache.most_visited(products):
            try:
                product_pages.warm(slug)
                warmed += 1
            except Product.DoesNotExist:
                continue
        self.stdout.write(f"warmed {warmed} product pages, the category index and {len(categories) + 1} list pages")
