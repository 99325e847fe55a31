from django.contrib import admin
from django.urls import include, path

from scaling.views import robots_txt, stored_file

urlpatterns = [
    path("", include("catalog.urls")),
    path("accounts/", include("accounts.urls")),
    path("jobs/", include("jobs.urls")),
    path("notifications/", include("notifications.urls")),
    path("media/<path:name>", stored_file, name="stored-file"),
    path("robots.txt", robots_txt, name="robots-txt"),
    path("admin/", admin.site.urls),
]

handler500 = "scaling.views.server_error"
