"""`droneflow token create | revoke | list`: issue, revoke and list tokens.

It reads the same DRONEFLOW_* settings as the servers, so it signs with the deployment's key
(DRONEFLOW_AUTH_PRIVATE_KEY_FILE or _SECRET_FILE, else the pair `droneflow serve` made in the
data dir) and records in the same store, where every gateway looks for revocations.

`create` prints the token alone on stdout, so that `TOKEN=$(droneflow token create …)` works;
everything else it says goes to stderr."""

import argparse
import asyncio
import sys
from datetime import UTC, datetime

import jwt

from shared.clock import format_timestamp
from shared.errors import ConfigurationError, StoreError
from shared.keys import load_keys
from shared.settings import Settings
from shared.store import TokenRecord
from shared.tokens import ROLES, parse_ttl
from shared.wiring import build_store

DEFAULT_TTL = "30d"
LIST_LIMIT = 1000


def _ttl(text: str) -> float:
    try:
        return parse_ttl(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    token = commands.add_parser("token", help="issue, revoke and list tokens")
    actions = token.add_subparsers(dest="token_command", required=True)
    create = actions.add_parser("create", help="issue a token and print it alone on stdout")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--id", required=True, help="the application, drone or operator id")
    create.add_argument(
        "--ttl", type=_ttl, default=_ttl(DEFAULT_TTL), help="lifetime: 90s, 15m, 12h, 30d"
    )
    create.add_argument(
        "--drones",
        nargs="+",
        metavar="PATTERN",
        help="app tokens: glob patterns of the drone ids it may task (default: every drone)",
    )
    revoke = actions.add_parser("revoke", help="revoke a token: every gateway refuses it")
    revoke.add_argument("token", metavar="JTI_OR_TOKEN")
    actions.add_parser("list", help="the issued tokens, newest first, and the revoked ones")


def run(args: argparse.Namespace, settings: Settings) -> int:
    commands = {"create": _create, "revoke": _revoke, "list": _list}
    try:
        return asyncio.run(commands[args.token_command](args, settings))
    except StoreError as exc:
        sys.stderr.write(f"droneflow token: the store failed: {exc}\n")
        return 1


async def _create(args: argparse.Namespace, settings: Settings) -> int:
    if args.drones is not None and args.role != "app":
        raise ConfigurationError("--drones is for app tokens only")
    keys = load_keys(settings)
    if keys is None or keys.signing_key is None:
        raise ConfigurationError(
            "no key to sign tokens with: set DRONEFLOW_AUTH_PRIVATE_KEY_FILE (Ed25519) or "
            "DRONEFLOW_AUTH_SECRET_FILE (HS256), or start `droneflow serve` with tokens on "
            f"once, so that it makes a key pair in {settings.data_dir}"
        )
    try:
        token = keys.issue(
            args.role, args.id, args.ttl, tuple(args.drones) if args.drones else None
        )
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
    return 0


async def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    jti = args.token.strip()
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
    return 0


async def _list(args: argparse.Namespace, settings: Settings) -> int:
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
    return 0


def _iso(epoch_s: int) -> str:
    return format_timestamp(datetime.fromtimestamp(epoch_s, UTC))
