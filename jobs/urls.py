from django.urls import path

from jobs import views

app_name = "jobs"

urlpatterns = [
    path("", views.job_list, name="list"),
    path("start/<str:kind>/", views.start, name="start"),
    path("<int:job_id>/", views.job_detail, name="detail"),
    path("<int:job_id>/download/", views.download, name="download"),
]
