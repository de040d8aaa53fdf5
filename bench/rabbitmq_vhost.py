"""The local RabbitMQ as the benchmarks use it: rabbitmqctl, the node's pid (for its CPU), and a
fresh vhost per run, deleted after it."""

import contextlib
import re
import secrets
import subprocess
import urllib.parse
from collections.abc import Iterator


def rabbitmqctl(*argv: str) -> str:
    completed = subprocess.run(
        ["rabbitmqctl", *argv], capture_output=True, text=True, timeout=60, check=False
    )
    if completed.returncode != 0:
        raise SystemExit(f"rabbitmqctl {' '.join(argv)} failed:\n{completed.stderr.strip()}")
    return completed.stdout


def rabbitmq_pid() -> int | None:
    match = re.search(r"OS PID: (\d+)", rabbitmqctl("status"))
    return int(match.group(1)) if match else None


@contextlib.contextmanager
def fresh_vhost(amqp_url: str) -> Iterator[str]:
    """A new vhost the URL's user may use; yields the URL pointing at it, deletes it at exit."""
    parts = urllib.parse.urlsplit(amqp_url)
    user = urllib.parse.unquote(parts.username or "guest")
    vhost = f"droneflow-bench-{secrets.token_hex(4)}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(vhost, "")))
    finally:
        delete_vhost(vhost)


def delete_vhost(vhost: str, attempts: int = 5) -> None:
    """Also when RabbitMQ is restarting (other tenants' fault tests stop and start it)."""
    for attempt in range(attempts):
        try:
            rabbitmqctl("delete_vhost", vhost)
            return
        except SystemExit:
            if attempt == attempts - 1:
                print(f"could not delete vhost {vhost}; delete it with rabbitmqctl delete_vhost")
                raise
            with contextlib.suppress(SystemExit, subprocess.TimeoutExpired):
                rabbitmqctl("await_startup", "--timeout", "60")
