from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters

from accounts import services
from accounts.forms import PICTURE_BUSY, ProfileForm, SignupForm
from scaling.web import throttle

HOUR = 3600
PICTURE_RETRY_AFTER_SECONDS = 5


def _per_address(request: HttpRequest, purpose: str, limit: int, reason: str) -> None:
    throttle.RateLimit(purpose, limit, HOUR, reason).hit(throttle.client_address(request))


@never_cache
@sensitive_post_parameters("password1", "password2")
def signup(request: HttpRequest) -> HttpResponse:
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        limit = settings.HERD_SIGNUPS_PER_ADDRESS_PER_HOUR
        _per_address(request, "signup", limit, "Too many sign-ups from your address.")
        user = services.create_user(
            username=form.cleaned_data["username"],
            email=form.cleaned_data["email"],
            password=form.cleaned_data["password1"],
        )
        login(request, user, backend="accounts.backends.ThrottledModelBackend")
        messages.success(request, "Welcome to Herd.")
        return redirect("accounts:profile")
    return render(request, "accounts/form.html", {"form": form, "title": "Sign up", "submit": "Sign up"})


@never_cache
@login_required
def profile(request: HttpRequest) -> HttpResponse:
    current = services.profile_of(request.user)
    if request.method == "POST":
        form = ProfileForm(request.POST, request.FILES)
        if form.is_valid():
            services.update_profile(
                request.user,
                display_name=form.cleaned_data["display_name"],
                bio=form.cleaned_data["bio"],
                picture=form.processed_picture,
            )
            messages.success(request, "Profile saved.")
            return redirect("accounts:profile")
    else:
        form = ProfileForm(initial={"display_name": current.display_name, "bio": current.bio})
    response = render(request, "accounts/profile.html", {"form": form, "profile": current})
    if form.is_bound:
        # Busy is this replica's state, not the visitor's fault: 503, and when to come back.
        if form.has_error("picture", code=PICTURE_BUSY):
            response.status_code = 503
            response["Retry-After"] = str(PICTURE_RETRY_AFTER_SECONDS)
        else:
            response.status_code = 400
    return response


class PasswordResetView(auth_views.PasswordResetView):
    """Django's, with a limit on the reset mails one address may have sent."""

    def form_valid(self, form):
        _per_address(
            self.request,
            "password-reset",
            settings.HERD_PASSWORD_RESETS_PER_ADDRESS_PER_HOUR,
            "Too many password reset requests from your address.",
        )
        return super().form_valid(form)
