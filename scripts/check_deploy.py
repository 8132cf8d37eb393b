#!/usr/bin/env python3
"""Checks deploy/: the Kubernetes manifests as kustomize renders them, against the
Kubernetes OpenAPI schemas of one stated version; the prometheus-operator resources
(structurally, since their CRDs are not in those schemas), with the PrometheusRule's
groups identical to deploy/prometheus/alerts.yaml; the alert rules and their unit tests
(promtool); and the Grafana dashboard (structure, and every PromQL expression parsed by
promtool). Every retentiond metric the alerts and the dashboard name must be one the
daemon exports (a string literal in src/).

Run by scripts/check-deploy, which installs the tools and passes their paths:

    check_deploy.py --kubectl PATH --promtool PATH --kube-version 1.37
    check_deploy.py --sync-prometheusrule    # rewrite the PrometheusRule from alerts.yaml

Prints one line per check and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Iterator

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
OPERATOR = K8S / "prometheus-operator"
PROMETHEUS = DEPLOY / "prometheus"
ALERTS = PROMETHEUS / "alerts.yaml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yaml"
RULE_CR = OPERATOR / "prometheusrule.yaml"
DASHBOARD = DEPLOY / "grafana" / "retentiond.json"
# The CronJob variant is applied with `kubectl apply -f` (it is not in any kustomization).
CRONJOB_VARIANT = ["configmap.yaml", "secret.yaml", "cronjob.yaml"]

# What issue #17 asks the alerts to cover, and the alerts that do.
REQUIRED_ALERTS = {
    "a rule failed": ["RetentionRuleFailed"],
    "a run refused": ["RetentionRunRefused"],
    "overdue records": ["RetentionOverdueRecords"],
    "no success within 2x the interval": ["RetentionRuleNotSucceeding"],
    "the daemon down": ["RetentiondDown"],
    "a store down": ["RetentionStoreDown"],
    "anchor writes failing": ["RetentionAnchorWriteFailing"],
}

# What the dashboard must show, and a metric each topic needs in some panel's query.
DASHBOARD_TOPICS = {
    "runs by status": ["retentiond_runs_total"],
    "rule status": ["retentiond_rule_failures_total", "retentiond_rule_never_succeeded"],
    "records removed per category": ["retentiond_records_removed_total", "retentiond_rule_info"],
    "conformance (overdue records) per rule": ["retentiond_overdue_records"],
    "last success age per rule": ["retentiond_rule_last_success_timestamp_seconds"],
    "store up/down": ["retentiond_store_up"],
    "anchor failures": ["retentiond_anchor_failures_total"],
}

# The ServiceMonitor's job label must come out as the job the alerts select.
ALERTS_JOB = "retentiond"

DURATION = re.compile(r"^(0|([0-9]+y)?([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?)$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
METRIC = re.compile(r"\bretentiond_[a-zA-Z0-9_]+")

# Field names of the prometheus-operator CRDs (monitoring.coreos.com/v1) at the levels
# these manifests use; anything else is a typo the API server would reject or prune.
PROMRULE_GROUP_KEYS = {"name", "interval", "labels", "limit", "partial_response_strategy",
                       "query_offset", "rules"}
PROMRULE_RULE_KEYS = {"alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations"}
SERVICEMONITOR_SPEC_KEYS = {
    "attachMetadata", "bodySizeLimit", "convertClassicHistogramsToNHCB", "endpoints",
    "fallbackScrapeProtocol", "jobLabel", "keepDroppedTargets", "labelLimit",
    "labelNameLengthLimit", "labelValueLengthLimit", "namespaceSelector",
    "nativeHistogramBucketLimit", "nativeHistogramMinBucketFactor", "podTargetLabels",
    "sampleLimit", "scrapeClass", "scrapeClassicHistograms", "scrapeProtocols", "selector",
    "selectorMechanism", "serviceDiscoveryRole", "targetLabels", "targetLimit",
}
SERVICEMONITOR_ENDPOINT_KEYS = {
    "authorization", "basicAuth", "bearerTokenFile", "bearerTokenSecret", "enableHttp2",
    "filterRunning", "followRedirects", "honorLabels", "honorTimestamps", "interval",
    "metricRelabelings", "noProxy", "oauth2", "params", "path", "port", "proxyConnectHeader",
    "proxyFromEnvironment", "proxyUrl", "relabelings", "scheme", "scrapeTimeout", "targetPort",
    "tlsConfig", "trackTimestampsStaleness",
}

# Grafana built-in variables the dashboard's queries may use, and the values they get
# when the queries are parsed here.
GRAFANA_BUILTINS = {"__range": "1h", "__rate_interval": "2m", "__interval": "1m"}
# Values for the dashboard's own variables when its queries are parsed.
DASHBOARD_VARIABLE_VALUES = {"job": "retentiond", "instance": ".+"}

RULE_CR_HEADER = """\
# GENERATED from deploy/prometheus/alerts.yaml by `scripts/check-deploy --sync-prometheusrule`.
# Do not edit: change alerts.yaml (and its unit tests), then run that; scripts/check-deploy
# fails while the groups here differ from alerts.yaml's.
# The prometheus-operator form of the alerts: the operator loads it into every Prometheus
# whose ruleSelector matches its labels (kube-prometheus-stack: add `release: <release>`).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: retentiond
  labels:
    app.kubernetes.io/name: retentiond
    app.kubernetes.io/component: alerts
