"""`python -m api`: how many workers API_WORKERS asks for, and a bad start refused in one line
before any worker runs, leaving no metrics directory behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from api.__main__ import workers
from api.group_commit import writers_for
from shared.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("value", "expected"), [("", 3), ("  ", 3), ("1", 1), ("8", 8)])
def test_api_workers_or_the_cores(value: str, expected: int) -> None:
    """A whole number is taken as it is; unset or empty means one worker per core."""
    assert workers({"API_WORKERS": value}, default=lambda: 3) == expected
    assert workers({}, default=lambda: 3) == 3


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_api_workers_is_refused(value: str) -> None:
    """Anything but a whole number from 1 stops the start, naming the variable."""
    with pytest.raises(ConfigError, match="API_WORKERS"):
        workers({"API_WORKERS": value})


def _launch(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api", *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "TMPDIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "said"),
    [
        ((), {"DATABASE_URL": "dbname=x", "API_WORKERS": "none"}, "API_WORKERS must be"),
        ((), {}, "DATABASE_URL is not set"),
        (
            (),
            {"DATABASE_URL": "dbname=x", "TWILIO_PHONE_NUMBER": "not-a-number"},
            "TWILIO_PHONE_NUMBER",
        ),
        (("--workers", "4"), {"DATABASE_URL": "dbname=x"}, "set API_WORKERS instead"),
    ],
)
def test_a_bad_start_exits_2_in_one_line_and_leaves_nothing(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], said: str
) -> None:
    """A setting that would fail every worker stops the launcher itself (exit 2, one line on
    stderr, as `uvicorn api.app:app` does); its fresh metrics directory is removed."""
    done = _launch(tmp_path, *args, **env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("api: ") and said in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_nothing_imports_prometheus_client_before_the_directory_is_set() -> None:
    """prometheus-client fixes its mode at its first import: the launcher must not import it
    (through shared.metrics) before it sets PROMETHEUS_MULTIPROC_DIR, or a lone worker serving
    in the launcher's own process would count in memory while /metrics reads the files."""
    probe = "import sys, api.__main__; print('prometheus_client' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout == "False\n"


def test_every_start_of_the_api_goes_through_the_launcher() -> None:
    """The Procfile (make run) and the systemd unit start `python -m api`, never uvicorn itself:
    without the launcher, workers would count in memory and /metrics would show one of them."""
    (procfile,) = [
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("api:")
    ]
    assert procfile.split()[1:4] == ["python", "-m", "api"]
    unit = (ROOT / "deploy" / "systemd" / "sms-outbox-api.service").read_text()
    (start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert start.split()[:3] == ["ExecStart=/opt/sms-outbox/.venv/bin/python", "-m", "api"]
    assert "uvicorn" not in start


@pytest.mark.parametrize(("workers", "writers"), [(1, 2), (2, 1), (8, 1)])
def test_a_lone_worker_writes_with_two_writers_others_with_one(workers: int, writers: int) -> None:
    """Group commit writers per API process: one beside other workers, two in a lone process
    (whose one writer and its requests would take turns)."""
    assert writers_for(workers) == writers
