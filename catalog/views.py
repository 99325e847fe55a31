"""The catalog pages: the index, product lists and a product page (served warm from the
product page cache, ``catalog.pages``), and writing a review."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST, require_safe

from catalog import cache, selectors, services
from catalog.forms import ProductFilterForm, ReviewForm
from catalog.models import Category, Product
from catalog.pages import product_pages
from scaling.web.edge import anonymous_page, public_when_anonymous


@require_safe
@public_when_anonymous()
def index(request: HttpRequest) -> HttpResponse:
    return render(request, "catalog/index.html", {"categories": selectors.categories()})


def _product_list(request: HttpRequest, category: Category | None) -> HttpResponse:
    form = ProductFilterForm(request.GET)
    context = {"form": form, "category": category}
    if not form.is_valid():
        return render(request, "catalog/product_list.html", context, status=400)
    data = form.cleaned_data
    try:
        page = selectors.product_list(
            category_slug=category.slug if category else None,
            query=data["q"],
            min_price=data["min_price"],
            max_price=data["max_price"],
            in_stock=data["in_stock"],
            sort=data["sort"],
            after=data["after"] or None,
            before=data["before"] or None,
        )
    except selectors.InvalidCursor as error:
        return render(request, "catalog/product_list.html", {**context, "cursor_error": str(error)}, status=400)
    pages, about = _pages(page, category, data)
    return render(request, "catalog/product_list.html", {**context, "page": page, "pages": pages, "about": about})


def _pages(page: selectors.ProductPage, category: Category | None, filters: dict) -> tuple[int | None, bool]:
    """How many pages the list has, and whether that is an estimate: the last page knows;
    otherwise the whole list or a whole category is estimated (never counted), and under
    any other filter nothing is said."""
    if page.number and page.next_cursor is None:
        return page.number, False
    if filters["q"] or filters["min_price"] is not None or filters["max_price"] is not None or filters["in_stock"]:
        return None, False
    estimate = selectors.estimated_products(category.pk if category else None)
    pages = -(-estimate // selectors.PAGE_SIZE) if estimate else None
    # An estimate not beyond where the visitor already is says nothing.
    return (pages, True) if pages and page.number and pages > page.number else (None, False)


@require_safe
@public_when_anonymous()
def products(request: HttpRequest) -> HttpResponse:
    return _product_list(request, category=None)


@require_safe
@public_when_anonymous()
def category(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        found = selectors.category(slug)
    except Category.DoesNotExist:
        raise Http404("No such category.") from None
    return _product_list(request, category=found)


def _product_page(request: HttpRequest, slug: str, form: ReviewForm | None = None, status: int = 200) -> HttpResponse:
    try:
        data = cache.product_page(slug)
    except Product.DoesNotExist:
        raise Http404("No such product.") from None
    own_review = None
    if request.user.is_authenticated:
        own_review = selectors.review_of(user_id=request.user.pk, product_id=data.id)
        if form is None:
            initial = {"rating": own_review.rating, "text": own_review.text} if own_review else {}
            form = ReviewForm(initial=initial)
    context = {"product": data, "form": form, "own_review": own_review}
    return render(request, "catalog/product.html", context, status=status)


@require_safe
@public_when_anonymous()
def product(request: HttpRequest, slug: str) -> HttpResponse:
    cache.note_visit(slug)
    if not request.COOKIES:
        # Every visitor without cookies (no session, no messages) gets the same bytes:
        # serve them rendered, cached under the product page's version.
        # A warm one is served before the view (catalog.cache.anonymous_product_page).
        html = product_pages.derived(slug, cache.ANONYMOUS_HTML, lambda: _product_page(request, slug).content)
        return anonymous_page(html)
    return _product_page(request, slug)


@require_POST
@login_required
def review(request: HttpRequest, slug: str) -> HttpResponse:
    form = ReviewForm(request.POST)
    if not form.is_valid():
        return _product_page(request, slug, form=form, status=400)
    target = get_object_or_404(Product.objects.only("id", "slug"), slug=slug)
    services.post_review(
        user=request.user, product=target, rating=form.cleaned_data["rating"], text=form.cleaned_data["text"]
    )
    messages.success(request, "Thank you: your review is saved.")
    return redirect("catalog:product", slug=slug)