spec:
"""


class Failed(Exception):
    """A check found a problem; the message says what and where."""


# ---------------------------------------------------------------------------------------
# helpers


def load_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise Failed(f"{rel(path)}: {e}")


def load_docs(text: str, what: str) -> list[dict]:
    try:
        return [d for d in yaml.safe_load_all(text) if d]
    except yaml.YAMLError as e:
        raise Failed(f"{what} does not parse: {e}")


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def kn(doc: dict) -> str:
    return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"


def run(cmd: list[str], cwd: Path | None = None) -> str:
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise Failed(f"`{' '.join(cmd)}` exited {out.returncode}:\n{out.stdout}{out.stderr}".rstrip())
    return out.stdout


def render(kubectl: str, directory: Path) -> list[dict]:
    return load_docs(run([kubectl, "kustomize", str(directory)]), f"`kubectl kustomize {rel(directory)}`")


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def string_map(value, where: str) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                              for k, v in value.items()):
        raise Failed(f"{where}: must be a map of strings to strings, not {value!r}")


def exported_metrics() -> tuple[set[str], set[str]]:
    """The metric names in src/ (string literals), and those of them that are histograms
    (their series are NAME_bucket, NAME_sum and NAME_count)."""
    names, histograms = set(), set()
    for path in (ROOT / "src").rglob("*.rs"):
        text = path.read_text()
        names.update(re.findall(r'"(retentiond_[a-zA-Z0-9_]+)"', text))
        histograms.update(re.findall(r'histogram!\(\s*"(retentiond_[a-zA-Z0-9_]+)"', text))
    return names, histograms


def check_metric_names(exprs: dict[str, str]) -> None:
    exported, histograms = exported_metrics()
    unknown = []
    for where, expr in exprs.items():
        for name in METRIC.findall(expr):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            if name in exported or (base != name and base in histograms):
                continue
            unknown.append(f"{where}: {name}")
    if unknown:
        raise Failed("metrics that src/ does not export:\n  " + "\n  ".join(sorted(set(unknown))))


def promtool_parse(promtool: str, exprs: dict[str, str]) -> None:
    """Parses each expression with `promtool check rules`, as recording rules."""
    rules = [{"record": f"check:{re.sub(r'[^a-zA-Z0-9_]', '_', k)}", "expr": v} for k, v in exprs.items()]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "exprs.yaml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "check", "rules": rules}]}))
        try:
            run([promtool, "check", "rules", str(path)])
        except Failed as e:
            listing = "\n".join(f"  {r['record']}: {r['expr']}" for r in rules)
            raise Failed(f"{e}\nexpressions:\n{listing}")


# ---------------------------------------------------------------------------------------
# Kubernetes


def validate_schema(docs: list[dict], what: str, version: str, crd_checked: set[str]) -> int:
    """Validates every resource against the strict OpenAPI schemas of Kubernetes `version`.
    The prometheus-operator kinds have no schema there; they get the structural checks."""
    import kubernetes_validate

    errors, count = [], 0
    for doc in docs:
        count += 1
        try:
            got = kubernetes_validate.validate(doc, version, strict=True)
            if got != version:
                errors.append(f"{kn(doc)}: validated against {got}, not {version}")
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(top level)"
            errors.append(f"{kn(doc)}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            check = CRD_CHECKS.get((doc.get("apiVersion"), doc.get("kind")))
            if check is None:
                errors.append(f"{kn(doc)}: {e.message}")
            else:
                try:
                    check(doc)
                    crd_checked.add(doc["kind"])
                except Failed as f:
                    errors.append(f"{kn(doc)}: {f}")
    if errors:
        raise Failed(f"{what}:\n  " + "\n  ".join(errors))
    return count


def check_names_and_labels(docs: list[dict], what: str) -> None:
    errors = []
    for doc in docs:
        meta = doc.get("metadata") or {}
        name = meta.get("name", "")
        if not (isinstance(name, str) and len(name) <= 253 and DNS_SUBDOMAIN.match(name)):
            errors.append(f"{kn(doc)}: metadata.name {name!r} is not a DNS-1123 subdomain")
        for where, labels in [("metadata.labels", meta.get("labels") or {}),
                              ("pod template labels", (pod_template(doc).get("metadata") or {}).get("labels") or {})]:
            for k, v in labels.items():
                if not (isinstance(k, str) and LABEL_NAME.match(k) and len(k.split("/")[-1]) <= 63):
                    errors.append(f"{kn(doc)}: {where}: bad label name {k!r}")
                if not (isinstance(v, str) and len(v) <= 63 and LABEL_VALUE.match(v)):
                    errors.append(f"{kn(doc)}: {where}: bad value {v!r} for label {k}")
    if errors:
        raise Failed(f"{what}:\n  " + "\n  ".join(errors))


def pod_template(doc: dict) -> dict:
    spec = doc.get("spec") or {}
    if doc.get("kind") == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return spec.get("template") or {}
    return {}


# Enumerations the API server enforces but the OpenAPI schemas do not list.
ENUMS = {
    "Service.spec.type": {"ClusterIP", "NodePort", "LoadBalancer", "ExternalName"},
    "port protocol": {"TCP", "UDP", "SCTP"},
    "imagePullPolicy": {"Always", "IfNotPresent", "Never"},
    "restartPolicy": {"Always", "OnFailure", "Never"},
    "CronJob.spec.concurrencyPolicy": {"Allow", "Forbid", "Replace"},
    "Deployment.spec.strategy.type": {"RollingUpdate", "Recreate"},
    "seccompProfile.type": {"RuntimeDefault", "Localhost", "Unconfined"},
}


def check_enums(docs: list[dict], what: str) -> None:
    errors = []

    def want(kind: str, value, where: str) -> None:
        if value is not None and value not in ENUMS[kind]:
            errors.append(f"{where}: {value!r} is not one of {sorted(ENUMS[kind])}")

    for doc in docs:
        spec = doc.get("spec") or {}
        if doc.get("kind") == "Service":
            want("Service.spec.type", spec.get("type"), f"{kn(doc)} spec.type")
            for p in spec.get("ports") or []:
                want("port protocol", p.get("protocol"), f"{kn(doc)} port {p.get('name')}")
        if doc.get("kind") == "CronJob":
            want("CronJob.spec.concurrencyPolicy", spec.get("concurrencyPolicy"), f"{kn(doc)} concurrencyPolicy")
        if doc.get("kind") == "Deployment":
            want("Deployment.spec.strategy.type", (spec.get("strategy") or {}).get("type"), f"{kn(doc)} strategy.type")
        pod = pod_template(doc).get("spec") or {}
        if not pod:
            continue
        want("restartPolicy", pod.get("restartPolicy"), f"{kn(doc)} restartPolicy")
        want("seccompProfile.type", ((pod.get("securityContext") or {}).get("seccompProfile") or {}).get("type"),
             f"{kn(doc)} pod seccompProfile")
        for c in (pod.get("containers") or []) + (pod.get("initContainers") or []):
            where = f"{kn(doc)} container {c.get('name')}"
            want("imagePullPolicy", c.get("imagePullPolicy"), f"{where} imagePullPolicy")
            want("seccompProfile.type", ((c.get("securityContext") or {}).get("seccompProfile") or {}).get("type"),
                 f"{where} seccompProfile")
            for p in c.get("ports") or []:
                want("port protocol", p.get("protocol"), f"{where} port {p.get('name')}")
    if errors:
        raise Failed(f"{what}:\n  " + "\n  ".join(errors))


def check_references(docs: list[dict], what: str) -> None:
    """What the schemas cannot see: the names one resource uses must exist in the others."""
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    configmaps, secrets = by_kind.get("ConfigMap", {}), by_kind.get("Secret", {})
    errors = []
    workloads = [d for d in docs if pod_template(d)]
    for wl in workloads:
        tmpl = pod_template(wl)
        pod_labels = (tmpl.get("metadata") or {}).get("labels") or {}
        if wl["kind"] == "Deployment":
            sel = (wl["spec"].get("selector") or {}).get("matchLabels") or {}
            if not selects(sel, pod_labels):
                errors.append(f"{kn(wl)}: selector {sel} does not match its pod labels {pod_labels}")
        pod = tmpl.get("spec") or {}
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for c in pod.get("containers") or []:
            cname = f"{kn(wl)} container {c.get('name')}"
            ports = {p.get("name") for p in c.get("ports") or [] if p.get("name")}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    errors.append(f"{cname}: {probe} uses port {port!r}, which the container does not name")
            for src in c.get("envFrom") or []:
                for key, pool in (("secretRef", secrets), ("configMapRef", configmaps)):
                    ref = src.get(key)
                    if ref and not ref.get("optional") and ref.get("name") not in pool:
                        errors.append(f"{cname}: envFrom {key} {ref.get('name')!r} is not in {what}")
            for m in c.get("volumeMounts") or []:
                if m.get("name") not in volumes:
                    errors.append(f"{cname}: mounts volume {m.get('name')!r}, which the pod does not have")
        for v in volumes.values():
            cm = v.get("configMap")
            if cm:
                target = configmaps.get(cm.get("name"))
                if target is None:
                    if not cm.get("optional"):
                        errors.append(f"{kn(wl)}: volume {v['name']} uses ConfigMap {cm.get('name')!r}, not in {what}")
                    continue
                for item in cm.get("items") or []:
                    if item.get("key") not in (target.get("data") or {}):
                        errors.append(f"{kn(wl)}: volume {v['name']}: ConfigMap {cm['name']} has no key {item.get('key')!r}")
    for svc in by_kind.get("Service", {}).values():
        sel = svc["spec"].get("selector") or {}
        backends = [w for w in workloads if w["kind"] == "Deployment"
                    and selects(sel, (pod_template(w).get("metadata") or {}).get("labels") or {})]
        if not backends:
            errors.append(f"{kn(svc)}: selector {sel} matches no Deployment's pods")
        for port in svc["spec"].get("ports") or []:
            target = port.get("targetPort", port.get("port"))
            for wl in backends:
                cports = [p for c in (pod_template(wl).get("spec") or {}).get("containers") or []
                          for p in c.get("ports") or []]
                names = {p.get("name") for p in cports}
                numbers = {p.get("containerPort") for p in cports}
                if target not in (names if isinstance(target, str) else numbers):
                    errors.append(f"{kn(svc)}: port {port.get('name')} targets {target!r}, which {kn(wl)} does not expose")
    for sm in by_kind.get("ServiceMonitor", {}).values():
        sel = (sm["spec"].get("selector") or {}).get("matchLabels") or {}
        services = [s for s in by_kind.get("Service", {}).values()
                    if selects(sel, s["metadata"].get("labels") or {})]
        if not services:
            errors.append(f"{kn(sm)}: selector {sel} matches no Service's labels")
        for svc in services:
            port_names = {p.get("name") for p in svc["spec"].get("ports") or []}
            for ep in sm["spec"].get("endpoints") or []:
                if "port" in ep and ep["port"] not in port_names:
                    errors.append(f"{kn(sm)}: endpoint port {ep['port']!r} is not a port name of {kn(svc)}")
            job_label = sm["spec"].get("jobLabel")
            job = (svc["metadata"].get("labels") or {}).get(job_label) if job_label else None
            job = job or svc["metadata"]["name"]
            if job != ALERTS_JOB:
                errors.append(f"{kn(sm)}: scrapes {kn(svc)} as job {job!r}; the alerts select job={ALERTS_JOB!r}")
    if errors:
        raise Failed(f"{what}:\n  " + "\n  ".join(errors))


def check_prometheusrule(doc: dict) -> None:
    """The PrometheusRule CRD's structure: the fields, types and required keys of
    monitoring.coreos.com/v1 (its schema is not among Kubernetes' own)."""
    if set(doc) - {"apiVersion", "kind", "metadata", "spec"}:
        raise Failed(f"unknown top-level keys {sorted(set(doc) - {'apiVersion', 'kind', 'metadata', 'spec'})}")
    spec = doc.get("spec")
    if not isinstance(spec, dict) or set(spec) != {"groups"}:
        raise Failed("spec must hold exactly `groups`")
    groups = spec["groups"]
    if not isinstance(groups, list) or not groups:
        raise Failed("spec.groups must be a non-empty list")
    seen = set()
    for i, g in enumerate(groups):
        where = f"spec.groups[{i}]"
        if not isinstance(g, dict):
            raise Failed(f"{where}: not a map")
        if set(g) - PROMRULE_GROUP_KEYS:
            raise Failed(f"{where}: unknown keys {sorted(set(g) - PROMRULE_GROUP_KEYS)}")
        if not isinstance(g.get("name"), str) or not g["name"]:
            raise Failed(f"{where}.name is required")
        if g["name"] in seen:
            raise Failed(f"{where}: group name {g['name']!r} twice (the list is a map keyed by name)")
        seen.add(g["name"])
        for key in ("interval", "query_offset"):
            if key in g and not (isinstance(g[key], str) and DURATION.match(g[key])):
                raise Failed(f"{where}.{key}: {g[key]!r} is not a duration")
        if "labels" in g:
            string_map(g["labels"], f"{where}.labels")
        if "limit" in g and not isinstance(g["limit"], int):
            raise Failed(f"{where}.limit must be an integer")
        if not isinstance(g.get("rules", []), list):
            raise Failed(f"{where}.rules must be a list")
        for j, r in enumerate(g.get("rules", [])):
            rw = f"{where}.rules[{j}]"
            if not isinstance(r, dict):
                raise Failed(f"{rw}: not a map")
            if set(r) - PROMRULE_RULE_KEYS:
                raise Failed(f"{rw}: unknown keys {sorted(set(r) - PROMRULE_RULE_KEYS)}")
            if not isinstance(r.get("expr"), (str, int)) or r.get("expr") == "":
                raise Failed(f"{rw}.expr is required (a string)")
            if ("alert" in r) == ("record" in r):
                raise Failed(f"{rw}: exactly one of alert and record")
            for key in ("alert", "record"):
                if key in r and not (isinstance(r[key], str) and r[key]):
                    raise Failed(f"{rw}.{key} must be a non-empty string")
            for key in ("for", "keep_firing_for"):
                if key in r and not (isinstance(r[key], str) and DURATION.match(r[key])):
                    raise Failed(f"{rw}.{key}: {r[key]!r} is not a duration")
            for key in ("labels", "annotations"):
                if key in r:
                    string_map(r[key], f"{rw}.{key}")
            if "annotations" in r and "record" in r:
                raise Failed(f"{rw}: annotations are for alerting rules only")


def duration_seconds(text: str) -> float:
    units = {"y": 365 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|y|w|d|h|m|s)", text))


def check_servicemonitor(doc: dict) -> None:
    """The ServiceMonitor CRD's structure (monitoring.coreos.com/v1), for the fields used."""
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise Failed("spec is required")
    if set(spec) - SERVICEMONITOR_SPEC_KEYS:
        raise Failed(f"spec: unknown keys {sorted(set(spec) - SERVICEMONITOR_SPEC_KEYS)}")
    for key in ("endpoints", "selector"):
        if key not in spec:
            raise Failed(f"spec.{key} is required")
    sel = spec["selector"]
    if not isinstance(sel, dict) or set(sel) - {"matchLabels", "matchExpressions"}:
        raise Failed("spec.selector: only matchLabels and matchExpressions")
    if "matchLabels" in sel:
        string_map(sel["matchLabels"], "spec.selector.matchLabels")
    if "jobLabel" in spec and not isinstance(spec["jobLabel"], str):
        raise Failed("spec.jobLabel must be a string")
    if "namespaceSelector" in spec and set(spec["namespaceSelector"]) - {"any", "matchNames"}:
        raise Failed("spec.namespaceSelector: only any and matchNames")
    eps = spec["endpoints"]
    if not isinstance(eps, list) or not eps:
        raise Failed("spec.endpoints must be a non-empty list")
    for i, ep in enumerate(eps):
        where = f"spec.endpoints[{i}]"
        if not isinstance(ep, dict):
            raise Failed(f"{where}: not a map")
        if set(ep) - SERVICEMONITOR_ENDPOINT_KEYS:
            raise Failed(f"{where}: unknown keys {sorted(set(ep) - SERVICEMONITOR_ENDPOINT_KEYS)}")
        if not isinstance(ep.get("port"), str) and "targetPort" not in ep:
            raise Failed(f"{where}: needs port (a Service port name) or targetPort")
        if "path" in ep and not (isinstance(ep["path"], str) and ep["path"].startswith("/")):
            raise Failed(f"{where}.path must start with /")
        if "scheme" in ep and ep["scheme"] not in ("http", "https", "HTTP", "HTTPS"):
            raise Failed(f"{where}.scheme: {ep['scheme']!r} is not http or https")
        for key in ("interval", "scrapeTimeout"):
            if key in ep and not (isinstance(ep[key], str) and DURATION.match(ep[key])):
                raise Failed(f"{where}.{key}: {ep[key]!r} is not a duration")
        if "interval" in ep and "scrapeTimeout" in ep and \
                duration_seconds(ep["scrapeTimeout"]) > duration_seconds(ep["interval"]):
            raise Failed(f"{where}: scrapeTimeout {ep['scrapeTimeout']} is longer than interval {ep['interval']}")


CRD_CHECKS = {
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheusrule,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_servicemonitor,
}


def render_with_component(kubectl: str) -> tuple[list[dict], list[dict]]:
    """The base with the prometheus-operator Component, composed two ways: from an overlay
    of one's own (a temporary one, outside the repository), and by uncommenting the
    `components:` lines of the base's kustomization.yaml (in a temporary copy)."""
    with tempfile.TemporaryDirectory() as tmp:
        overlay = Path(tmp) / "overlay"
        overlay.mkdir()
        (overlay / "kustomization.yaml").write_text(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources:\n  - {os.path.relpath(K8S, overlay)}\n"
            f"components:\n  - {os.path.relpath(OPERATOR, overlay)}\n")
        composed = render(kubectl, overlay)

        copy = Path(tmp) / "kubernetes"
        shutil.copytree(K8S, copy)
        text = (copy / "kustomization.yaml").read_text()
        toggled, n = re.subn(r"(?m)^# components:\n#   - prometheus-operator$",
                             "components:\n  - prometheus-operator", text)
        if n != 1:
            raise Failed("deploy/kubernetes/kustomization.yaml lacks the commented-out lines "
                         "`# components:` / `#   - prometheus-operator` that deploy/README.md documents")
        (copy / "kustomization.yaml").write_text(toggled)
        uncommented = render(kubectl, copy)
    return composed, uncommented


def check_kubernetes(kubectl: str, version: str) -> Iterator[str]:
    """Renders the kustomization with and without the Component, validates the results
    and the CronJob variant."""
    base = render(kubectl, K8S)
    kinds = {d.get("kind") for d in base}
    missing = {"ConfigMap", "Deployment", "Service"} - kinds
    if missing:
        raise Failed(f"deploy/kubernetes renders no {sorted(missing)}")
    operator_kinds = [kn(d) for d in base if str(d.get("apiVersion", "")).startswith("monitoring.coreos.com/")]
    if operator_kinds:
        raise Failed(f"deploy/kubernetes renders {operator_kinds}: `kubectl apply -k` would fail "
                     "on a cluster without prometheus-operator; keep them in the prometheus-operator Component")
    yield (f"`kubectl kustomize deploy/kubernetes`: {', '.join(kn(d) for d in base)}; "
                "no prometheus-operator kinds")

    composed, uncommented = render_with_component(kubectl)
    cron = []
    for name in CRONJOB_VARIANT:
        cron += load_docs((K8S / name).read_text(), rel(K8S / name))

    base_by = {kn(d): d for d in base}
    for docs, how in [(composed, "an overlay with components: [prometheus-operator]"),
                      (uncommented, "kustomization.yaml with its `components:` uncommented")]:
        by = {kn(d): d for d in docs}
        extra = sorted(set(by) - set(base_by))
        changed = sorted(k for k in base_by if by.get(k) != base_by[k])
        if extra != ["PrometheusRule/retentiond", "ServiceMonitor/retentiond"] or changed:
            raise Failed(f"{how} should render the base unchanged plus PrometheusRule/retentiond and "
                         f"ServiceMonitor/retentiond; it adds {extra} and changes {changed}")
        for k in extra:
            if (by[k]["metadata"].get("labels") or {}).get("app.kubernetes.io/part-of") != "retentiond":
                raise Failed(f"{how}: {k} lacks the label app.kubernetes.io/part-of=retentiond")
    if sorted(map(kn, composed)) != sorted(map(kn, uncommented)) or \
            any(d != {kn(u): u for u in uncommented}[kn(d)] for d in composed):
        raise Failed("the Component renders differently from an overlay and from the base's own `components:`")
    yield ("base + prometheus-operator Component (from an overlay, and with the base's `components:` "
                "uncommented): the base unchanged + ServiceMonitor/retentiond + PrometheusRule/retentiond")

    crd_checked: set[str] = set()
    n = validate_schema(base, "deploy/kubernetes (rendered)", version, crd_checked)
    n += validate_schema([d for d in composed if kn(d) not in base_by],
                         "the prometheus-operator Component (rendered)", version, crd_checked)
    n += validate_schema(cron, "the CronJob variant (" + " ".join(CRONJOB_VARIANT) + ")", version, crd_checked)
    if crd_checked != {"PrometheusRule", "ServiceMonitor"}:
        raise Failed(f"the CRD structure checks ran on {sorted(crd_checked)} only")
    yield (f"{n} resources valid against the strict OpenAPI schemas of Kubernetes {version} "
                "(PrometheusRule, ServiceMonitor: structure checks of their CRDs instead)")

    for docs, what in [(base, "deploy/kubernetes"), (composed, "deploy/kubernetes + prometheus-operator"),
                       (cron, "the CronJob variant")]:
        check_names_and_labels(docs, what)
        check_enums(docs, what)
        check_references(docs, what)
    yield ("names, labels and enumerated values valid; selectors, ports, ConfigMap/Secret/volume references resolve; "
                f"the ServiceMonitor scrapes the Service as job {ALERTS_JOB!r}")


# ---------------------------------------------------------------------------------------
# Prometheus


def sync_prometheusrule() -> None:
    text = ALERTS.read_text()
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("groups:")), None)
    if start is None:
        raise Failed(f"{rel(ALERTS)} has no top-level `groups:`")
    body = "\n".join(("  " + line) if line.strip() else "" for line in lines[start:])
    RULE_CR.write_text(RULE_CR_HEADER + body + "\n")


