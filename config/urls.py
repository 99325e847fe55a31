from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView

from scaling.views import stored_file

urlpatterns = [
    path("", TemplateView.as_view(template_name="home.html"), name="home"),
    path("accounts/", include("accounts.urls")),
    path("media/<path:name>", stored_file, name="stored-file"),
    path("admin/", admin.site.urls),
]
