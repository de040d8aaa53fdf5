"""Where a deployment's token keys come from: the DRONEFLOW_AUTH_* settings, each as a file or
as the value itself; else the pair `droneflow serve` made in its data dir on first start."""

import logging
import os
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import SecretStr

from shared.errors import ConfigurationError
from shared.settings import Settings
from shared.tokens import TokenKeys

log = logging.getLogger(__name__)

GENERATED_PRIVATE_KEY: Final = "token-signing-key.pem"
GENERATED_PUBLIC_KEY: Final = "token-verifying-key.pem"


def load_keys(settings: Settings) -> TokenKeys | None:
    """The configured keys, or the pair in the data dir, or None when there are none."""
    secret = _material(settings.auth_secret, settings.auth_secret_file, "AUTH_SECRET")
    if secret is not None:
        try:
            return TokenKeys.shared_secret(secret.strip())
        except ValueError as exc:
            raise ConfigurationError(f"DRONEFLOW_AUTH_SECRET: {exc}") from None
    public_pem = _material(
        settings.auth_public_key, settings.auth_public_key_file, "AUTH_PUBLIC_KEY"
    )
    private_pem = _material(
        settings.auth_private_key, settings.auth_private_key_file, "AUTH_PRIVATE_KEY"
    )
    if public_pem is None and private_pem is None:
        private_path = settings.data_dir / GENERATED_PRIVATE_KEY
        if not private_path.exists():
            return None
        private_pem = private_path.read_bytes()
    return TokenKeys.ed25519(
        _public_key(public_pem) if public_pem is not None else None,
        _private_key(private_pem) if private_pem is not None else None,
    )


def load_or_create_keys(settings: Settings) -> TokenKeys:
    """For `droneflow serve` with tokens on: the first start makes an Ed25519 pair in the data
    dir, readable by its owner only, and later starts reuse it."""
    keys = load_keys(settings)
    if keys is not None:
        return keys
    private = Ed25519PrivateKey.generate()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _write_private(settings.data_dir / GENERATED_PRIVATE_KEY, private)
    (settings.data_dir / GENERATED_PUBLIC_KEY).write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    log.info("made a token signing key pair in %s", settings.data_dir)
    return TokenKeys.ed25519(None, private)


def _write_private(path: Path, key: Ed25519PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created 0600 rather than chmod-ed after: the key is never readable by others.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)


def _material(value: SecretStr | None, path: Path | None, name: str) -> bytes | None:
    if value is not None and path is not None:
        raise ConfigurationError(f"set DRONEFLOW_{name} or DRONEFLOW_{name}_FILE, not both")
    if value is not None:
        return value.get_secret_value().encode()
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"DRONEFLOW_{name}_FILE: cannot read {path}: {exc}") from None


def _public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise ConfigurationError(
            f"DRONEFLOW_AUTH_PUBLIC_KEY: not a PEM public key: {exc}"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError("DRONEFLOW_AUTH_PUBLIC_KEY: an Ed25519 key is needed")
    return key


def _private_key(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"DRONEFLOW_AUTH_PRIVATE_KEY: not an unencrypted PEM private key: {exc}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError("DRONEFLOW_AUTH_PRIVATE_KEY: an Ed25519 key is needed")
    return key
