"""The image of deploy/Containerfile, built on this machine (deploy/image.py) and run as the
pods run it (deploy/k8s/base): the web process is the image's own command (CMD), the worker
the worker Deployment's, each with the ConfigMap's environment and the Secret's keys
(the services' pointed at the test profile's PostgreSQL, Redis and RabbitMQ), as the
image's USER, its root filesystem read-only and ``/tmp`` its own (the pods' emptyDir).

Its build starts with the suite and these tests run last (deploy/tests/conftest.py,
``built_image``); they skip where this machine cannot build the image.
"""

from __future__ import annotations

import re
import secrets
import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import yaml
from django.conf import settings

from accounts.tests.factories import make_user
from catalog import services as catalog_services
from deploy.herd.processes import wait_for
from deploy.herd.profiles import PROFILES, RESERVED_REPLICAS
from deploy.image import Container, config, mounted
from jobs import services as job_services
from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

K8S_BASE = Path(__file__).resolve().parents[1] / "k8s" / "base"
PROFILE = PROFILES["test"]
# The last app replica's port reserved ahead: no other test starts one there.
WEB_PORT = PROFILE.web_port(RESERVED_REPLICAS)


def manifest(name: str) -> dict:
    return yaml.safe_load((K8S_BASE / name).read_text())


def pod_container(deployment: str) -> dict:
    return manifest(deployment)["spec"]["template"]["spec"]["containers"][0]


def pod_env(replica_id: str) -> dict[str, str]:
    """A pod's environment: the ConfigMap's literals, then the Secret's keys; those of the
    services point at the test profile's, the secret key is made up, the host is loopback."""
    generators = manifest("kustomization.yaml")["configMapGenerator"]
    literals = next(generator["literals"] for generator in generators if generator["name"] == "herd-config")
    env = dict(literal.split("=", 1) for literal in literals)
    services = PROFILE.django_env(settings.DATABASES["default"]["NAME"])
    env |= {key: services[key] for key in manifest("secret.template.yaml")["stringData"] if key in services}
    return env | {
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "HERD_REPLICA_ID": replica_id,
    }


def on_port(command: list[str], port: int) -> list[str]:
    at = command.index("--port") + 1
    return [*command[:at], str(port), *command[at + 1 :]]


def log_end(container: Container) -> str:
    return f"\n{container.name}'s log ends:\n" + container.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def image(built_image):
    with mounted(built_image) as root:
        yield root, config(built_image)


@pytest.fixture
def start(image):
    """``start(name, command)``: the command in the image as a pod named ``name``; stopped
    at the test's end."""
    root, image_config = image
    started = []

    def start(name: str, command: list[str]) -> Container:
        container = Container(PROFILE, name, root, image_config, command, pod_env(name))
        container.log.unlink(missing_ok=True)
        started.append(container)
        container.start()
        return container

    yield start
    for container in started:
        container.stop()


def test_the_images_command_serves_readyz_and_a_catalog_page_with_its_static_files(image, start, wait_for_replicas):
    category = catalog_services.create_category(name="Containers", slug="containers")
    catalog_services.create_product(
        category=category, name="Read-only Lamp", slug="read-only-lamp", price=Decimal("12.50"), stock=3
    )
    wait_for_replicas()
    _, image_config = image
    web = start("image-web", on_port(image_config.cmd, WEB_PORT))
    url = f"http://127.0.0.1:{WEB_PORT}"
    # The router ends TLS and says so (the production settings redirect plain HTTP).
    client = httpx.Client(base_url=url, headers={"X-Forwarded-Proto": "https"}, timeout=10)

    def ready() -> bool:
        try:
            return client.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    started = time.monotonic()
    wait_for(lambda: ready() or not web.running(), 60, "the image's web process", web.log)
    assert web.running(), "it exited" + log_end(web)
    print(f"image-web ready in {time.monotonic() - started:.1f} s")

    page = client.get("/c/containers/")
    assert page.status_code == 200, log_end(web)
    assert page.headers["X-Served-By"] == "image-web"
    assert "Read-only Lamp" in page.text
    stylesheet = re.search(r'href="(/static/herd\.[0-9a-f]+\.css)"', page.text)
    assert stylesheet, "the page names no hashed stylesheet"
    assert client.get(stylesheet[1]).status_code == 200, log_end(web)


def test_the_worker_deployments_command_runs_a_job_to_its_end(image, start, wait_for_replicas):
    category = catalog_services.create_category(name="Containers", slug="containers")
    for number in range(3):
        catalog_services.create_product(
            category=category, name=f"Crate {number}", slug=f"crate-{number}", price=Decimal("4.00"), stock=1
        )
    shopper = make_user("shopper")
    wait_for_replicas()
    worker_pod = pod_container("worker-deployment.yaml")
    worker = start("image-worker", worker_pod["command"])
    started = time.monotonic()
    job = job_services.start_job(shopper, "catalog_export")

    def finished() -> bool:
        return Job.objects.for_id(job.pk).get().is_finished

    wait_for(lambda: finished() or not worker.running(), 90, "the end of the export", worker.log)
    job = Job.objects.for_id(job.pk).get()
    assert job.state == Job.State.SUCCEEDED, f"{job.state}: {job.error}" + log_end(worker)
    print(f"image-worker: the job ended {time.monotonic() - started:.1f} s after the worker started")
    assert job.result["products"] == 3

    # The pod's liveness probe, in the image, reads the heartbeat the worker keeps in its /tmp.
    root, image_config = image
    probe_command = worker_pod["livenessProbe"]["exec"]["command"]
    result = Container(PROFILE, "image-probe", root, image_config, probe_command, tmp=worker.tmp).run()
    assert result.returncode == 0, result.stdout + result.stderr