def check_prometheusrule_matches_alerts(promtool: str) -> Iterator[str]:
    alerts = load_yaml(ALERTS)
    if not isinstance(alerts, dict) or set(alerts) != {"groups"}:
        raise Failed(f"{rel(ALERTS)} must hold exactly `groups`")
    docs = load_docs(RULE_CR.read_text(), rel(RULE_CR))
    if len(docs) != 1 or docs[0].get("kind") != "PrometheusRule":
        raise Failed(f"{rel(RULE_CR)} must hold one PrometheusRule")
    cr = docs[0]
    check_prometheusrule(cr)
    if cr["spec"]["groups"] != alerts["groups"]:
        diff = difflib.unified_diff(
            yaml.safe_dump(alerts["groups"], sort_keys=False, width=200).splitlines(),
            yaml.safe_dump(cr["spec"]["groups"], sort_keys=False, width=200).splitlines(),
            rel(ALERTS), rel(RULE_CR), lineterm="")
        raise Failed(f"the PrometheusRule's groups differ from alerts.yaml "
                     f"(run `scripts/check-deploy --sync-prometheusrule`):\n" + "\n".join(diff))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prometheusrule-groups.yaml"
        path.write_text(yaml.safe_dump({"groups": cr["spec"]["groups"]}, sort_keys=False))
        run([promtool, "check", "rules", str(path)])
    yield f"{rel(RULE_CR)}: spec.groups identical to alerts.yaml; loads in `promtool check rules`"


