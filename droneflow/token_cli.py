"""`droneflow token create | revoke | list`: issue, revoke and list tokens.

It reads the same DRONEFLOW_* settings as the servers, so it signs with the deployment's key
(DRONEFLOW_AUTH_PRIVATE_KEY_FILE or _SECRET_FILE, else the pair `droneflow serve` made in the
data dir) and records in the same store, where every gateway looks for revocations.

`create` prints the token alone on stdout, so that `TOKEN=$(droneflow token create …)` works;
everything else it says goes to stderr."""

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Final

import jwt
import typer

from droneflow.startup import EXIT_CONFIGURATION, load_settings
from shared.clock import format_timestamp
from shared.errors import ConfigurationError, StoreError
from shared.keys import load_keys
from shared.settings import Settings
from shared.store import TokenRecord
from shared.tokens import Role, parse_ttl
from shared.wiring import build_store

DEFAULT_TTL: Final = "30d"
LIST_LIMIT: Final = 1000

app = typer.Typer(help="Issue, revoke and list tokens.", no_args_is_help=True)


def _ttl(text: str) -> float:
    try:
        return parse_ttl(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def spread_drone_patterns(argv: list[str]) -> list[str]:
    """`token create --drones A B` as `--drones A --drones B`: the parser takes one value per
    option, and `--drones` has always taken the patterns that follow it."""
    if argv[:2] != ["token", "create"]:
        return argv
    spread: list[str] = []
    taking = unfilled = False  # after --drones; and no pattern followed it yet
    for arg in argv:
        if taking and not arg.startswith("-"):
            spread += ["--drones", arg]
            unfilled = False
            continue
        if unfilled:
            spread.append("--drones")  # left bare, for the parser to say it needs a value
        taking = unfilled = arg == "--drones"
        if not taking:
            spread.append(arg)
    if unfilled:
        spread.append("--drones")
    return spread


@app.command()
def create(
    role: Annotated[Role, typer.Option(show_default=False)],
    id_: Annotated[
        str, typer.Option("--id", help="the application, drone or operator id", show_default=False)
    ],
    ttl: Annotated[
        float, typer.Option(parser=_ttl, metavar="TTL", help="lifetime: 90s, 15m, 12h, 30d")
    ] = DEFAULT_TTL,  # type: ignore[assignment]  # parsed by _ttl like a typed value
    drones: Annotated[
        list[str] | None,
        typer.Option(
            "--drones",
            metavar="PATTERN...",
            help="app tokens: glob patterns of the drone ids it may task (default: every drone)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Issue a token and print it alone on stdout."""
    _run(partial(_create, role=role, sub=id_, ttl_s=ttl, drones=drones))


@app.command()
def revoke(
    token: Annotated[str, typer.Argument(metavar="JTI_OR_TOKEN", show_default=False)],
) -> None:
    """Revoke a token: every gateway refuses it."""
    _run(partial(_revoke, token=token))


@app.command("list")
def list_() -> None:
    """The issued tokens, newest first, and the revoked ones."""
    _run(_list)


def _run(work: Callable[[Settings], Coroutine[Any, Any, None]]) -> None:
    settings = load_settings({})
    if settings is None:
        raise typer.Exit(EXIT_CONFIGURATION)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(work(settings))
    except ConfigurationError as exc:
        logging.getLogger("droneflow").error("%s", exc)
        raise typer.Exit(2) from None
    except StoreError as exc:
        sys.stderr.write(f"droneflow token: the store failed: {exc}\n")
        raise typer.Exit(1) from None


async def _create(
    settings: Settings, *, role: Role, sub: str, ttl_s: float, drones: list[str] | None
) -> None:
    if drones is not None and role != "app":
        raise ConfigurationError("--drones is for app tokens only")
    keys = load_keys(settings)
    if keys is None or keys.signing_key is None:
        raise ConfigurationError(
            "no key to sign tokens with: set DRONEFLOW_AUTH_PRIVATE_KEY_FILE (Ed25519) or "
            "DRONEFLOW_AUTH_SECRET_FILE (HS256), or start `droneflow serve` with tokens on "
            f"once, so that it makes a key pair in {settings.data_dir}"
        )
    try:
        token = keys.issue(role, sub, ttl_s, tuple(drones) if drones else None)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    claims = jwt.decode(token, options={"verify_signature": False})
    async with build_store(settings) as store:
        await store.record_token(
            TokenRecord(
                jti=claims["jti"],
                sub=claims["sub"],
                role=claims["role"],
                drones=tuple(claims["drones"]) if "drones" in claims else None,
                issued_at=_iso(claims["iat"]),
                expires_at=_iso(claims["exp"]),
            )
        )
    sys.stdout.write(token + "\n")


async def _revoke(settings: Settings, *, token: str) -> None:
    jti = token.strip()
    if jti.count(".") == 2:  # a whole token: take its jti (signed by any key: it only revokes)
        try:
            jti = jwt.decode(jti, options={"verify_signature": False})["jti"]
        except (jwt.PyJWTError, KeyError):
            raise ConfigurationError("that is neither a jti nor a token with a jti") from None
    if not isinstance(jti, str) or not jti:
        raise ConfigurationError("the jti is empty")
    async with build_store(settings) as store:
        record = await store.revoke_token(jti)
    who = f" ({record.role} {record.sub})" if record.sub else " (not issued by this CLI)"
    sys.stdout.write(f"revoked {record.jti}{who} at {record.revoked_at}\n")


async def _list(settings: Settings) -> None:
    async with build_store(settings) as store:
        records = await store.list_tokens(LIST_LIMIT)
    rows = [("JTI", "ROLE", "ID", "DRONES", "ISSUED", "EXPIRES", "REVOKED")]
    rows += [
        (
            r.jti,
            r.role or "-",
            r.sub or "-",
            ",".join(r.drones) if r.drones else "*" if r.role == "app" else "-",
            r.issued_at or "-",
            r.expires_at or "-",
            r.revoked_at or "-",
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        sys.stdout.write("  ".join(cells).rstrip() + "\n")


def _iso(epoch_s: int) -> str:
    return format_timestamp(datetime.fromtimestamp(epoch_s, UTC))
