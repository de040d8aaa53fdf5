"""What a server process decides about tokens before it serves: whether they are on, with which
keys, and that no token reaches a log line.

Modes (DRONEFLOW_AUTH):
- `token`: every REST call and socket needs a token. The default of `droneflow gateway`, and of
  `droneflow serve` on any address but loopback. `serve` makes a key pair in its data dir on
  first start; a gateway must be given its verifying key, or it does not start.
- `disabled`: no tokens. The default only of `serve` on loopback (127.0.0.0/8, ::1, localhost),
  where the quickstart's clients work unchanged, as RabbitMQ's `guest` works from localhost
  only. Anywhere else it must be set explicitly, and every start logs a warning.
"""

import ipaddress
import logging
import re
from typing import Final, Literal

from shared.errors import ConfigurationError
from shared.keys import load_keys, load_or_create_keys
from shared.settings import Settings
from shared.tokens import TokenKeys

log = logging.getLogger("droneflow")

Command = Literal["serve", "gateway"]


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost, or "" (every address)


def token_keys(settings: Settings, command: Command) -> TokenKeys | None:
    """The keys that verify tokens, or None when tokens are off. Logs the mode when it is
    open; raises ConfigurationError when tokens are on and nothing can verify them."""
    mode = settings.auth
    loopback = is_loopback(settings.host)
    if mode is None:
        mode = "disabled" if command == "serve" and loopback else "token"
        if mode == "disabled":
            log.info(
                "tokens are off: %s listens on loopback (%s) only, so every local client is "
                "trusted; set DRONEFLOW_AUTH=token to require tokens",
                command,
                settings.host,
            )
    if mode == "disabled":
        if not loopback:
            log.warning(
                "DRONEFLOW_AUTH=disabled on %s: anyone who can reach port %d may act as any "
                "application or drone; use DRONEFLOW_AUTH=token",
                settings.host,
                settings.port,
            )
        return None
    if command == "serve":
        return load_or_create_keys(settings)
    keys = load_keys(settings)
    if keys is None:
        raise ConfigurationError(
            "tokens are on (DRONEFLOW_AUTH=token, the default of `droneflow gateway`) but no key "
            "verifies them: set DRONEFLOW_AUTH_PUBLIC_KEY_FILE (Ed25519) or "
            "DRONEFLOW_AUTH_SECRET_FILE (HS256), or DRONEFLOW_AUTH=disabled"
        )
    return keys


# --- no token in any log line ------------------------------------------------------------------

_SECRETS: Final = (
    # `?token=…` in a path uvicorn logs ("WebSocket /ws/drone/x?token=…" [accepted]).
    (re.compile(r"(token=)[^&\s\"']+", re.IGNORECASE), r"\1[redacted]"),
    # Headers websockets logs at debug level ("< Authorization: Bearer …").
    (re.compile(r"(authorization:\s*)[^\r\n]+", re.IGNORECASE), r"\1[redacted]"),
)
REDACTED_LOGGERS: Final = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
    "websockets",
    "websockets.server",
    "websockets.protocol",
)


class RedactTokens(logging.Filter):
    """Rewrites a record whose message carries a token, so that no handler sees the token."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = message
        for pattern, replacement in _SECRETS:
            redacted = pattern.sub(replacement, redacted)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


_FILTER: Final = RedactTokens()


def redact_tokens_in_logs() -> None:
    """On the loggers of the HTTP and WebSocket servers, which log request paths and, at debug
    level, headers. (A filter on a logger sees the records made on that logger itself.)"""
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
