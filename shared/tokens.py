"""Signed identities: JWTs made and checked with PyJWT.

Claims: `sub` (the app or drone id), `role` (app, drone or admin), `iat`, `nbf`, `exp`, `jti`,
and on app tokens optionally `drones`, glob patterns of the drone ids the app may task.

Ed25519 (EdDSA) is the default: the issuer holds the private key and gateways need only the
public one. HS256 with a shared secret is the alternative. A verifier accepts exactly one
algorithm, the one its key is for, so `none` and key-type confusion (an HS256 token "signed"
with the public key as its secret) never verify.
"""

import secrets
import time
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Final, Literal, get_args

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.errors import DroneflowError
from shared.ids import is_valid_client_id

Role = Literal["app", "drone", "admin"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)
EDDSA: Final = "EdDSA"
HS256: Final = "HS256"
MIN_SECRET_BYTES: Final = 32
REQUIRED_CLAIMS: Final = ("sub", "role", "iat", "nbf", "exp", "jti")
LEEWAY_S: Final = 5.0
"""Clock skew tolerated between the issuer and the gateways."""


class InvalidToken(DroneflowError):
    """Missing, malformed, expired, not yet valid, badly signed or revoked: answered 401."""


@dataclass(frozen=True, slots=True)
class Identity:
    sub: str
    role: Role
    jti: str
    expires_at: float
    drones: tuple[str, ...] | None = None
    """Glob patterns of the drones an app may send tasks to; None means every drone."""

    def may_task(self, drone_id: str) -> bool:
        if self.role == "admin":
            return True
        if self.role != "app":
            return False
        return self.drones is None or any(fnmatchcase(drone_id, p) for p in self.drones)


@dataclass(frozen=True, slots=True)
class TokenKeys:
    """The key material of one deployment. `signing_key` is None on a gateway that was given
    only the public key: it verifies tokens and cannot make them."""

    algorithm: Literal["EdDSA", "HS256"]
    verifying_key: Ed25519PublicKey | bytes
    signing_key: Ed25519PrivateKey | bytes | None

    @classmethod
    def ed25519(
        cls, public: Ed25519PublicKey | None, private: Ed25519PrivateKey | None
    ) -> "TokenKeys":
        verifying = public or (private.public_key() if private is not None else None)
        if verifying is None:
            raise ValueError("an Ed25519 public or private key is needed")
        return cls(EDDSA, verifying, private)

    @classmethod
    def shared_secret(cls, secret: bytes) -> "TokenKeys":
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"an HS256 secret needs at least {MIN_SECRET_BYTES} bytes")
        return cls(HS256, secret, secret)

    def issue(
        self,
        role: Role,
        sub: str,
        ttl_s: float,
        drones: tuple[str, ...] | None = None,
        now: float | None = None,
    ) -> str:
        if self.signing_key is None:
            raise ValueError("this key set can verify tokens but not sign them: no private key")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if not is_valid_client_id(sub):
            raise ValueError("the id must be 1-64 of A-Z a-z 0-9 _ -")
        issued_at = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "sub": sub,
            "role": role,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + int(ttl_s),
            "jti": secrets.token_hex(16),
        }
        if drones is not None:
            if role != "app":
                raise ValueError("only app tokens carry drone patterns")
            claims["drones"] = list(drones)
        return jwt.encode(claims, self.signing_key, algorithm=self.algorithm)

    def verify(self, token: str) -> Identity:
        try:
            claims = jwt.decode(
                token,
                self.verifying_key,
                algorithms=[self.algorithm],
                options={"require": list(REQUIRED_CLAIMS)},
                leeway=LEEWAY_S,
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {exc}") from None
        return _identity(claims)


def _identity(claims: dict[str, Any]) -> Identity:
    sub, role, jti, drones = claims["sub"], claims["role"], claims["jti"], claims.get("drones")
    if not isinstance(sub, str) or not is_valid_client_id(sub):
        raise InvalidToken("invalid token: sub is not a valid id")
    if role not in ROLES:
        raise InvalidToken("invalid token: unknown role")
    if not isinstance(jti, str) or not jti:
        raise InvalidToken("invalid token: jti is not a string")
    if drones is not None and (
        not isinstance(drones, list) or not all(isinstance(p, str) for p in drones)
    ):
        raise InvalidToken("invalid token: drones is not a list of patterns")
    return Identity(
        sub=sub,
        role=role,
        jti=jti,
        expires_at=float(claims["exp"]),
        drones=tuple(drones) if drones is not None else None,
    )


def parse_ttl(text: str) -> float:
    """`90`, `45s`, `15m`, `12h` or `30d` as seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    if not (number.isascii() and number.isdigit()) or int(number) <= 0:
        raise ValueError(f"{text!r} is not a duration such as 90s, 15m, 12h or 30d")
    return float(int(number) * units[unit])
