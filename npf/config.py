"""Pipeline configuration: load YAML, fill schema defaults, validate with one-line errors."""
from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """Invalid configuration; the message names the key and the problem on one line."""


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _fill_defaults(instance: dict, schema: dict) -> None:
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(instance[key], sub)


def _describe(err: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in err.absolute_path)
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        key = f"{path}.{extra[0]}" if path else extra[0]
        allowed = ", ".join(sorted(err.schema.get("properties", {})))
        return f"unknown key {key!r} (allowed here: {allowed})"
    return f"{path or '<top>'}: {err.message}"


def validate(config: dict | None) -> dict:
    """Return a validated copy of ``config`` with every default filled in."""
    cfg = copy.deepcopy(config or {})
    if not isinstance(cfg, dict):
        raise ConfigError(f"config must be a mapping, got {type(cfg).__name__}")
    schema = load_schema()
    _fill_defaults(cfg, schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(f"config: {_describe(errors[0])}")
    _check_semantics(cfg)
    return cfg


def _check_semantics(cfg: dict) -> None:
    from npf.envs import SUITES

    for suite, tasks in cfg["tasks"].items():
        if suite not in SUITES:
            raise ConfigError(f"config: tasks.{suite}: unknown suite (known: {', '.join(SUITES)})")
        for t in tasks:
            if t not in SUITES[suite]:
                raise ConfigError(f"config: tasks.{suite}: unknown task {t!r} (known: {', '.join(SUITES[suite])})")
    from npf.algos.bcq import BCQConfig
    from npf.algos.iql import IQLConfig

    for name, cls in (("bcq", BCQConfig), ("iql", IQLConfig)):
        try:
            cls.from_dict(cfg["offline"][name], where=f"offline.{name}")
        except (TypeError, ValueError) as e:
            raise ConfigError(f"config: {str(e).splitlines()[0]}") from None
    if cfg["datasets"]["expert_seed"] not in cfg["experts"]["seeds"]:
        raise ConfigError(f"config: datasets.expert_seed {cfg['datasets']['expert_seed']} is not in experts.seeds")


def load(path: str | Path, overrides: dict | None = None) -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if overrides:
        raw = deep_merge(raw, overrides)
    return validate(raw)


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def suite_tasks(cfg: dict, suite: str) -> list[str]:
    from npf.envs import SUITES

    return list(cfg["tasks"].get(suite, SUITES[suite]))
