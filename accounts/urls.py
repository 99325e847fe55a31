from django.contrib.auth import views as auth_views
from django.urls import path, reverse_lazy

from accounts import views

app_name = "accounts"


def form_page(title: str, submit: str) -> dict:
    return {"template_name": "accounts/form.html", "extra_context": {"title": title, "submit": submit}}


def message_page(title: str, message: str) -> dict:
    return {"template_name": "accounts/message.html", "extra_context": {"title": title, "message": message}}


urlpatterns = [
    path("signup/", views.signup, name="signup"),
    path(
        "login/",
        auth_views.LoginView.as_view(**form_page("Log in", "Log in")),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("profile/", views.profile, name="profile"),
    path(
        "password/change/",
        auth_views.PasswordChangeView.as_view(
            success_url=reverse_lazy("accounts:password_change_done"), **form_page("Change password", "Change")
        ),
        name="password_change",
    ),
    path(
        "password/change/done/",
        auth_views.PasswordChangeDoneView.as_view(**message_page("Password changed", "Your password was changed.")),
        name="password_change_done",
    ),
    path(
        "password/reset/",
        views.PasswordResetView.as_view(
            success_url=reverse_lazy("accounts:password_reset_done"),
            email_template_name="accounts/password_reset_email.txt",
            subject_template_name="accounts/password_reset_subject.txt",
            **form_page("Reset password", "Send me a link"),
        ),
        name="password_reset",
    ),
    path(
        "password/reset/sent/",
        auth_views.PasswordResetDoneView.as_view(
            **message_page("Check your e-mail", "If that address has an account, a reset link is on its way.")
        ),
        name="password_reset_done",
    ),
    path(
        "password/reset/<uidb64>/<token>/",
        auth_views.PasswordResetConfirmView.as_view(
            success_url=reverse_lazy("accounts:password_reset_complete"),
            **form_page("Choose a new password", "Set password"),
        ),
        name="password_reset_confirm",
    ),
    path(
        "password/reset/done/",
        auth_views.PasswordResetCompleteView.as_view(
            **message_page("Password set", "Your new password is set; you can log in.")
        ),
        name="password_reset_complete",
    ),
]