def check_alerts(promtool: str) -> Iterator[str]:
    run([promtool, "check", "rules", ALERTS.name], cwd=PROMETHEUS)
    run([promtool, "test", "rules", ALERTS_TEST.name], cwd=PROMETHEUS)
    yield ("promtool check rules alerts.yaml; promtool test rules alerts_test.yaml")

    alerts = load_yaml(ALERTS)
    rules = [r for g in alerts["groups"] for r in g.get("rules") or []]
    names = [r["alert"] for r in rules if "alert" in r]
    missing = {topic: a for topic, want in REQUIRED_ALERTS.items() for a in want if a not in names}
    if missing:
        raise Failed(f"alerts.yaml lacks alerts issue #17 asks for: {missing}")
    tests = load_yaml(ALERTS_TEST)
    firing, tested = set(), set()
    for t in tests.get("tests") or []:
        for case in t.get("alert_rule_test") or []:
            tested.add(case.get("alertname"))
            if case.get("exp_alerts"):
                firing.add(case.get("alertname"))
    unknown = tested - set(names)
    if unknown:
        raise Failed(f"alerts_test.yaml tests alerts that alerts.yaml does not have: {sorted(unknown)}")
    untested = [a for a in names if a not in firing]
    if untested:
        raise Failed(f"alerts without a unit test that makes them fire: {untested}")
    yield (f"{len(names)} alerts, each with a firing unit test; issue #17's list covered "
                f"({', '.join(sorted(REQUIRED_ALERTS))})")

    check_metric_names({f"alerts.yaml {r.get('alert') or r.get('record')}": str(r["expr"]) for r in rules})
    yield ("every metric the alerts name is exported by src/")


