"""KubeRay's admission rules that a CRD schema cannot express, ported to Python.

The KubeRay operator (1.7.0, the version k8s/ is pinned to) checks every RayCluster, RayJob and
RayService with `ray-operator/controllers/ray/utils/validation.go` before it builds anything: a
resource that breaks a rule is marked invalid and no pod starts, although `kubectl apply`
succeeded. These are the rules that can apply to our manifests (feature-gated fields we do not
use, RayCronJob and the history server are left out). Each function returns the messages
KubeRay would give, empty when it would admit the resource.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

MAX_RAY_CLUSTER_NAME = 53  # KubeRay's MaxRayClusterNameLength
MAX_RAY_JOB_OR_SERVICE_NAME = MAX_RAY_CLUSTER_NAME - 6  # KubeRay appends 6 characters for the cluster name
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
MIN_RAY_FOR_TOKEN_AUTH = (2, 52, 0)
MIN_RAY_FOR_K8S_TOKEN_AUTH = (2, 55, 0)
MIN_RAY_FOR_PRIORITY = (2, 56, 0)
RAY_START_RESOURCES = ("num-cpus", "num-gpus", "memory", "resources")
UPGRADE_TYPES = {"NewClusterWithIncrementalUpgrade", "NewCluster", "None"}


def ray_version(text: str) -> tuple[int, ...] | None:
    match = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(part or 0) for part in match.groups()) if match else None


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in container.get("env", [])}


def qualified_name_errors(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    return not (len(name) <= 63 and LABEL_NAME.fullmatch(name)) or (bool(prefix) and len(prefix) > 253)


def name_errors(kind: str, name: str) -> list[str]:
    limit = MAX_RAY_CLUSTER_NAME if kind == "RayCluster" else MAX_RAY_JOB_OR_SERVICE_NAME
    errors = []
    if len(name) > limit:
        errors.append(f"{kind} name should be no more than {limit} characters")
    if not (len(name) <= 63 and DNS1035_LABEL.fullmatch(name)):
        errors.append(f"{kind} name should be a valid DNS1035 label")
    return errors


def group_errors(name: str, group: dict[str, Any]) -> list[str]:
    """validateRayGroupResources and validateRayGroupLabels."""
    errors = []
    params = group.get("rayStartParams", {})
    if any(params.get(key) for key in RAY_START_RESOURCES) and group.get("resources"):
        errors.append(f"resource fields should not be set in both rayStartParams and Resources for {name} group")
    if "labels" in params:
        errors.append(f"rayStartParams['labels'] is not supported for {name} group; use the top-level Labels field")
    for key, value in group.get("labels", {}).items():
        if qualified_name_errors(key) or not (len(value) <= 63 and LABEL_VALUE.fullmatch(value)):
            errors.append(f"invalid label {key}={value!r} for {name} group")
    if not group["template"]["spec"].get("containers"):
        errors.append(f"{name} group should have at least one container")
    return errors


def autoscaling_v2(spec: dict[str, Any]) -> bool:
    """IsAutoscalingV2Enabled, or the head's RAY_enable_autoscaler_v2 env var (the pre-1.4 switch)."""
    if spec.get("autoscalerOptions", {}).get("version") == "v2":
        return True
    head_env = env_of(spec["headGroupSpec"]["template"]["spec"]["containers"][0])
    return head_env.get("RAY_enable_autoscaler_v2", {}).get("value") in ("1", "true")


