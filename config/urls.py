from django.contrib import admin
from django.urls import include, path

from scaling.ops.dashboard import ops_data, ops_page
from scaling.ops.metrics import metrics_view
from scaling.web.views import robots_txt, stored_file

urlpatterns = [
    path("", include("catalog.urls")),
    path("accounts/", include("accounts.urls")),
    path("jobs/", include("jobs.urls")),
    path("notifications/", include("notifications.urls")),
    path("media/<path:name>", stored_file, name="stored-file"),
    path("robots.txt", robots_txt, name="robots-txt"),
    path("metrics", metrics_view, name="metrics"),
    path("ops/", ops_page, name="ops"),
    path("ops/data.json", ops_data, name="ops-data"),
    path("admin/", admin.site.urls),
]

handler400 = "scaling.web.views.bad_request"
handler403 = "scaling.web.views.permission_denied"
handler404 = "scaling.web.views.page_not_found"
handler500 = "scaling.web.views.server_error"
