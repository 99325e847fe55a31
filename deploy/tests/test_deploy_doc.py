"""The commands docs/DEPLOY.md gives an operator name what the manifests render.

Every ``oc``/``kubectl`` command of the page (its ``sh`` blocks and inline code) is read
for the names it uses, and each is looked up in the rendered overlays:

- ``KIND/NAME`` and ``get|patch|edit|describe KIND NAME`` (in Herd's namespace): an object
  of that kind and name (``herd-secrets``, made by hand: its template; a cert-manager
  ``certificate/NAME``: the Secret an Ingress's ``tls`` names);
- ``-c CONTAINER``: a container of the workload named (or of an app workload);
- ``-k PATH``: a kustomization; ``python manage.py CMD``: a management command;
- ``oc new-project``/``kubectl create namespace``: the overlays' namespace;
- ``kubectl label namespace ... KEY=VALUE``: a label a NetworkPolicy selects namespaces by;
- the keys written to ``herd-secrets``: keys of base/secret.template.yaml.
"""

from __future__ import annotations

import functools
import re

import pytest
import yaml

from deploy.tests.test_manifests import K8S, OVERLAYS, ROOT, app_workloads, containers, kustomize_build

DOC = ROOT / "docs" / "DEPLOY.md"
# The resource names of the commands, and the kinds they mean.
KINDS = {
    "deployment": "Deployment",
    "deploy": "Deployment",
    "statefulset": "StatefulSet",
    "cronjob": "CronJob",
    "route": "Route",
    "ingress": "Ingress",
    "service": "Service",
    "secret": "Secret",
    "podmonitor": "PodMonitor",
    "prometheusrule": "PrometheusRule",
    "rabbitmqcluster": "RabbitmqCluster",
    "cluster.postgresql.cnpg.io": "Cluster",
    "certificate": "Certificate",
}
NAME = r"[a-z0-9][a-z0-9.-]*[a-z0-9]"
# Containers of pods an operator makes: CloudNativePG's instance pods.
OPERATOR_CONTAINERS = {"postgres"}
SLASHED = re.compile(rf"(?<![\w.-])({'|'.join(re.escape(kind) for kind in KINDS)})/({NAME})(?![\w$])")
SPACED = re.compile(rf"\b(?:get|patch|edit|describe|delete)\s+({'|'.join(map(re.escape, KINDS))})\s+({NAME})(?![\w$])")


