"""Kubernetes manifests validate against the operators' CRD schemas (no cluster needed)."""

from pathlib import Path

import jsonschema
import pytest
import yaml

K8S = Path(__file__).resolve().parent.parent / "k8s"
CRDS = Path(__file__).resolve().parent.parent.parent / "shared" / "k8s-crds"


def crd_schema(path: Path, version: str) -> dict:
    crd = yaml.safe_load(path.read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]


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
