from __future__ import annotations

from django import forms
from django.contrib.auth.forms import UserCreationForm

from accounts.models import User
from accounts.pictures import ProcessedPicture, process_picture


class SignupForm(UserCreationForm):
    email = forms.EmailField(required=True)

    class Meta(UserCreationForm.Meta):
        model = User
        fields = ("username", "email")


class ProfileForm(forms.Form):
    display_name = forms.CharField(max_length=80, required=False)
    bio = forms.CharField(max_length=2000, required=False, widget=forms.Textarea(attrs={"rows": 4}))
    picture = forms.FileField(
        required=False,
        help_text="JPEG, PNG or WebP, at most 5 MB.",
        widget=forms.ClearableFileInput(attrs={"accept": "image/jpeg,image/png,image/webp"}),
    )

    processed_picture: ProcessedPicture | None = None

    def clean_picture(self):
        upload = self.cleaned_data.get("picture")
        if upload:
            self.processed_picture = process_picture(upload)
        return upload
