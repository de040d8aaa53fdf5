"""Tokens verify only when well formed, in date, and signed with the deployment's own key and
algorithm; every bypass of those is InvalidToken."""

import base64
import hashlib
import hmac
import json
import stat
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import SecretStr

from shared.errors import ConfigurationError
from shared.keys import GENERATED_PRIVATE_KEY, load_keys, load_or_create_keys
from shared.settings import Settings
from shared.tokens import Identity, InvalidToken, TokenKeys, parse_ttl

DAY_S = 86400.0


@pytest.fixture
def keys() -> TokenKeys:
    return TokenKeys.ed25519(None, Ed25519PrivateKey.generate())


def _unsigned(claims: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def _claims(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})  # type: ignore[no-any-return]


def test_token_round_trip_gives_back_the_identity(keys: TokenKeys) -> None:
    token = keys.issue("app", "App001", DAY_S, drones=("Drone0*", "Scout-?"))
    identity = keys.verify(token)
    assert (identity.sub, identity.role) == ("App001", "app")
    assert identity.drones == ("Drone0*", "Scout-?")
    assert identity.may_task("Drone007") and identity.may_task("Scout-1")
    assert not identity.may_task("Drone100")


def test_app_token_without_patterns_may_task_every_drone_and_others_none(keys: TokenKeys) -> None:
    assert keys.verify(keys.issue("app", "App001", DAY_S)).may_task("AnyDrone")
    assert keys.verify(keys.issue("admin", "ops", DAY_S)).may_task("AnyDrone")
    assert not keys.verify(keys.issue("drone", "Drone001", DAY_S)).may_task("Drone001")


def test_each_token_gets_its_own_jti(keys: TokenKeys) -> None:
    first, second = (keys.verify(keys.issue("drone", "D1", DAY_S)) for _ in range(2))
    assert first.jti != second.jti


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b", "🛸.🛸.🛸"])
def test_malformed_token_is_refused(keys: TokenKeys, token: str) -> None:
    with pytest.raises(InvalidToken):
        keys.verify(token)


def test_expired_token_is_refused(keys: TokenKeys) -> None:
    token = keys.issue("app", "App001", 60, now=time.time() - 3600)
    with pytest.raises(InvalidToken, match="expired"):
        keys.verify(token)


def test_token_not_yet_valid_is_refused(keys: TokenKeys) -> None:
    token = keys.issue("app", "App001", DAY_S, now=time.time() + 3600)
    with pytest.raises(InvalidToken):
        keys.verify(token)


def test_token_signed_with_another_key_is_refused(keys: TokenKeys) -> None:
    other = TokenKeys.ed25519(None, Ed25519PrivateKey.generate())
    with pytest.raises(InvalidToken):
        keys.verify(other.issue("admin", "ops", DAY_S))


def test_alg_none_is_refused(keys: TokenKeys) -> None:
    claims = _claims(keys.issue("admin", "ops", DAY_S))
    with pytest.raises(InvalidToken):
        keys.verify(_unsigned(claims))


def _hmac_token(claims: dict[str, object], secret: bytes) -> str:
    """HS256 by hand: PyJWT itself refuses to use a PEM public key as an HMAC secret."""

    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    head = part(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = part(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{part(signature)}"


def test_hs256_token_signed_with_the_public_key_as_secret_is_refused(keys: TokenKeys) -> None:
    assert isinstance(keys.verifying_key, Ed25519PublicKey)
    public_pem = keys.verifying_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = _hmac_token(_claims(keys.issue("admin", "ops", DAY_S)), public_pem)
    with pytest.raises(InvalidToken):
        keys.verify(forged)


def test_shared_secret_verifier_refuses_eddsa_tokens(keys: TokenKeys) -> None:
    hs = TokenKeys.shared_secret(b"s" * 32)
    assert hs.verify(hs.issue("drone", "D1", DAY_S)).sub == "D1"
    with pytest.raises(InvalidToken):
        hs.verify(keys.issue("drone", "D1", DAY_S))


@pytest.mark.parametrize(
    ("claims", "why"),
    [
        ({"role": "root"}, "unknown role"),
        ({"sub": "has space"}, "sub"),
        ({"drones": "Drone*"}, "drones"),
    ],
)
def test_token_with_bad_claims_is_refused(
    claims: dict[str, object], why: str, keys: TokenKeys
) -> None:
    good = _claims(keys.issue("app", "App001", DAY_S))
    assert isinstance(keys.signing_key, Ed25519PrivateKey)
    token = jwt.encode({**good, **claims}, keys.signing_key, algorithm="EdDSA")
    with pytest.raises(InvalidToken, match=why):
        keys.verify(token)


def test_token_missing_a_required_claim_is_refused(keys: TokenKeys) -> None:
    good = _claims(keys.issue("app", "App001", DAY_S))
    del good["jti"]
    assert isinstance(keys.signing_key, Ed25519PrivateKey)
    with pytest.raises(InvalidToken, match="jti"):
        keys.verify(jwt.encode(good, keys.signing_key, algorithm="EdDSA"))


def test_verifying_only_keys_cannot_issue(keys: TokenKeys) -> None:
    gateway = TokenKeys(keys.algorithm, keys.verifying_key, None)
    assert gateway.verify(keys.issue("drone", "D1", DAY_S)).role == "drone"
    with pytest.raises(ValueError, match="private key"):
        gateway.issue("drone", "D1", DAY_S)


def test_short_shared_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        TokenKeys.shared_secret(b"short")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("45s", 45), ("15m", 900), ("12h", 43200), ("30d", 2592000)]
)
def test_ttl_is_read_in_seconds_minutes_hours_or_days(text: str, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "-5m", "0", "1.5h", "3w", "²d"])
def test_ttl_that_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_ttl(text)


def test_serve_makes_a_key_pair_readable_by_its_owner_only_and_reuses_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert load_keys(settings) is None
    first = load_or_create_keys(settings)
    mode = stat.S_IMODE((tmp_path / GENERATED_PRIVATE_KEY).stat().st_mode)
    assert mode == 0o600
    token = first.issue("admin", "ops", DAY_S)
    assert load_or_create_keys(settings).verify(token).role == "admin"


def test_gateway_given_only_the_public_key_verifies_what_the_issuer_signs(tmp_path: Path) -> None:
    issuer = load_or_create_keys(Settings(data_dir=tmp_path / "issuer"))
    public_pem = (tmp_path / "issuer" / "token-verifying-key.pem").read_text()
    gateway = load_keys(Settings(data_dir=tmp_path / "gw", auth_public_key=SecretStr(public_pem)))
    assert gateway is not None and gateway.signing_key is None
    identity: Identity = gateway.verify(issuer.issue("drone", "D1", DAY_S))
    assert identity.sub == "D1"


def test_a_key_given_both_as_value_and_file_is_a_configuration_error(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("x" * 40)
    settings = Settings(
        data_dir=tmp_path, auth_secret=SecretStr("y" * 40), auth_secret_file=secret_file
    )
    with pytest.raises(ConfigurationError, match="not both"):
        load_keys(settings)
