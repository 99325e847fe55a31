from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError

from catalog.models import MAX_RATING, MIN_RATING
from catalog.selectors import MAX_PRICE, SORTS

RATING_CHOICES = [(n, f"{n} star{'s' if n > 1 else ''}") for n in range(MAX_RATING, MIN_RATING - 1, -1)]


class ProductFilterForm(forms.Form):
    """The query string of a product list. An invalid one is answered with 400 and its errors."""

    q = forms.CharField(label="Search", max_length=100, required=False, strip=True)
    min_price = forms.DecimalField(
        label="Min price", min_value=0, max_value=MAX_PRICE, decimal_places=2, required=False
    )
    max_price = forms.DecimalField(
        label="Max price", min_value=0, max_value=MAX_PRICE, decimal_places=2, required=False
    )
    in_stock = forms.BooleanField(label="In stock only", required=False)
    sort = forms.ChoiceField(
        choices=[("newest", "Newest first"), ("price", "Price, low to high")],
        required=False,
        error_messages={"invalid_choice": f"Sort by one of: {', '.join(SORTS)}."},
    )
    after = forms.CharField(max_length=200, required=False, widget=forms.HiddenInput)
    before = forms.CharField(max_length=200, required=False, widget=forms.HiddenInput)

    def clean_sort(self) -> str:
        return self.cleaned_data["sort"] or "newest"

    def clean(self):
        cleaned = super().clean()
        low, high = cleaned.get("min_price"), cleaned.get("max_price")
        if low is not None and high is not None and low > high:
            raise ValidationError("The minimum price is above the maximum price.", code="price_range")
        return cleaned


class ReviewForm(forms.Form):
    rating = forms.TypedChoiceField(
        choices=RATING_CHOICES,
        coerce=int,
        error_messages={
            "required": f"Choose a rating from {MIN_RATING} to {MAX_RATING} stars.",
            "invalid_choice": f"Choose a rating from {MIN_RATING} to {MAX_RATING} stars.",
        },
    )
    text = forms.CharField(
        label="Your review", max_length=5000, required=False, widget=forms.Textarea(attrs={"rows": 4})
    )