def cluster_spec_errors(spec: dict[str, Any], annotations: dict[str, str]) -> list[str]:
    """ValidateRayClusterSpec."""
    head = spec["headGroupSpec"]
    if not head["template"]["spec"].get("containers"):
        return ["headGroupSpec should have at least one container"]
    head_container = head["template"]["spec"]["containers"][0]
    head_env = env_of(head_container)
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    autoscaler = spec.get("autoscalerOptions", {})
    version = ray_version(spec.get("rayVersion", ""))
    errors = group_errors("Head", head)
    for group in spec.get("workerGroupSpecs", []):
        name = group["groupName"]
        errors += group_errors(name, group)
        low, high = group.get("minReplicas"), group.get("maxReplicas")
        if not autoscaling and (low is None or high is None):
            errors.append(f"worker group {name} must set both minReplicas and maxReplicas when autoscaling is disabled")
        if low is not None and high is not None and low > high:
            errors.append(f"worker group {name} has minReplicas {low} greater than maxReplicas {high}")
        if (low is not None and low < 0) or (high is not None and high < 0):
            errors.append(f"worker group {name} has negative minReplicas or maxReplicas")
        idle = group.get("idleTimeoutSeconds")
        if idle is not None and idle < 0:
            errors.append(f"worker group {name}: idleTimeoutSeconds must be non-negative, got {idle}")
        elif idle is not None and not autoscaling_v2(spec):
            errors.append(f"worker group {name}: idleTimeoutSeconds is set, but autoscaler v2 is not enabled. "
                          "Please set .spec.autoscalerOptions.version to 'v2'")
        priority = group.get("priority")
        if priority:
            if version is None or version < MIN_RAY_FOR_PRIORITY:
                errors.append(f"worker group {name}: priority is set, but minimum Ray version is 2.56.0")
            elif not autoscaling_v2(spec):
                errors.append(f"worker group {name}: priority is set to {priority}, but autoscaler v2 is not enabled")
        if group.get("suspend") and autoscaling:
            errors.append(f"worker group {name} cannot be suspended with Autoscaler enabled")

    fault_tolerance = spec.get("gcsFaultToleranceOptions")
    if annotations.get("ray.io/ft-enabled") and fault_tolerance is not None:
        errors.append("ray.io/ft-enabled annotation and GcsFaultToleranceOptions are both set")
    if fault_tolerance is None and annotations.get("ray.io/ft-enabled") != "true" and "RAY_REDIS_ADDRESS" in head_env:
        errors.append("RAY_REDIS_ADDRESS is set which implicitly enables GCS fault tolerance, "
                      "but GcsFaultToleranceOptions is not set")
    if fault_tolerance is not None:
        if head.get("rayStartParams", {}).get("redis-password"):
            errors.append("cannot set `redis-password` in rayStartParams when GcsFaultToleranceOptions is enabled")
        for var in ("REDIS_PASSWORD", "RAY_REDIS_ADDRESS"):
            if var in head_env:
                errors.append(f"cannot set `{var}` env var in head Pod when GcsFaultToleranceOptions is enabled")
        if annotations.get("ray.io/external-storage-namespace"):
            errors.append("cannot set `ray.io/external-storage-namespace` annotation when GcsFaultToleranceOptions is enabled")
        if fault_tolerance.get("backend", "redis") == "redis" and "storage" in fault_tolerance:
            errors.append("cannot set GcsFaultToleranceOptions.Storage when backend is 'redis'")
    if head.get("rayStartParams", {}).get("redis-username") or "REDIS_USERNAME" in head_env:
        errors.append("cannot set redis username in rayStartParams or environment variables")

    if not autoscaling and head_env.get("RAY_enable_autoscaler_v2", {}).get("value") in ("1", "true"):
        errors.append("RAY_enable_autoscaler_v2 cannot be set when enableInTreeAutoscaling is false")
    if autoscaling:
        if "version" in autoscaler and "RAY_enable_autoscaler_v2" in head_env:
            errors.append("both .spec.autoscalerOptions.version and head Pod env var RAY_enable_autoscaler_v2 are set")
        if autoscaling_v2(spec):
            for name, group in [("head Pod", head)] + [(f"worker group {g['groupName']}", g) for g in spec.get("workerGroupSpecs", [])]:
                if group["template"]["spec"].get("restartPolicy", "Never") != "Never":
                    errors.append(f"restartPolicy for {name} should be Never or unset when using autoscaler V2")
    if autoscaler.get("idleTimeoutSeconds", 0) < 0:
        errors.append("autoscalerOptions.idleTimeoutSeconds must be non-negative")
    if "KUBERAY_GEN_AUTOSCALER_START_CMD" in env_of(autoscaler):
        errors.append("autoscalerOptions.env must not contain KUBERAY_GEN_AUTOSCALER_START_CMD")

    auth = spec.get("authOptions", {})
    if auth.get("mode") == "token":
        if version is None or version < MIN_RAY_FOR_TOKEN_AUTH:
            errors.append(f"authOptions.mode is 'token' but minimum Ray version is 2.52.0, got {spec.get('rayVersion')!r}")
        elif auth.get("enableK8sTokenAuth"):
            if version < MIN_RAY_FOR_K8S_TOKEN_AUTH:
                errors.append("authOptions.enableK8sTokenAuth is enabled but minimum Ray version is 2.55.0")
            if auth.get("secretName"):
                errors.append("authOptions.enableK8sTokenAuth is enabled and authOptions.secretName is also set")
    elif auth.get("enableK8sTokenAuth"):
        errors.append("authOptions.enableK8sTokenAuth is enabled but authOptions.mode not set to 'token'")
    # Both are behind feature gates that a default KubeRay install leaves off.
    if "networkPolicy" in spec:
        errors.append("spec.networkPolicy requires the RayClusterNetworkPolicy feature gate")
    if "tlsOptions" in spec:
        errors.append("spec.tlsOptions requires the RayClusterMTLS feature gate")
    return errors


