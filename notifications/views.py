from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST, require_safe

from notifications import selectors, services


@require_safe
@never_cache
@login_required
def notification_list(request: HttpRequest) -> HttpResponse:
    return render(request, "notifications/list.html", {"notifications": selectors.notifications_of(request.user)})


@require_POST
@never_cache
@login_required
def mark_read(request: HttpRequest, notification_id: int) -> HttpResponse:
    if not services.mark_read(request.user, notification_id):
        raise Http404("No such notification.")
    return redirect("notifications:list")


@require_POST
@never_cache
@login_required
def mark_all_read(request: HttpRequest) -> HttpResponse:
    services.mark_all_read(request.user)
    return redirect("notifications:list")