# ---------------------------------------------------------------------------------------
# Grafana


def panels_of(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard.get("panels") or []:
        out.append(p)
        out.extend(p.get("panels") or [])  # panels of a collapsed row
    return out


def synthetic_series() -> list[dict]:
    """Every series the daemon exports, as two replicas of one job would show it over three
    hours (each replica with its own counters; a rule that never succeeded; a store that
    went down; a config replaced by a reload; failures in the last hour)."""
    series = []
    for instance in ("a:9187", "b:9187"):
        common = f'job="retentiond", instance="{instance}"'

        def add(name: str, labels: str, values: str) -> None:
            series.append({"series": f"{name}{{{common}{', ' + labels if labels else ''}}}", "values": values})
        add("up", "", "1x180")
        add("retentiond_build_info", 'version="0.1.0"', "1x180")
        add("retentiond_config_info", 'sha256="new"', "1x180")
        add("retentiond_config_info", 'sha256="old"', "0x180")
        add("retentiond_store_up", 'store="app"', "1x180")
        add("retentiond_store_up", 'store="assets"', "1x90 0x90")
        add("retentiond_clock_skew_seconds", 'store="app"', "0.2x180")
        add("retentiond_anchor_failures_total", 'store="anchors"', "0x150 1x30")
        add("retentiond_runs_total", 'mode="enforce", status="succeeded"', "0+1x180")
        add("retentiond_runs_total", 'mode="dry-run", status="succeeded"', "0x180")
        for le, values in (("1", "0+1x180"), ("10", "0+2x180"), ("+Inf", "0+2x180")):
            add("retentiond_run_duration_seconds_bucket", f'mode="enforce", le="{le}"', values)
        add("retentiond_run_duration_seconds_sum", 'mode="enforce"', "0+5x180")
        add("retentiond_run_duration_seconds_count", 'mode="enforce"', "0+2x180")
        for rule, category, action, last_success in (
                ("request-logs", "request_logs", "delete", "0+60x180"),
                ("usage-identifiers", "usage_metadata", "anonymise", "0+60x180"),
                ("orphan-assets", "generated_assets", "delete", "0x180")):
            info = f'rule="{rule}", category="{category}", store="app", action="{action}"'
            add("retentiond_rule_info", info + ', schedule="0 0 3 * * *"', "1x180")
            add("retentiond_rule_info", info + ', schedule="0 0 4 * * *"', "0x180")
            add("retentiond_records_removed_total", f'rule="{rule}", action="{action}"', "0+10x180")
            add("retentiond_rule_failures_total", f'rule="{rule}"', "0x150 1x30")
            add("retentiond_rule_never_succeeded", f'rule="{rule}"', "1x180" if last_success == "0x180" else "0x180")
            add("retentiond_rule_last_success_timestamp_seconds", f'rule="{rule}", category="{category}"', last_success)
            add("retentiond_rule_next_run_timestamp_seconds", f'rule="{rule}"', "20000x180")
            add("retentiond_overdue_records", f'rule="{rule}"', "3x180")
            add("retentiond_oldest_overdue_age_seconds", f'rule="{rule}"', "100x180")
            add("retentiond_conformance_check_ok", f'rule="{rule}"', "1x180")
            add("retentiond_conformance_failures_total", f'rule="{rule}"', "0x180")
    return series


def check_queries_return_data(promtool: str, exprs: dict[str, str]) -> None:
    """Evaluates every query (as a recording rule, in `promtool test rules`) on the
    synthetic series of two replicas: each must return something, and none may fail (a
    join that matches many-to-many, say)."""
    names = list(exprs)
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": exprs[n]} for i, n in enumerate(names)]}]}
    tests = {"rule_files": ["queries.yaml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": synthetic_series(),
        "promql_expr_test": [{"expr": f"absent(dashboard:query{i})", "eval_time": "170m", "exp_samples": []}
                             for i in range(len(names))]}]}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "queries.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
        (Path(tmp) / "test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
        out = subprocess.run([promtool, "test", "rules", "test.yaml"], cwd=tmp, capture_output=True, text=True)
    if out.returncode != 0:
        empty = sorted({int(i) for i in re.findall(r"dashboard:query(\d+)\b", out.stdout + out.stderr)})
        listing = "\n  ".join(f"{names[i]}: {exprs[names[i]]}" for i in empty)
        raise Failed(f"dashboard queries that return nothing (or fail) on the synthetic series:\n  {listing}\n"
                     f"{(out.stdout + out.stderr)[-3000:]}")


def check_dashboard(promtool: str) -> Iterator[str]:
    try:
        d = json.loads(DASHBOARD.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise Failed(f"{rel(DASHBOARD)}: {e}")
    errors = []
    for key, kind in (("title", str), ("uid", str), ("schemaVersion", int), ("panels", list),
                      ("templating", dict), ("time", dict)):
        if not isinstance(d.get(key), kind):
            errors.append(f"top-level {key} missing or not a {kind.__name__}")
    if errors:
        raise Failed("\n  ".join(errors))
    if d.get("id") is not None:
        errors.append("id must be null so that importing creates the dashboard")
    if not re.match(r"^[a-zA-Z0-9_-]{1,40}$", d["uid"]):
        errors.append(f"uid {d['uid']!r}: at most 40 of [a-zA-Z0-9_-]")

    variables = {v.get("name"): v for v in d["templating"].get("list") or []}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        errors.append("templating needs a variable `datasource` of type datasource, query prometheus")
    ds_refs = ("${datasource}", "$datasource")
    for name, v in variables.items():
        if v.get("type") == "query" and (v.get("datasource") or {}).get("uid") not in ds_refs:
            errors.append(f"variable {name}: datasource must be ${{datasource}}")
    if set(DASHBOARD_VARIABLE_VALUES) - set(variables):
        errors.append(f"variables {sorted(set(DASHBOARD_VARIABLE_VALUES) - set(variables))} are not defined")

    # No datasource uid other than the variable anywhere (a copied one would not exist elsewhere).
    def walk(node, path="$"):
        if isinstance(node, dict):
            dsn = node.get("datasource")
            if isinstance(dsn, dict) and dsn.get("uid") not in ds_refs + ("-- Grafana --", "grafana"):
                errors.append(f"{path}.datasource: uid {dsn.get('uid')!r} is not ${{datasource}}")
            elif isinstance(dsn, str) and dsn not in ds_refs:
                errors.append(f"{path}.datasource: {dsn!r} is not ${{datasource}}")
            for k, v in node.items():
                walk(v, f"{path}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]")
    walk(d["panels"], "panels")

    ids, boxes, exprs = set(), [], {}
    known_types = {"row", "stat", "timeseries", "table", "bargauge", "state-timeline", "gauge", "text"}
    for p in panels_of(d):
        pid = p.get("id")
        where = f"panel {pid} ({p.get('title')!r})"
        if not isinstance(pid, int) or pid in ids:
            errors.append(f"{where}: id missing or not unique")
        ids.add(pid)
        if p.get("type") not in known_types:
            errors.append(f"{where}: type {p.get('type')!r}")
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in "xywh") or g["w"] <= 0 or g["h"] <= 0 \
                or g["x"] < 0 or g["x"] + g["w"] > 24:
            errors.append(f"{where}: gridPos {g} is not inside the 24 columns")
        else:
            for other, og in boxes:
                if g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"] and \
                        g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"]:
                    errors.append(f"{where} overlaps {other}")
            boxes.append((where, g))
        if p.get("type") in ("row", "text"):
            continue
        if not p.get("title"):
            errors.append(f"{where}: no title")
        if (p.get("datasource") or {}).get("uid") not in ds_refs:
            errors.append(f"{where}: datasource must be ${{datasource}}")
        targets = p.get("targets") or []
        if not targets:
            errors.append(f"{where}: no queries")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or None in refs:
            errors.append(f"{where}: refIds {refs} missing or not unique")
        for t in targets:
            expr = t.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                errors.append(f"{where} query {t.get('refId')}: no expr")
                continue
            exprs[f"panel {pid} {t.get('refId')}"] = expr
    if errors:
        raise Failed(f"{rel(DASHBOARD)}:\n  " + "\n  ".join(errors))

    values = {**GRAFANA_BUILTINS, **DASHBOARD_VARIABLE_VALUES}
    concrete = {}
    for where, expr in exprs.items():
        def subst(m):
            name = m.group(1) or m.group(2)
            if name not in values:
                errors.append(f"{where}: unknown variable ${name}")
            return values.get(name, "")
        concrete[where] = re.sub(r"\$\{(\w+)\}|\$(\w+)", subst, expr)
    if errors:
        raise Failed(f"{rel(DASHBOARD)}:\n  " + "\n  ".join(errors))
    yield f"{rel(DASHBOARD)}: {len(ids)} panels, ids unique, no overlaps, every query on ${{datasource}}"

    promtool_parse(promtool, concrete)
    check_queries_return_data(promtool, concrete)
    yield (f"{len(concrete)} dashboard queries parse (promtool check rules, variables substituted) and "
                "return data on synthetic series of two replicas (promtool test rules)")

    used = " ".join(exprs.values())
    absent = {topic: [m for m in metrics if not re.search(rf"\b{m}\b", used)]
              for topic, metrics in DASHBOARD_TOPICS.items()}
    absent = {k: v for k, v in absent.items() if v}
    if absent:
        raise Failed(f"the dashboard does not show: {absent}")
    check_metric_names(exprs)
    yield (f"the dashboard shows {', '.join(DASHBOARD_TOPICS)}; every metric it names is exported by src/")