def ray_job_errors(job: dict[str, Any]) -> list[str]:
    """ValidateRayJobMetadata and ValidateRayJobSpec."""
    spec = job["spec"]
    errors = name_errors("RayJob", job["metadata"]["name"])
    mode = spec.get("submissionMode", "K8sJobMode")
    backoff = spec.get("backoffLimit")
    shutdown = spec.get("shutdownAfterJobFinishes", False)
    if spec.get("suspend") and not shutdown:
        errors.append("a RayJob with shutdownAfterJobFinishes set to false is not allowed to be suspended")
    if spec.get("ttlSecondsAfterFinished", 0) < 0:
        errors.append("TTLSecondsAfterFinished must be a non-negative integer")
    if not shutdown and spec.get("ttlSecondsAfterFinished", 0) > 0:
        errors.append("a RayJob with shutdownAfterJobFinishes set to false cannot have TTLSecondsAfterFinished")
    if "deletionStrategy" in spec:
        errors.append("deletionStrategy is not checked here: port validateDeletionConfiguration before using it")
    selector = spec.get("clusterSelector")
    if not selector and "rayClusterSpec" not in spec:
        errors.append("one of RayClusterSpec or ClusterSelector must be set")
    if selector:
        if not selector.get("ray.io/cluster"):
            errors.append("cluster name in ClusterSelector should not be empty")
        if spec.get("suspend"):
            errors.append("the ClusterSelector mode doesn't support the suspend operation")
        if mode == "SidecarMode":
            errors.append("ClusterSelector is not supported in SidecarMode")
        if backoff is not None and backoff > 0:
            errors.append("BackoffLimit is incompatible with ClusterSelector mode")
    if mode == "InteractiveMode" and backoff is not None and backoff > 0:
        errors.append("BackoffLimit is incompatible with InteractiveMode")
    if mode == "SidecarMode":
        if "submitterPodTemplate" in spec or "submitterConfig" in spec:
            errors.append("SidecarMode doesn't support SubmitterPodTemplate or SubmitterConfig")
        head_restart = spec.get("rayClusterSpec", {}).get("headGroupSpec", {}).get("template", {}).get("spec", {}).get("restartPolicy")
        if head_restart not in (None, "Never"):
            errors.append("restartPolicy for head Pod should be Never or unset when using SidecarMode")
    if "rayClusterSpec" in spec:
        if spec["rayClusterSpec"].get("authOptions", {}).get("enableK8sTokenAuth"):
            errors.append("K8s token auth mode is currently not supported for RayJob")
        errors += cluster_spec_errors(spec["rayClusterSpec"], job["metadata"].get("annotations", {}))
    try:
        runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "{}")
        if not isinstance(runtime_env, dict):
            errors.append("runtimeEnvYAML is not a YAML mapping")
    except yaml.YAMLError as error:
        errors.append(f"runtimeEnvYAML is not valid YAML: {error}")
    for field in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
        if field in spec and spec[field] <= 0:
            errors.append(f"{field} must be a positive integer")
    if backoff is not None and backoff < 0:
        errors.append("backoffLimit must be a positive integer")
    return errors


def ray_service_errors(service: dict[str, Any]) -> list[str]:
    """ValidateRayServiceMetadata and ValidateRayServiceSpec."""
    spec = service["spec"]
    cluster = spec["rayClusterConfig"]
    errors = name_errors("RayService", service["metadata"]["name"])
    if cluster.get("authOptions", {}).get("enableK8sTokenAuth"):
        errors.append("K8s token auth mode is currently not supported for RayService")
    errors += cluster_spec_errors(cluster, service["metadata"].get("annotations", {}))
    if cluster["headGroupSpec"].get("headService", {}).get("metadata", {}).get("name"):
        errors.append("spec.rayClusterConfig.headGroupSpec.headService.metadata.name should not be set")
    upgrade = spec.get("upgradeStrategy", {}).get("type")
    if upgrade is not None and upgrade not in UPGRADE_TYPES:
        errors.append(f"Spec.UpgradeStrategy.Type value {upgrade} is invalid, valid options are {sorted(UPGRADE_TYPES)}")
    if spec.get("rayClusterDeletionDelaySeconds", 0) < 0:
        errors.append("Spec.RayClusterDeletionDelaySeconds should be a non-negative integer")
    if upgrade == "NewClusterWithIncrementalUpgrade":
        errors.append("NewClusterWithIncrementalUpgrade is not checked here: port ValidateClusterUpgradeOptions first")
    return errors


def ray_cluster_errors(cluster: dict[str, Any]) -> list[str]:
    """ValidateRayClusterMetadata, ValidateRayClusterUpgradeOptions and ValidateRayClusterSpec."""
    errors = name_errors("RayCluster", cluster["metadata"]["name"])
    upgrade = cluster["spec"].get("upgradeStrategy", {}).get("type")
    if upgrade is not None and upgrade not in ("Recreate", "None"):
        errors.append(f"Spec.UpgradeStrategy.Type value {upgrade} is invalid, valid options are Recreate or None")
    return errors + cluster_spec_errors(cluster["spec"], cluster["metadata"].get("annotations", {}))


def admission_errors(obj: dict[str, Any]) -> list[str]:
    """What the KubeRay operator would reject in a KubeRay resource (empty for anything else)."""
    check = {"RayCluster": ray_cluster_errors, "RayJob": ray_job_errors, "RayService": ray_service_errors}.get(obj["kind"])
    return check(obj) if check and obj["apiVersion"] == "ray.io/v1" else []
