from pathlib import Path

import pytest

from emostream.settings import SettingsError, load_settings


def test_defaults_point_at_a_local_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EMOSTREAM_CONFIG", raising=False)
    settings = load_settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.kafka.media_topic == "emostream.media"
    assert settings.ingest.segment_seconds == 2.0


def test_environment_overrides_yaml_and_arguments_override_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "emostream.yaml"
    config.write_text("kafka:\n  partitions: 5\n  group_id: from-file\ningest:\n  segment_seconds: 3\n")
    monkeypatch.setenv("EMOSTREAM_KAFKA__PARTITIONS", "7")
    settings = load_settings(config, ingest={"segment_seconds": 4})
    assert settings.kafka.partitions == 7  # environment beats the file
    assert settings.kafka.group_id == "from-file"  # the file beats the defaults
    assert settings.ingest.segment_seconds == 4.0  # arguments beat both


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("kafka:\n  bootstrap_servers: kafka-0:9093,kafka-1:9093\n")
    monkeypatch.setenv("EMOSTREAM_CONFIG", str(config))
    options = load_settings().kafka.client_options()
    assert options["bootstrap_servers"] == ["kafka-0:9093", "kafka-1:9093"]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("EMOSTREAM_KAFKA__PARTITIONS", "-1", "kafka.partitions = '-1': Input should be greater than or equal to 1"),
        ("EMOSTREAM_KAFKA__SECURITY_PROTOCOL", "TLS", "kafka.security_protocol = 'TLS': Input should be 'PLAINTEXT', 'SSL'"),
        ("EMOSTREAM_KAFKA__BOOTSTRAP_SERVERS", "nohost", "kafka.bootstrap_servers = 'nohost': Value error, expected host:port"),
        ("EMOSTREAM_INGEST__SEGMENT_SECONDS", "abc", "ingest.segment_seconds = 'abc': Input should be a valid number"),
    ],
)
def test_wrong_value_names_field_value_and_what_is_allowed(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert expected in str(error.value)


def test_unknown_yaml_field_and_bad_yaml_are_named(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("kafka:\n  partitons: 3\n")
    with pytest.raises(SettingsError, match="kafka.partitons = 3: Extra inputs are not permitted"):
        load_settings(config)
    config.write_text("kafka: [\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(config)
    with pytest.raises(SettingsError, match="No such file"):
        load_settings(tmp_path / "missing.yaml")


def test_sasl_and_tls_options_pass_through_to_kafka_python() -> None:
    kafka = load_settings(kafka={"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                                 "sasl_plain_username": "u", "sasl_plain_password": "p", "ssl_cafile": "/ca.pem"}).kafka
    options = kafka.client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "u" and options["ssl_cafile"] == "/ca.pem"
