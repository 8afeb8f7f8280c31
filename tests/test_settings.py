from pathlib import Path

from streamdetect.settings import Settings


def test_nested_environment_variables(monkeypatch):
    monkeypatch.setenv("STREAMDETECT_KAFKA__BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("STREAMDETECT_TOPICS__PARTITIONS", "12")
    monkeypatch.setenv("STREAMDETECT_SCORING__TARGET_FALSE_ALARM_RATE", "0.002")
    monkeypatch.setenv("STREAMDETECT_DATA__MIRROR_DIR", "/mirror")
    monkeypatch.setenv("STREAMDETECT_KAFKA__SASL_PASSWORD", "hunter2")
    settings = Settings()
    assert settings.kafka.bootstrap == "kafka-1:9092,kafka-2:9092"
    assert settings.topics.partitions == 12
    assert settings.scoring.target_false_alarm_rate == 0.002
    assert settings.data.mirror_dir == Path("/mirror")
    assert "hunter2" not in repr(settings) and settings.kafka.sasl_password.get_secret_value() == "hunter2"


def test_defaults_need_no_environment(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("STREAMDETECT_"):
            monkeypatch.delenv(name)
    settings = Settings()
    assert settings.kafka.bootstrap is None  # -> embedded development broker
    assert settings.topics.alerts == "alerts" and settings.topics.deadletter == "deadletter"
    assert 0 < settings.scoring.target_false_alarm_rate < 1
