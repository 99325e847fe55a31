from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST, require_safe

from jobs import selectors, services
from jobs.forms import CacheWarmForm, CatalogImportForm, StartJobForm
from jobs.models import Job
from scaling.web.storage import private_file_response

START_FORMS: dict[str, type[StartJobForm]] = {
    Job.Kind.CATALOG_IMPORT: CatalogImportForm,
    Job.Kind.CATALOG_EXPORT: StartJobForm,
    Job.Kind.PICTURE_THUMBNAIL: StartJobForm,
    Job.Kind.CACHE_WARM: CacheWarmForm,
}


def _job_list(request: HttpRequest, bound: dict[str, StartJobForm] | None = None, status: int = 200) -> HttpResponse:
    forms = {kind: form_class() for kind, form_class in START_FORMS.items()} | (bound or {})
    if not request.user.is_staff:
        forms = {kind: form for kind, form in forms.items() if kind not in Job.STAFF_ONLY_KINDS}
    context = {"jobs": selectors.jobs_of(request.user), "forms": forms}
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
    if kind not in START_FORMS:
        raise Http404("No such kind of job.")
    if kind in Job.STAFF_ONLY_KINDS and not request.user.is_staff:
        raise PermissionDenied("Only staff can start this job.")
    form = START_FORMS[kind](request.POST, request.FILES)
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
    messages.success(request, f"{job.get_kind_display()} started.")
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
    filename = f"herd-{job.kind.replace('_', '-')}-{job.created_at:%Y%m%d-%H%M%S}.csv"
    # The one way to a job's file: its owner only, never kept by a shared cache.
    try:
        return private_file_response(job.output_name, filename, "text/csv; charset=utf-8")
    except FileNotFoundError:
        raise Http404("The file is no longer stored.") from None