# ---------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kubectl", help="kubectl whose `kustomize` renders the kustomizations")
    ap.add_argument("--promtool", default="promtool")
    ap.add_argument("--kube-version", help="Kubernetes version whose OpenAPI schemas to validate against")
    ap.add_argument("--sync-prometheusrule", action="store_true",
                    help=f"rewrite {rel(RULE_CR)} from {rel(ALERTS)} and exit")
    args = ap.parse_args()
    if args.sync_prometheusrule:
        sync_prometheusrule()
        print(f"wrote {rel(RULE_CR)} from {rel(ALERTS)}")
        return 0
    if not args.kubectl or not args.kube_version:
        ap.error("--kubectl and --kube-version are required")

    checks = [
        ("kubernetes", lambda: check_kubernetes(args.kubectl, args.kube_version)),
        ("alerts", lambda: check_alerts(args.promtool)),
        ("prometheusrule", lambda: check_prometheusrule_matches_alerts(args.promtool)),
        ("dashboard", lambda: check_dashboard(args.promtool)),
    ]
    failed = 0
    for name, check in checks:
        try:
            for line in check():
                print(f"ok    {name}: {line}")
        except Failed as e:
            failed += 1
            print(f"FAIL  {name}: {e}")
        except Exception:  # a bug here, or input shaped like nothing expected: still loud
            failed += 1
            print(f"FAIL  {name}: {traceback.format_exc()}")
    if failed:
        print(f"check-deploy: {failed} of {len(checks)} check groups FAILED")
        return 1
    print(f"check-deploy: all {len(checks)} check groups passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
