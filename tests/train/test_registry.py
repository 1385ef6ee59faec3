"""Registry look-ups on a real MLflow SQLite store: "absent" and "could not ask" are different answers."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

from fbk_tasks.train import registry


@pytest.fixture()
def client(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


class _Hiccup(MlflowClient):
    """The store answers like a locked SQLite database or a tracking server that timed out."""

    def get_model_version_by_alias(self, name, alias):
        raise MlflowException("(sqlite3.OperationalError) database is locked", error_code=TEMPORARILY_UNAVAILABLE)

    def search_model_versions(self, *args, **kwargs):
        raise MlflowException("(sqlite3.OperationalError) database is locked", error_code=TEMPORARILY_UNAVAILABLE)


def test_alias_version_is_none_only_for_a_missing_model_or_alias(client, tmp_path):
    assert registry.alias_version(client, "review-sentiment", registry.CHAMPION) is None  # no such model
    client.create_registered_model("review-sentiment")
    assert registry.alias_version(client, "review-sentiment", registry.CHAMPION) is None  # no such alias
    mv = client.create_model_version("review-sentiment", source=(tmp_path / "model").as_uri())
    client.set_registered_model_alias("review-sentiment", registry.CHAMPION, mv.version)
    assert registry.alias_version(client, "review-sentiment", registry.CHAMPION).version == mv.version


def test_a_registry_hiccup_is_not_read_as_no_champion_or_no_version(client):
    """Read as "no champion", a locked store made the gate promote without comparing and drop the
    rollback target; read as "not registered yet", a retried registration made a second version."""
    hiccup = _Hiccup(tracking_uri=client._tracking_client.tracking_uri, registry_uri=client._registry_uri)
    with pytest.raises(MlflowException, match="database is locked"):
        registry.alias_version(hiccup, "review-sentiment", registry.CHAMPION)
    with pytest.raises(MlflowException, match="database is locked"):
        registry.find_version_for_run(hiccup, "review-sentiment", "some-run")
    assert registry.find_version_for_run(client, "review-sentiment", "some-run") is None  # no model yet: none