def commands(text: str) -> list[str]:
    """Each command of the doc: the lines of its ``sh`` blocks (continuations joined),
    and its inline code that starts with ``oc`` or ``kubectl``, whitespace collapsed."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        found += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    found += [" ".join(span.split()) for span in re.findall(r"`((?:oc|kubectl) [^`]+)`", text)]
    return found


@functools.cache
def rendered() -> list[dict]:
    return [obj for overlay in OVERLAYS for obj in kustomize_build(K8S / "overlays" / overlay)]


def names_of(kind: str) -> set[str]:
    objects = rendered()
    names = {obj["metadata"]["name"] for obj in objects if obj["kind"] == kind}
    if kind == "Secret":
        names.add(yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())["metadata"]["name"])
    if kind == "Certificate":  # cert-manager names it after the Secret an Ingress's tls names
        names |= {tls["secretName"] for obj in objects if obj["kind"] == "Ingress" for tls in obj["spec"]["tls"]}
    return names


def command_problems(command: str) -> list[str]:
    """What ``command`` names that the overlays do not render."""
    from django.core.management import get_commands

    problems = []
    other_namespace = re.search(r"(?:-n|--namespace)[ =](\S+)", command)
    if other_namespace and other_namespace.group(1) not in namespaces():
        return []  # the registry's, the monitoring stack's, the ingress controller's
    named = [
        (word, name)
        for word, name in SLASHED.findall(command) + SPACED.findall(command)
        if not (ROOT / word / name).exists()  # deploy/k8s/... is a path of the repository
    ]
    for word, name in named:
        if name not in names_of(KINDS[word]):
            problems.append(f"{word}/{name}: no {KINDS[word]} {name} in the overlays")
    for container in re.findall(r"\s-c\s+([\w-]+)", command):
        workloads = [obj for obj in rendered() if (obj["kind"], obj["metadata"]["name"]) in deployments(named)]
        pool = workloads or app_workloads(rendered())
        if container not in {c["name"] for obj in pool for c in containers(obj)} | OPERATOR_CONTAINERS:
            problems.append(f"-c {container}: no such container")
    for path in re.findall(r"\s-k\s+(\S+)", command):
        if not (ROOT / path / "kustomization.yaml").exists():
            problems.append(f"-k {path}: no kustomization")
    for name in re.findall(r"manage\.py\s+(\w+)", command):
        if name not in get_commands():
            problems.append(f"manage.py {name}: no such command")
    for name in re.findall(r"(?:oc new-project|create namespace)\s+(\S+)", command):
        if name not in namespaces():
            problems.append(f"namespace {name}: the overlays use {sorted(namespaces())}")
    label = re.search(r"label namespace \S+ ([\w./-]+)=(\S*)", command)
    if label and {label.group(1): label.group(2)} not in namespace_selectors():
        problems.append(f"label {label.group(1)}={label.group(2)}: no NetworkPolicy selects it")
    return problems


def deployments(named: list[tuple[str, str]]) -> set[tuple[str, str]]:
    return {(KINDS[word], name) for word, name in named if KINDS[word] in {"Deployment", "StatefulSet", "CronJob"}}


def namespaces() -> set[str]:
    return {obj["metadata"]["namespace"] for obj in rendered() if obj["metadata"].get("namespace")}


def namespace_selectors() -> list[dict]:
    return [
        source["namespaceSelector"].get("matchLabels", {})
        for obj in rendered()
        if obj["kind"] == "NetworkPolicy"
        for rule in obj["spec"].get("ingress", [])
        for source in rule.get("from", [])
        if "namespaceSelector" in source
    ]


def secret_keys_written(text: str) -> set[str]:
    """The keys of the env file the doc has the operator write for ``herd-secrets``."""
    (block,) = [
        block for block in re.findall(r"```sh\n(.*?)```", text, re.S) if "herd-secrets" in block and "<<" in block
    ]
    return set(re.findall(r"^\s*([A-Z][A-Z0-9_]*)=", block, re.M))


def test_the_commands_of_deploy_md_name_what_the_overlays_render():
    text = DOC.read_text()
    found = commands(text)
    assert any("deploy/herd-web" in command for command in found)  # the reading works
    problems = [f"{command}: {problem}" for command in found for problem in command_problems(command)]
    assert problems == []


def test_the_keys_deploy_md_puts_in_herd_secrets_are_the_templates():
    written = secret_keys_written(DOC.read_text())
    template = set(yaml.safe_load((K8S / "base" / "secret.template.yaml").read_text())["stringData"])
    assert written and written <= template, written - template


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("oc rollout status deployment/herd-wbe", "no Deployment herd-wbe"),
        ("oc exec -it deploy/herd-web -c wbe -- python manage.py createsuperuser", "-c wbe"),
        ("oc exec deploy/herd-web -c web -- python manage.py warmcache", "manage.py warmcache"),
        ("oc get route herd-web -o jsonpath='{.spec.host}'", "no Route herd-web"),
        ("oc apply -k deploy/k8s/overlays/prod", "-k deploy/k8s/overlays/prod"),
        ("kubectl label namespace monitoring network.openshift.io/policy-group=monitor", "no NetworkPolicy"),
        ("oc new-project herd-prod", "namespace herd-prod"),
    ],
)
def test_a_misnamed_command_is_reported(command, expected):
    assert any(expected in problem for problem in command_problems(command)), command_problems(command)


def test_names_outside_herds_namespace_are_not_checked():
    assert command_problems("oc get route default-route -n openshift-image-registry") == []
