"""deploy/: migrate runs before the API and the dispatchers, retention runs daily, each dispatcher
instance gets its own metrics port, systemd and Caddy accept our files where they are installed,
and env.example names only settings the code reads."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from shared.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = DEPLOY / "systemd"
APP = "/opt/sms-outbox"
SERVED = ["sms-outbox-api.service", "sms-outbox-dispatcher@.service"]


def read_unit(name: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values...]}}; backslash-continued lines joined, comments dropped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    text = (UNITS / name).read_text().replace("\\\n", " ")
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def words(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> set[str]:
    return {w for value in unit.get(section, {}).get(key, []) for w in value.split()}


@pytest.mark.parametrize("name", SERVED)
def test_api_and_dispatchers_start_after_migrate_and_need_it(name: str) -> None:
    """Each start of the API or a dispatcher runs the migrate unit first and waits for it."""
    unit = read_unit(name)
    assert "sms-outbox-migrate.service" in words(unit, "Unit", "Requires")
    assert "sms-outbox-migrate.service" in words(unit, "Unit", "After")


def test_migrate_is_a_oneshot_of_the_runtime_migrator_then_the_roles() -> None:
    """Migrate runs `python -m shared.migrate` to completion (no dev tools, no make), then
    `smsctl db roles`, so a new table has its grants before the new code runs."""
    unit = read_unit("sms-outbox-migrate.service")
    assert unit["Service"]["Type"] == ["oneshot"]
    migrate, roles = unit["Service"]["ExecStart"]
    assert f"{APP}/.venv/bin/python -m shared.migrate" in migrate
    assert roles == f"{APP}/.venv/bin/smsctl db roles"
    # Never stays active: a later start of the API runs it again for a new release.
    assert unit["Service"].get("RemainAfterExit", ["no"]) == ["no"]


def test_retention_timer_runs_prune_daily() -> None:
    """The timer starts the retention service, which prunes what is older than 90 days."""
    timer = read_unit("sms-outbox-retention.timer")
    service = read_unit("sms-outbox-retention.service")
    assert timer["Timer"]["OnCalendar"] == ["*-*-* 03:30:00"]
    assert timer["Timer"]["Persistent"] == ["true"]
    assert timer.get("Timer", {}).get("Unit", ["sms-outbox-retention.service"]) == [
        "sms-outbox-retention.service"
    ]
    assert service["Service"]["Type"] == ["oneshot"]
    assert service["Service"]["ExecStart"] == [f"{APP}/.venv/bin/smsctl prune --older-than 90d"]


def _dispatcher_start(instance: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run the dispatcher unit's ExecStart as systemd would for `instance`, with a stand-in
    python that prints the METRICS_PORT it was given."""
    command = read_unit("sms-outbox-dispatcher@.service")["Service"]["ExecStart"][0]
    stub = tmp_path / "python"
    stub.write_text('#!/bin/sh\necho "$METRICS_PORT $*"\n')
    stub.chmod(0o755)
    command = command.replace(f"{APP}/.venv/bin/python", str(stub))
    # systemd's own expansion: %i is the instance, $$ a literal $.
    command = command.replace("%i", instance).replace("$$", "$")
    argv = command.split(" ", 2)
    assert argv[:2] == ["/bin/sh", "-c"]
    script = argv[2].strip()
    assert script[0] == script[-1] == "'"
    return subprocess.run(
        ["/bin/sh", "-c", script[1:-1]], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    ("instance", "port"), [("1", 8101), ("9", 8109), ("10", 8110), ("123", 8223)]
)
def test_each_dispatcher_instance_gets_its_own_metrics_port(
    instance: str, port: int, tmp_path: Path
) -> None:
    """Instance N serves metrics on 8100+N, from instance 10 on too (800N broke there)."""
    done = _dispatcher_start(instance, tmp_path)
    assert (done.returncode, done.stdout) == (0, f"{port} -m dispatcher\n")


