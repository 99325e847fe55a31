from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "catalog"

    def ready(self) -> None:
        from catalog import cache, signals  # noqa: F401 (connect the receivers)
        from scaling.web.edge import register_anonymous_page

        register_anonymous_page("catalog:product", "/p/", cache.anonymous_product_page)
