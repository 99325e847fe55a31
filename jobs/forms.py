from __future__ import annotations

import math
import uuid

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError

from jobs import catalog_csv
from jobs.handlers import DEFAULT_WARM_PRODUCTS, MAX_WARM_PRODUCTS

_MB = 1024 * 1024


class StartJobForm(forms.Form):
    """Every start button sends a key made when its page was drawn: sending it twice starts one job."""

    idempotency_key = forms.CharField(max_length=100, required=False, widget=forms.HiddenInput)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial.setdefault("idempotency_key", uuid.uuid4().hex)

    def params(self) -> dict:
        return {}

    def input_bytes(self) -> bytes | None:
        return None


class CatalogImportForm(StartJobForm):
    file = forms.FileField(
        label="CSV file",
        help_text="Columns: name, slug, category, price, stock, description. UTF-8, at most 10 MB.",
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv"}),
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        limit = settings.HERD_UPLOAD_MAX_BYTES
        # The upload handler kept at most limit + 1 bytes, and .size tells the true length.
        if (upload.size or 0) > limit:
            raise self._too_large(upload.size)
        upload.seek(0)
        data = upload.read(limit + 1)
        if len(data) > limit:
            raise self._too_large(len(data))
        try:
            catalog_csv.check_file(data)
        except catalog_csv.FileRefused as refused:
            raise ValidationError(refused.message, code="refused") from refused
        self._data = data
        return upload

    @staticmethod
    def _too_large(size: int) -> ValidationError:
        return ValidationError(
            "The file is %(size).1f MB; the limit is %(limit)s MB.",
            code="too_large",
            # Rounded up, so a file just over the limit never reads as "10.0 MB; the limit is 10 MB".
            params={"size": math.ceil(size * 10 / _MB) / 10, "limit": f"{settings.HERD_UPLOAD_MAX_BYTES / _MB:g}"},
        )

    def input_bytes(self) -> bytes | None:
        return self._data


class CacheWarmForm(StartJobForm):
    products = forms.IntegerField(
        label="Product pages", min_value=1, max_value=MAX_WARM_PRODUCTS, initial=DEFAULT_WARM_PRODUCTS
    )

    def params(self) -> dict:
        return {"products": self.cleaned_data["products"]}