@pytest.mark.parametrize("instance", ["a", "01", "1a"])
def test_a_dispatcher_instance_that_is_not_a_number_is_refused(
    instance: str, tmp_path: Path
) -> None:
    """`@a` or `@01` would share a port with another instance: refused with a reason."""
    done = _dispatcher_start(instance, tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "the instance must be a number" in done.stderr


def _verifiable_units(tmp_path: Path) -> list[Path]:
    """Copies of the units whose /opt/sms-outbox points at stand-in executables under tmp_path
    (systemd-analyze checks that each ExecStart exists); the dispatcher as instance 12."""
    app = tmp_path / "app"
    (app / ".venv" / "bin").mkdir(parents=True)
    for exe in ("python", "uvicorn", "smsctl"):
        path = app / ".venv" / "bin" / exe
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    out = tmp_path / "units"
    out.mkdir()
    for unit in sorted(UNITS.iterdir()):
        (out / unit.name).write_text(unit.read_text().replace(APP, str(app)))
    (out / "sms-outbox-dispatcher@12.service").write_text(
        (out / "sms-outbox-dispatcher@.service").read_text()
    )
    return [p for p in sorted(out.iterdir()) if not p.name.endswith("@.service")]


def test_systemd_analyze_verifies_every_unit(tmp_path: Path) -> None:
    """systemd-analyze verify accepts each unit with no warning (unknown keys, bad commands)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd to run this)")
    units = _verifiable_units(tmp_path)
    assert len(units) == len(list(UNITS.iterdir()))
    for unit in units:
        done = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", unit.name],
            cwd=unit.parent,
            capture_output=True,
            text=True,
            check=False,
        )
        assert (unit.name, done.returncode, done.stderr) == (unit.name, 0, "")


def test_caddy_accepts_the_caddyfile() -> None:
    """deploy/Caddyfile adapts to a Caddy config (syntax and directives), where caddy exists."""
    if shutil.which("caddy") is None:
        pytest.skip("caddy is not installed (apt-get install caddy to run this)")
    done = subprocess.run(
        ["caddy", "adapt", "--config", str(DEPLOY / "Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"upstreams":[{"dial":"127.0.0.1:8000"}]' in done.stdout


def _example_settings() -> dict[str, str]:
    """KEY=value lines of deploy/env.example, commented-out ones (`#KEY=`) included."""
    found = {}
    for line in (DEPLOY / "env.example").read_text().splitlines():
        m = re.match(r"^#?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            found[m[1]] = m[2]
    return found


def test_env_example_names_only_settings_the_code_reads() -> None:
    """Every variable in env.example is one shared/config.py reads: a typo would be ignored
    silently in production."""
    example = _example_settings()
    assert "PUBLIC_BASE_URL" in example
    config = (ROOT / "shared" / "config.py").read_text()
    assert [key for key in example if f'"{key}"' not in config] == []


def test_env_example_loads() -> None:
    """Its active lines are valid settings (with a DATABASE_URL from the per-role files)."""
    active = {
        key: value
        for key, value in _example_settings().items()
        if f"\n{key}=" in "\n" + (DEPLOY / "env.example").read_text()
    }
    settings = load_settings({**active, "DATABASE_URL": "dbname=sms_outbox"})
    assert settings.public_base_url == "https://sms.example.com"


def test_smsctl_wrapper_runs_smsctl_with_the_env_files(tmp_path: Path) -> None:
    """deploy/smsctl reads env (here env.example itself), then owner.env over it, and passes
    the arguments through: operators run smsctl as the units do."""
    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.copy(DEPLOY / "env.example", etc / "env")
    (etc / "owner.env").write_text("DATABASE_URL='host=db user=sms_owner password=a b'\n")
    bin_dir = tmp_path / "home" / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    stub = bin_dir / "smsctl"
    stub.write_text('#!/bin/sh\necho "$DATABASE_URL|$PUBLIC_BASE_URL|$*"\n')
    stub.chmod(0o755)
    done = subprocess.run(
        [str(DEPLOY / "smsctl"), "outbox", "--json"],
        env={
            "PATH": "/usr/bin:/bin",
            "SMS_OUTBOX_ETC": str(etc),
            "SMS_OUTBOX_HOME": str(tmp_path / "home"),
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert (
        done.stdout == "host=db user=sms_owner password=a b|https://sms.example.com|outbox --json\n"
    )
