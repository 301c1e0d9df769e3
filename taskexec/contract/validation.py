"""Validation of definitions and payloads: JSON Schema 2020-12, per-type config, operator ceilings."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import ValidationError

from taskexec.contract.schemas import CONFIG_MODELS, AutomatedConfig, DefinitionIn
from taskexec.core.config import Settings
from taskexec.core.constants import TaskType
from taskexec.core.exceptions import ValidationFailed
from taskexec.core.integration_spec import check_integration
from taskexec.core.limits import parse_cpu, parse_memory


def pydantic_details(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """Turn pydantic errors into `[{field, message}]` with camelCase dotted paths."""
    out = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"] if p != "body")
        field = f"{prefix}.{path}" if prefix and path else (prefix or path or "body")
        out.append({"field": field, "message": err["msg"]})
    return out


def check_schema(schema: dict[str, Any], field: str) -> None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValidationFailed(
            f"{field} is not a valid JSON Schema (draft 2020-12)",
            details=[{"field": field + _path(exc.path), "message": exc.message}],
        ) from None


# What a failed `format` says, here and in the web inbox's form (api/static/inbox/formats.js holds the same
# table; tests/unit/test_formats.py keeps the two equal). Formats not listed: "must be a valid <format>".
FORMAT_MESSAGES: dict[str, str] = {
    "email": "must be an email address",
    "idn-email": "must be an email address",
    "date": "must be a date (YYYY-MM-DD)",
    "date-time": "must be a date and time with a UTC offset (RFC 3339, e.g. 2024-05-01T09:30:00Z)",
    "time": "must be a time with a UTC offset (e.g. 09:30:00Z)",
    "uri": "must be an absolute URI (e.g. https://example.com/x)",
    "uri-reference": "must be a URI reference",
    "uuid": "must be a UUID",
    "ipv4": "must be an IPv4 address",
    "ipv6": "must be an IPv6 address",
    "hostname": "must be a host name",
    "duration": "must be an ISO 8601 duration (e.g. P3D)",
}
# jsonschema's checker for every format its installed extras support (jsonschema[format-nongpl]).
FORMAT_CHECKER = Draft202012Validator.FORMAT_CHECKER


def format_message(fmt: str) -> str:
    return FORMAT_MESSAGES.get(fmt, f"must be a valid {fmt}")


def schema_errors(schema: dict[str, Any], instance: Any, field: str) -> list[dict[str, str]]:
    """Every place `instance` fails `schema` (formats included), as `{field, message}` under `field`.

    A missing required property is reported at its own path (`output.score: is required`), so a form can show
    it next to the field.
    """
    out: list[dict[str, str]] = []
    validator = _validator(schema)
    for err in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        path = field + _path(err.absolute_path)
        if err.validator == "required" and isinstance(err.instance, dict):
            out += [{"field": f"{path}.{name}", "message": "is required"}
                    for name in err.validator_value if name not in err.instance]
        elif err.validator == "format":
            out.append({"field": path, "message": format_message(str(err.validator_value))})
        else:
            out.append({"field": path, "message": err.message})
    return out[:50]


def validate_instance(schema: dict[str, Any], instance: Any, field: str) -> None:
    """Raise 422 listing every field path where `instance` fails `schema` (formats included)."""
    errors = schema_errors(schema, instance, field)
    if errors:
        raise ValidationFailed(f"{field} does not match the schema", details=errors)


_VALIDATORS: dict[int, tuple[dict[str, Any], Draft202012Validator]] = {}
_VALIDATOR_CACHE_SIZE = 512


def _validator(schema: dict[str, Any]) -> Draft202012Validator:
    """A validator per schema object: the schemas of cached definitions are validated against again and
    again, and building a validator costs more than most validations. Keyed by identity; the entry keeps
    the schema alive, so its id cannot be reused while cached."""
    hit = _VALIDATORS.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    validator = Draft202012Validator(schema, format_checker=FORMAT_CHECKER)
    if len(_VALIDATORS) >= _VALIDATOR_CACHE_SIZE:
        _VALIDATORS.clear()
    _VALIDATORS[id(schema)] = (schema, validator)
    return validator


def _path(parts: Any) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def validate_execution_config(
    task_type: TaskType, config: dict[str, Any], settings: Settings, field: str = "executionConfig"
) -> dict[str, Any]:
    """Validate a type's executionConfig, rejecting limits above the operator's ceilings (422)."""
    model = CONFIG_MODELS[task_type]
    try:
        parsed = model.model_validate(config)
    except ValidationError as exc:
        raise ValidationFailed("invalid executionConfig", details=pydantic_details(exc, field)) from None
    if isinstance(parsed, AutomatedConfig):
        _check_ceilings(parsed, settings, field)
    dumped = parsed.model_dump(by_alias=True, exclude_none=True)
    if task_type is TaskType.INTEGRATION:
        check_integration(dumped, field)
    return dumped


def _check_ceilings(cfg: AutomatedConfig, settings: Settings, field: str) -> None:
    problems = []
    res = cfg.resource_requirements
    if res is not None:
        if res.cpu is not None and parse_cpu(res.cpu) > settings.sandbox_max_cpu:
            problems.append(("resourceRequirements.cpu", f"above the ceiling of {settings.sandbox_max_cpu} cores"))
        max_mem = parse_memory(settings.sandbox_max_memory)
        if res.memory is not None and parse_memory(res.memory) > max_mem:
            problems.append(("resourceRequirements.memory", f"above the ceiling of {settings.sandbox_max_memory}"))
        if res.timeout_seconds is not None and res.timeout_seconds > settings.executor_max_timeout_s:
            problems.append(
                ("resourceRequirements.timeoutSeconds", f"above the ceiling of {settings.executor_max_timeout_s}s")
            )
    if cfg.network and cfg.network.outbound_access and not settings.sandbox_allow_network:
        problems.append(("network.outboundAccess", "outbound network access is not allowed by the operator policy"))
    if problems:
        raise ValidationFailed(
            "executionConfig exceeds operator limits",
            details=[{"field": f"{field}.{name}", "message": msg} for name, msg in problems],
        )


def validate_definition(body: DefinitionIn, settings: Settings) -> dict[str, Any]:
    """Full definition check; returns the normalised executionConfig."""
    check_schema(body.input_schema, "inputSchema")
    check_schema(body.output_schema, "outputSchema")
    if body.timeout is not None and body.timeout > settings.executor_max_timeout_s * 1000:
        raise ValidationFailed(
            "timeout exceeds operator limits",
            details=[{"field": "timeout",
                      "message": f"above the ceiling of {settings.executor_max_timeout_s * 1000} ms"}],
        )
    config = validate_execution_config(body.type, body.execution_config, settings)
    if body.type is TaskType.MANUAL:
        _check_manual(config, body.output_schema)
    return config


def _check_manual(config: dict[str, Any], output_schema: dict[str, Any]) -> None:
    """formSchema is a JSON Schema; an AUTO_COMPLETE escalation's output must satisfy the outputSchema."""
    if config.get("formSchema") is not None:
        check_schema(config["formSchema"], "executionConfig.formSchema")
    escalation = config.get("escalation") or {}
    if escalation.get("action") == "AUTO_COMPLETE" and output_schema:
        validate_instance(output_schema, escalation.get("output"), "executionConfig.escalation.output")
