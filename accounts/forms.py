from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm

from accounts.models import User
from accounts.pictures import DecodersBusy, ProcessedPicture, process_picture


class SignupForm(UserCreationForm):
    email = forms.EmailField(required=True)

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")


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
