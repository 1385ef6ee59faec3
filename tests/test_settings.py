"""The typed settings object: defaults, overrides, and errors that name the key."""

from __future__ import annotations

import pytest

from fbk_tasks.settings import SettingsError, describe_settings, load_settings


def test_defaults_are_embedded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.data_dir == tmp_path / "data"
    assert s.mlflow_tracking_uri.startswith("sqlite:///") and str(tmp_path) in s.mlflow_tracking_uri
    assert s.warehouse_path == tmp_path / "data" / "warehouse.duckdb"
    assert s.airflow_home == tmp_path / "data" / "airflow"


def test_env_overrides_nested(monkeypatch, tmp_path):
    monkeypatch.setenv("FBK_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("FBK_INGEST__MAX_TEXT_CHARS", "123")
    monkeypatch.setenv("FBK_INGEST__ALLOWED_LANGUAGES", '["en"]')
    s = load_settings()
    assert s.data_dir == tmp_path / "d"
    assert s.ingest.max_text_chars == 123
    assert s.ingest.allowed_languages == ["en"]


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"FBK_INGEST__MAX_QUARANTINE_SHARE": "1.5"}, "ingest.max_quarantine_share"),
        ({"FBK_DRIFT__AUC_THRESHOLD": "-0.1"}, "drift.auc_threshold"),
        ({"FBK_INGEST__NO_SUCH_THING": "1"}, "FBK_INGEST__NO_SUCH_THING"),
        ({"FBK_NOPE": "1"}, "FBK_NOPE"),
        ({"FBK_INGEST__SOURCES_DIR": "/nonexistent/sources"}, "ingest.sources_dir"),
        ({"FBK_INGEST__MAX_TEXT_CHARS": "lots"}, "ingest.max_text_chars"),
    ],
)
def test_invalid_setting_names_the_key(monkeypatch, env, key):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert key in str(err.value)


def test_unknown_yaml_key_is_refused(monkeypatch, tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("ingest:\n  max_text_char: 10\n")
    monkeypatch.setenv("FBK_SETTINGS_FILE", str(f))
    with pytest.raises(SettingsError, match="ingest.max_text_char"):
        load_settings()


def test_unreadable_data_dir(monkeypatch, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    monkeypatch.setenv("FBK_DATA_DIR", str(f / "sub"))
    with pytest.raises(SettingsError, match="data_dir"):
        load_settings()


def test_every_setting_is_described():
    rows = describe_settings()
    keys = {k for k, _, _ in rows}
    assert {"data_dir", "ingest.max_text_chars", "mlflow.registered_model_name", "train.base_model"} <= keys


def test_readme_lists_every_setting():
    from fbk_tasks.settings import PROJECT_ROOT

    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    missing = [k for k, _, _ in describe_settings() if f"`{k}`" not in readme]
    assert not missing, f"README.md does not document: {missing} (regenerate with scripts/settings_table.py)"


@pytest.mark.parametrize("cron", ["0 0 3 * * *", "0 3 * * * 30", "0 3 31 2 *", "every night", "@once"])
def test_a_schedule_must_be_a_five_field_cron_that_fires(cron):
    """croniter alone takes a sixth field as seconds and dates that never come; Airflow would
    then fire every second or fail in the scheduler."""
    from fbk_tasks.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="schedule.score_cron"):
        load_settings(schedule={"score_cron": cron})
    for ok in ("30 1 * * *", "@daily", "0 3 * * 0", "*/15 2-4 * * 1-5"):
        assert load_settings(schedule={"score_cron": ok}).schedule.score_cron == ok


def test_null_in_the_environment_is_none(monkeypatch):
    from fbk_tasks.settings import load_settings

    assert load_settings().train.max_epoch_minutes == 5.0
    monkeypatch.setenv("FBK_TRAIN__MAX_EPOCH_MINUTES", "null")
    assert load_settings().train.max_epoch_minutes is None
