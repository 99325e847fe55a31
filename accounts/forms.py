from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.core.exceptions import ValidationError

from accounts.models import User
from accounts.pictures import DecodersBusy, ProcessedPicture, process_picture
from scaling.throttle import FailureThrottle


class SignupForm(UserCreationForm):
    email = forms.EmailField(required=True)

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")


def account_throttle() -> FailureThrottle:
    return FailureThrottle(
        "login-account", settings.HERD_LOGIN_FAILURES_PER_ACCOUNT, settings.HERD_LOGIN_WINDOW_SECONDS
    )


def address_throttle() -> FailureThrottle:
    return FailureThrottle(
        "login-address", settings.HERD_LOGIN_FAILURES_PER_ADDRESS, settings.HERD_LOGIN_WINDOW_SECONDS
    )


class ThrottledLoginForm(AuthenticationForm):
    """Log-in that refuses, for a while, an account or address with too many failures.

    The counts live in Redis (``scaling.throttle``), so they hold across replicas. A
    success clears both counts. While an account is refused, even its right password
    is refused: otherwise the refusal would tell a guesser when they guessed right.
    """

    def clean(self):
        username = (self.data.get("username") or "").strip().lower()
        address = self.request.META.get("REMOTE_ADDR", "") if self.request else ""
        checks = [(account_throttle(), username, "this account"), (address_throttle(), address, "your address")]
        for throttle, key, whose in checks:
            wait = throttle.retry_after(key)
            if wait:
                minutes = -(-wait // 60)
                raise ValidationError(
                    f"Too many failed log-in attempts for {whose}. Try again in {minutes} minute"
                    f"{'s' if minutes != 1 else ''}.",
                    code="throttled",
                )
        try:
            cleaned = super().clean()
        except ValidationError:
            for throttle, key, _ in checks:
                throttle.record_failure(key)
            raise
        for throttle, key, _ in checks:
            throttle.reset(key)
        return cleaned


PICTURE_BUSY = "busy"  # the error code the view answers with 503


class ProfileForm(forms.Form):
    display_name = forms.CharField(max_length=80, required=False)
    bio = forms.CharField(max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 4}))
    picture = forms.FileField(
        required=False,
        help_text="JPEG, PNG or WebP, at most 5 MB and 16 megapixels (4000x4000).",
        widget=forms.ClearableFileInput(attrs={"accept": "image/jpeg,image/png,image/webp"}),
    )

    processed_picture: ProcessedPicture | None = None

    def clean_picture(self):
        upload = self.cleaned_data.get("picture")
        if upload:
            try:
                self.processed_picture = process_picture(upload)
            except DecodersBusy as error:
                raise forms.ValidationError(
                    "Too many pictures are being processed right now; please try again in a few seconds.",
                    code=PICTURE_BUSY,
                ) from error
        return upload
