"""The start form every kind's form extends (``jobs.kinds.Kind.form``): a key that makes a
double send start one job, and the job's ``params`` and input file from the fields."""

from __future__ import annotations

import uuid

from django import forms


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
