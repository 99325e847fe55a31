"""The product catalog: categories, products and reviews (see docs/ARCHITECTURE.md)."""
