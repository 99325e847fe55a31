"""The jobs app: at ready, each installed app's ``jobs.py`` registers its kinds
(``jobs.kinds``), and the dashboard gets the panel of unfinished jobs."""

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "jobs"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        from jobs import selectors
        from scaling.ops.dashboard import register_panel

        autodiscover_modules("jobs")
        register_panel("jobs", selectors.unfinished_job_counts, "Jobs in progress")
