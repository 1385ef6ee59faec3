"""Static checks of the production deployment files (no Docker needed): docker-compose.yaml,
.env.example, Dockerfile. Commands are checked against the real Airflow/MLflow CLIs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+][^}]*)?\}")
AIRFLOW_SERVICES = {
    "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
    "airflow-triggerer", "airflow-worker", "airflow-worker-gpu",
}
DATA_MOUNT = "/opt/fbk/data"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def _env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _argv(svc: dict) -> list[str]:
    cmd = svc.get("command")
    ep = svc.get("entrypoint")
    parts: list[str] = []
    for x in (ep, cmd):
        if x is None:
            continue
        parts += shlex.split(x) if isinstance(x, str) else [str(a) for a in x]
    return parts


def _environment(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    return {str(k): str(v) for k, v in env.items()}


# -- the Airflow CLI tree, without importing executors ---------------------------------------


def _airflow_commands() -> dict:
    from airflow.cli import cli_config
    from airflow.providers.celery.cli.definition import get_celery_cli_commands

    return {c.name: c for c in [*cli_config.core_commands, *get_celery_cli_commands()]}


def check_airflow_argv(argv: list[str]) -> str | None:
    """None when ``airflow <argv>`` names a real (sub-)command and only its real options; else why not."""
    tree = _airflow_commands()
    cmd = tree.get(argv[0]) if argv else None
    if cmd is None:
        return f"`airflow {argv[:1]}` is no Airflow command (have {sorted(tree)})"
    rest = argv[1:]
    while getattr(cmd, "subcommands", None):
        subs = {s.name: s for s in cmd.subcommands}
        if not rest or rest[0] not in subs:
            return f"`airflow {cmd.name} {rest[:1]}`: no such sub-command (have {sorted(subs)})"
        cmd, rest = subs[rest[0]], rest[1:]
    flags = {f for arg in getattr(cmd, "args", ()) for f in arg.flags} | {"-h", "--help"}
    bad = [tok.split("=", 1)[0] for tok in rest if tok.startswith("-") and tok.split("=", 1)[0] not in flags]
    return f"`airflow ... {cmd.name}`: unknown option(s) {bad}" if bad else None


def check_mlflow_argv(argv: list[str]) -> str | None:
    from mlflow.cli import cli

    sub = cli.commands.get(argv[0]) if argv else None
    if sub is None:
        return f"`mlflow {argv[:1]}` is no MLflow command"
    opts = {o for p in sub.params for o in p.opts} | {"--help"}
    bad = [t.split("=", 1)[0] for t in argv[1:] if t.startswith("-") and t.split("=", 1)[0] not in opts]
    return f"`mlflow {argv[0]}`: unknown option(s) {bad}" if bad else None


def _cli_calls(argv: list[str]) -> list[tuple[str, list[str]]]:
    """(program, args) for each airflow/mlflow invocation: the argv itself, or each line of a
    `bash -c` script."""
    if argv and argv[0] in ("airflow", "mlflow"):
        return [(argv[0], argv[1:])]
    calls = []
    if argv and argv[0] in ("/bin/bash", "bash", "/bin/sh", "sh") and "-c" in argv:
        script = argv[argv.index("-c") + 1]
        for line in script.splitlines():
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            lexer.commenters = "#"
            toks: list[str] = []
            for tok in [*lexer, ";"]:
                if tok in (";", "&&", "||", "|", "&"):
                    if toks and toks[0] in ("airflow", "mlflow"):
                        calls.append((toks[0], toks[1:]))
                    toks = []
                else:
                    toks.append(tok)
    return calls


# -- tests ----------------------------------------------------------------------------------


def test_expected_services(services):
    need = AIRFLOW_SERVICES | {"postgres", "redis", "mlflow"}
    assert need <= set(services), f"missing services: {sorted(need - set(services))}"


def test_every_service_has_image_or_build(services):
    for name, svc in services.items():
        assert svc.get("image") or svc.get("build"), f"{name}: neither image nor build"


def test_airflow_and_mlflow_commands_are_real(services):
    for name, svc in services.items():
        if name in ("postgres", "redis"):
            continue
        calls = _cli_calls(_argv(svc))
        assert calls, f"{name}: command/entrypoint runs no airflow or mlflow sub-command: {_argv(svc)}"
        for prog, args in calls:
            problem = check_airflow_argv(args) if prog == "airflow" else check_mlflow_argv(args)
            assert problem is None, f"{name}: {problem}"


def test_healthcheck_commands_are_real(services):
    checked = 0
    for name, svc in services.items():
        test = (svc.get("healthcheck") or {}).get("test") or []
        if isinstance(test, list) and test and test[0] == "CMD-SHELL":
            for prog, args in _cli_calls(["bash", "-c", " ".join(test[1:])]):
                checked += 1
                assert check_airflow_argv(args) is None, f"{name} healthcheck: {check_airflow_argv(args)}"
            if "celery --app" in " ".join(test[1:]):
                app = " ".join(test[1:]).split("--app", 1)[1].split()[0]
                module, _, attr = app.rpartition(".")
                assert module == "airflow.providers.celery.executors.celery_executor" and attr == "app", name
    assert checked >= 2  # dag-processor and triggerer use `airflow jobs check`


def test_checker_rejects_made_up_commands():
    assert check_airflow_argv(["webserver"]) is not None  # gone in Airflow 3
    assert check_airflow_argv(["celery", "worker", "--queue", "x"]) is not None
    assert check_airflow_argv(["celery", "worker", "-q", "gpu", "-H", "gpu@%h"]) is None
    assert check_airflow_argv(["db", "init"]) is not None  # Airflow 3: `db migrate`
    assert check_mlflow_argv(["server", "--backend-store", "x"]) is not None
    assert check_mlflow_argv(["server", "--serve-artifacts"]) is None


def test_volumes_are_declared(compose, services):
    declared = set(compose.get("volumes") or {})
    for name, svc in services.items():
        for vol in svc.get("volumes") or []:
            source = vol["source"] if isinstance(vol, dict) else str(vol).split(":", 1)[0]
            if source.startswith((".", "/", "~", "$")):
                continue  # bind mount
            assert source in declared, f"{name}: volume {source!r} is not in top-level volumes"


def test_data_root_shared_by_every_airflow_service(services):
    for name in AIRFLOW_SERVICES:
        svc = services[name]
        mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in svc.get("volumes") or [] if isinstance(v, str)}
        assert mounts.get(DATA_MOUNT) == "fbk-data", f"{name}: the data volume is not mounted at {DATA_MOUNT}"
        env = _environment(svc)
        assert env.get("FBK_DATA_DIR") == DATA_MOUNT, f"{name}: FBK_DATA_DIR != {DATA_MOUNT}"
        assert env.get("FBK_MLFLOW__TRACKING_URI") == "http://mlflow:5000", name


def test_airflow3_settings_every_component_needs(services):
    for name in AIRFLOW_SERVICES:
        env = _environment(services[name])
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:8080/execution"), name
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == "${AIRFLOW_JWT_SECRET}", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
        # SQLAlchemy 2.1's default postgresql driver is psycopg 3, which is not installed.
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://"), name
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://"), name


def test_postgres_creates_airflow_and_mlflow_databases(compose, services):
    pg = services["postgres"]
    env = _environment(pg)
    assert env.get("POSTGRES_DB") == "airflow"
    init_sql = "".join(compose["configs"][c["source"]]["content"] for c in pg.get("configs", []))
    assert re.search(r"CREATE DATABASE\s+mlflow", init_sql, re.I)
    assert "/mlflow" in " ".join(_argv(services["mlflow"]))


def test_mlflow_server_serves_artifacts_from_named_volume(services):
    argv = _argv(services["mlflow"])
    assert argv[:2] == ["mlflow", "server"]
    assert "--serve-artifacts" in argv
    dest = argv[argv.index("--artifacts-destination") + 1]
    assert any(str(v).startswith(f"mlflow-artifacts:{dest}") for v in services["mlflow"]["volumes"])
    assert argv[argv.index("--backend-store-uri") + 1].startswith("postgresql+psycopg2://")


def test_fbk_variables_are_real_settings(services):
    from fbk_tasks.settings import describe_settings

    keys = {k for k, _, _ in describe_settings()}
    names = set(_env_example())
    for svc in services.values():
        names |= set(_environment(svc))
    fbk = sorted(n for n in names if n.startswith("FBK_") and n != "FBK_SETTINGS_FILE")
    assert fbk, "no FBK_ settings found"
    for name in fbk:
        key = name[len("FBK_"):].lower().replace("__", ".")
        assert key in keys, f"{name} maps to {key!r}, which is no setting (see describe_settings())"


def test_env_example_values_load_as_settings(monkeypatch):
    """The example values themselves are valid (compose strips the quotes), e.g. the crons."""
    from fbk_tasks.settings import load_settings

    for key, value in _env_example().items():
        if key.startswith("FBK_") and value:
            monkeypatch.setenv(key, value.strip('"'))
    s = load_settings()
    assert (s.schedule.ingest_cron, s.schedule.score_cron, s.schedule.train_cron) == ("0 0 * * *", "0 3 * * *", "0 3 * * 0")


def test_every_compose_variable_is_in_env_example():
    used = set(VAR_RE.findall(COMPOSE.read_text()))
    # `$${X}` is an escaped literal for the container's shell, not a compose variable
    used -= set(re.findall(r"\$\$\{([A-Za-z_][A-Za-z0-9_]*)\}", COMPOSE.read_text()))
    missing = sorted(used - set(_env_example()))
    assert not missing, f"used in docker-compose.yaml but not in .env.example: {missing}"


def test_env_example_commits_no_secrets():
    for key, value in _env_example().items():
        if any(w in key for w in ("PASSWORD", "SECRET", "FERNET")):
            assert value in ("", "change-me"), f"{key} must be a placeholder in .env.example"


def test_gpu_worker_only_under_profile_and_only_on_gpu_queue(services):
    for name, svc in services.items():
        argv = _argv(svc)
        if "gpu" in svc.get("profiles", []):
            continue
        assert "deploy" not in svc or "devices" not in str(svc["deploy"]), f"{name} reserves devices outside profile gpu"
        if "worker" in argv:
            queues = argv[argv.index("-q") + 1].split(",")
            assert "gpu" not in queues, f"{name} listens on gpu outside profile gpu"
    gpu = services["airflow-worker-gpu"]
    assert gpu.get("profiles") == ["gpu"]
    argv = _argv(gpu)
    assert argv[:3] == ["airflow", "celery", "worker"]
    assert argv[argv.index("-q") + 1] == "gpu"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)


def test_default_worker_listens_on_default_queue(services):
    argv = _argv(services["airflow-worker"])
    assert argv[argv.index("-q") + 1] == "default"


def test_healthchecks_and_restart_like_the_official_file(services):
    for name, svc in services.items():
        if name == "airflow-init":
            assert svc.get("restart") in (None, "no")
            continue
        assert svc.get("restart") == "always", name
        assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"


def test_dockerfile_installs_pinned_requirements_then_the_project():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    i_req = text.index("pip install -r requirements.txt")
    i_proj = text.index("pip install --no-deps")
    assert i_req < i_proj
    assert "COPY requirements.txt" in text


def test_requirements_carry_what_the_distributed_stack_needs():
    """Airflow 3 on PostgreSQL opens an asyncpg engine; the celery provider imports
    celery.backends.database.retry, which celery 5.7 removed."""
    reqs = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line.strip())
        if m:
            reqs[m.group(1).lower().replace("_", "-")] = m.group(2)
    assert "asyncpg" in reqs, "requirements.txt lacks asyncpg (Airflow 3 metadata DB on PostgreSQL needs it)"
    assert "psycopg2-binary" in reqs
    major_minor = tuple(int(x) for x in reqs["celery"].split(".")[:2])
    assert major_minor < (5, 7), (
        f"celery=={reqs['celery']}: apache-airflow-providers-celery=={reqs.get('apache-airflow-providers-celery')} "
        "imports celery.backends.database.retry, removed in celery 5.7; pin celery==5.6.3 and kombu==5.6.2"
    )


def test_dockerignore_keeps_secrets_and_local_state_out():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    for entry in (".env", ".venv", "data/", ".git"):
        assert entry in lines, entry
