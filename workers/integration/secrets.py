"""Secrets resolved just in time from `SECRETS_MANAGER_URL`: Vault KV v2 over HTTP, or a `file://` directory.

A reference is `name` or, for Vault, `path/to/secret#key` (without `#key`: the key `value`, or the
secret's only key). A `file:///dir` store reads `/dir/<name>` (one file per secret, as Kubernetes
mounts them); trailing newlines are dropped. Values are never cached across attempts.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from taskexec.core.config import Settings
from taskexec.observability.logs import register_secret
from workers.integration.redact import Redactor

_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class SecretNotFound(LookupError):
    """The reference names no secret (or a key the secret lacks); the message names the reference only."""


class SecretsUnavailable(RuntimeError):
    """The secrets manager could not be reached or answered with a server error (worth a retry)."""


class SecretsDenied(RuntimeError):
    """The secrets manager refused our token."""


class FileSecrets:
    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def read(self, ref: str) -> str:
        if not _FILE_NAME.match(ref):
            raise SecretNotFound(f"unknown secret {ref!r} (a file:// store takes plain file names)")
        path = self.directory / ref
        try:
            return path.read_text().rstrip("\r\n")
        except FileNotFoundError:
            raise SecretNotFound(f"unknown secret {ref!r}") from None
        except OSError as exc:
            raise SecretsUnavailable(f"cannot read secret {ref!r}: {type(exc).__name__}") from None


class VaultSecrets:
    """Vault's KV version 2 engine through hvac (mount `TEL_SECRETS_KV_MOUNT`, token `TEL_SECRETS_TOKEN`)."""

    def __init__(self, url: str, token: str | None, mount: str) -> None:
        import hvac

        self.client = hvac.Client(url=url, token=token, timeout=10)
        self.mount = mount

    def read(self, ref: str) -> str:
        import hvac.exceptions as hx
        import requests

        path, _, key = ref.partition("#")
        if not path or ".." in path.split("/"):
            raise SecretNotFound(f"unknown secret {ref!r}")
        try:
            resp = self.client.secrets.kv.v2.read_secret_version(path=path, mount_point=self.mount,
                                                                 raise_on_deleted_version=True)
        except hx.InvalidPath:
            raise SecretNotFound(f"unknown secret {ref!r}") from None
        except (hx.Forbidden, hx.Unauthorized):
            raise SecretsDenied(f"the secrets manager refused access to {ref!r}") from None
        except (hx.VaultDown, hx.InternalServerError, hx.BadGateway, hx.RateLimitExceeded,
                requests.RequestException) as exc:
            raise SecretsUnavailable(f"secrets manager unavailable ({type(exc).__name__})") from None
        except hx.VaultError as exc:
            raise SecretsUnavailable(f"secrets manager error ({type(exc).__name__})") from None
        data: dict[str, Any] = ((resp or {}).get("data") or {}).get("data") or {}
        if key:
            if key not in data:
                raise SecretNotFound(f"unknown secret {ref!r} (no key {key!r})")
            return str(data[key])
        if "value" in data:
            return str(data["value"])
        if len(data) == 1:
            return str(next(iter(data.values())))
        raise SecretNotFound(f"secret {ref!r} has several keys; name one as {path}#<key>")


_stores: dict[tuple[str, str | None, str], FileSecrets | VaultSecrets] = {}
_lock = threading.Lock()


def store_for(settings: Settings) -> FileSecrets | VaultSecrets:
    """The process's store for the configured `SECRETS_MANAGER_URL`."""
    url = settings.secrets_manager_url
    if not url:
        raise SecretNotFound("a secret is needed but SECRETS_MANAGER_URL is not set")
    token = settings.secrets_token.get_secret_value() if settings.secrets_token else None
    key = (url, token, settings.secrets_kv_mount)
    with _lock:
        if key not in _stores:
            if url.startswith("file://"):
                _stores[key] = FileSecrets(unquote(urlsplit(url).path))
            elif url.startswith(("http://", "https://")):
                _stores[key] = VaultSecrets(url, token, settings.secrets_kv_mount)
            else:
                raise SecretsUnavailable("SECRETS_MANAGER_URL must be http(s):// (Vault KV v2) or file:///dir")
        return _stores[key]


class SecretResolver:
    """Resolves `${secrets.ref}` for one attempt and registers each value with the attempt's redactor."""

    def __init__(self, settings: Settings, redactor: Redactor) -> None:
        self.settings = settings
        self.redactor = redactor

    def __call__(self, ref: str) -> str:
        value = store_for(self.settings).read(ref)
        self.redactor.add(value)
        register_secret(value)  # and mask it in every log line of this process
        return value
