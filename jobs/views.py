"""The jobs pages: a user's jobs, their start forms (one per registered kind), a job's page and its file."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST, require_safe

from jobs import kinds, selectors, services
from jobs.forms import StartJobForm
from jobs.models import Job
from scaling.web.storage import private_file_response


def _form_class(kind: kinds.Kind) -> type[StartJobForm]:
    return kind.form or StartJobForm


def _job_list(request: HttpRequest, bound: dict[str, StartJobForm] | None = None, status: int = 200) -> HttpResponse:
    # The kinds anyone may start first, then the staff's, each in the order they were registered.
    shown = sorted(
        (kind for kind in kinds.all_kinds() if request.user.is_staff or not kind.staff_only),
        key=lambda kind: kind.staff_only,
    )
    bound = bound or {}
    forms = {kind.name: bound[kind.name] if kind.name in bound else _form_class(kind)() for kind in shown}
    context = {
        "jobs": selectors.jobs_of(request.user),
        "forms": forms,
        "starts": [(kind, forms[kind.name]) for kind in shown],
    }
    return render(request, "jobs/list.html", context, status=status)


@require_safe
@never_cache
@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    return _job_list(request)


@require_POST
@never_cache
@login_required
def start(request: HttpRequest, kind: str) -> HttpResponse:
    registered = kinds.find(kind)
    if registered is None:
        raise Http404("No such kind of job.")
    if registered.staff_only and not request.user.is_staff:
        raise PermissionDenied("Only staff can start this job.")
    form = _form_class(registered)(request.POST, request.FILES)
    if not form.is_valid():
        return _job_list(request, bound={kind: form}, status=400)
    try:
        job = services.start_job(
            request.user,
            kind,
            params=form.params(),
            input_bytes=form.input_bytes(),
            idempotency_key=form.cleaned_data["idempotency_key"] or None,
            limited=True,
        )
    except services.IdempotencyKeyReused:
        form.add_error(None, "This form was already used to start another job; reload the page and try again.")
        return _job_list(request, bound={kind: form}, status=400)
    messages.success(request, f"{job.kind_label} started.")
    return redirect(job)


def _own_job(request: HttpRequest, job_id) -> Job:
    try:
        return selectors.job_of(request.user, job_id)
    except Job.DoesNotExist:
        raise Http404("No such job.") from None


@require_safe
@never_cache
@login_required
def job_detail(request: HttpRequest, job_id) -> HttpResponse:
    job = _own_job(request, job_id)
    return render(
        request, "jobs/detail.html", {"job": job, "summary": selectors.outcome_summary(job) if job.is_finished else ""}
    )


@require_safe
@never_cache
@login_required
def download(request: HttpRequest, job_id) -> HttpResponse:
    job = _own_job(request, job_id)
    if job.state != Job.State.SUCCEEDED or not job.output_name:
        raise Http404("This job has no file to download.")
    kind = kinds.find(job.kind)
    suffix, content_type = (kind.output_suffix, kind.output_content_type) if kind else ("", "application/octet-stream")
    filename = f"herd-{job.kind.replace('_', '-')}-{job.created_at:%Y%m%d-%H%M%S}{suffix}"
    # The one way to a job's file: its owner only, never kept by a shared cache.
    try:
        return private_file_response(job.output_name, filename, content_type)
    except FileNotFoundError:
        raise Http404("The file is no longer stored.") from None
