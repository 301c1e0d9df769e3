"""Where the platform's own secrets come from besides plain environment variables.

Each name in `SECRET_SETTINGS` may instead be given as a file, `<NAME>_FILE` (a Docker or Kubernetes
secret, a file a Vault Agent sidecar renders), or read at start-up from Vault's KV version 2 engine
(`TEL_VAULT_ADDR`, `TEL_VAULT_PATH`, token in `TEL_VAULT_TOKEN` or `TEL_VAULT_TOKEN_FILE`), where the
secret's keys are these same names. Precedence: the variable itself, then its file, then Vault; a
variable set both directly and as `_FILE` is refused (which one wins would be a guess).

These are pydantic-settings sources: `Settings()` reads them like the environment, so every process
(router, pools, `taskexec` commands) gets the same values, and a failure stops it naming the variable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

# The settings that hold credentials. DATABASE_URL and CELERY_BROKER_URL carry a password in the URL;
# TEL_DATABASE_PASSWORD and TEL_BROKER_PASSWORD are the passwords alone (put into DATABASE_URL and
# CELERY_BROKER_URL, which can then live in a ConfigMap). TEL_VAULT_TOKEN can come from a file but
# not, obviously, from Vault.
SECRET_SETTINGS = (
    "DATABASE_URL",
    "TEL_DATABASE_PASSWORD",
    "CELERY_BROKER_URL",
    "TEL_BROKER_PASSWORD",
    "TEL_REDIS_URL",
    "TEL_JWT_SECRET",
    "TEL_JWT_SECRET_PREVIOUS",
    "TEL_SERVICE_TOKEN",
    "TEL_WEBHOOK_SECRET",
    "TEL_SECRETS_TOKEN",
)
FILE_ONLY = ("TEL_VAULT_TOKEN",)
FILE_SUFFIX = "_FILE"
MAX_SECRET_FILE_BYTES = 64 * 1024


class SecretSourceError(SystemExit):
    """A secret file or Vault could not be read at start-up; the message names the variable, never a value."""


def read_secret_file(name: str, path: str) -> str:
    """The file's content without trailing newlines (as `echo`, `kubectl create secret` and editors leave them).

    An empty file reads as "not set": an optional secret (the webhook secret, say) can be an empty file
    in a deployment that mounts a fixed set of files; a required one is then reported missing as usual."""
    file = Path(path)
    try:
        if file.stat().st_size > MAX_SECRET_FILE_BYTES:
            raise SecretSourceError(f"invalid configuration:\n  {name}{FILE_SUFFIX}: {path} is larger than "
                                    f"{MAX_SECRET_FILE_BYTES} bytes")
        value = file.read_text(encoding="utf-8").rstrip("\r\n")
    except FileNotFoundError:
        raise SecretSourceError(f"invalid configuration:\n  {name}{FILE_SUFFIX}: no such file {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretSourceError(f"invalid configuration:\n  {name}{FILE_SUFFIX}: cannot read {path} "
                                f"({type(exc).__name__})") from None
    return value


def from_files(environ: os._Environ[str] | dict[str, str] | None = None) -> dict[str, str]:
    """`{NAME: value}` for every secret setting given as `NAME_FILE`."""
    env = os.environ if environ is None else environ
    values: dict[str, str] = {}
    for name in (*SECRET_SETTINGS, *FILE_ONLY):
        path = env.get(name + FILE_SUFFIX)
        if not path:
            continue
        if env.get(name):
            raise SecretSourceError(f"invalid configuration:\n  {name}: set both {name} and {name}{FILE_SUFFIX}; "
                                    "give one of them")
        value = read_secret_file(name, path)
        if value:
            values[name] = value
    return values


def vault_token(environ: os._Environ[str] | dict[str, str]) -> str | None:
    name = "TEL_VAULT_TOKEN"
    if environ.get(name + FILE_SUFFIX):
        return read_secret_file(name, environ[name + FILE_SUFFIX]) or None
    return environ.get(name) or None


def from_vault(environ: os._Environ[str] | dict[str, str] | None = None) -> dict[str, str]:
    """The secret settings stored at `TEL_VAULT_PATH` in Vault's KV v2 mount `TEL_VAULT_KV_MOUNT` (`secret`).

    Keys other than the names of `SECRET_SETTINGS` are ignored (one Vault secret may serve several
    programs). Read once, at start-up: a rotated value is picked up by restarting the process.
    """
    env = os.environ if environ is None else environ
    addr = env.get("TEL_VAULT_ADDR")
    if not addr:
        return {}
    path = env.get("TEL_VAULT_PATH", "").strip("/")
    if not path:
        raise SecretSourceError("invalid configuration:\n  TEL_VAULT_PATH: required with TEL_VAULT_ADDR "
                                "(the KV v2 secret holding the settings, e.g. taskexec/router)")
    mount = env.get("TEL_VAULT_KV_MOUNT") or "secret"
    import hvac
    import hvac.exceptions as hx
    import requests

    client = hvac.Client(url=addr, token=vault_token(env), timeout=10,
                         verify=env.get("TEL_VAULT_CACERT") or True)
    try:
        resp = client.secrets.kv.v2.read_secret_version(path=path, mount_point=mount, raise_on_deleted_version=True)
    except hx.InvalidPath:
        raise SecretSourceError(f"invalid configuration:\n  TEL_VAULT_PATH: no secret {path!r} in mount "
                                f"{mount!r}") from None
    except (hx.Forbidden, hx.Unauthorized):
        raise SecretSourceError("invalid configuration:\n  TEL_VAULT_TOKEN: Vault refused access to "
                                f"{path!r}") from None
    except (hx.VaultError, requests.RequestException) as exc:
        raise SecretSourceError(f"invalid configuration:\n  TEL_VAULT_ADDR: cannot read {path!r} from Vault "
                                f"({type(exc).__name__})") from None
    data: dict[str, Any] = ((resp or {}).get("data") or {}).get("data") or {}
    return {name: str(data[name]) for name in SECRET_SETTINGS if data.get(name) not in (None, "")}


class _Source(PydanticBaseSettingsSource):
    """Feeds `{alias: value}` to Settings for the fields whose alias is a secret setting."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._values: dict[str, str] | None = None

    def load(self) -> dict[str, str]:
        raise NotImplementedError

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        alias = field.validation_alias if isinstance(field.validation_alias, str) else field_name
        return self.values().get(alias), alias, False

    def values(self) -> dict[str, str]:
        if self._values is None:
            self._values = self.load()
        return self._values

    def __call__(self) -> dict[str, Any]:
        known = {f.validation_alias for f in self.settings_cls.model_fields.values()}
        return {name: value for name, value in self.values().items() if name in known}


class SecretFilesSource(_Source):
    """`NAME_FILE` for each secret setting."""

    def load(self) -> dict[str, str]:
        return from_files()


class VaultSource(_Source):
    """Vault KV v2 at start-up, for the secret settings no variable or file gave."""

    def load(self) -> dict[str, str]:
        given = {name for name in SECRET_SETTINGS if os.environ.get(name) or os.environ.get(name + FILE_SUFFIX)}
        if not os.environ.get("TEL_VAULT_ADDR") or given >= set(SECRET_SETTINGS):
            return {}
        return {k: v for k, v in from_vault().items() if k not in given}
