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


PER_SUITE_BLOCKS = ("experts", "datasets", "offline")


def section(cfg: dict, block: str, suite: str) -> dict:
    """``cfg[block]`` with ``cfg[block]["per_suite"][suite]`` merged over it."""
    base = {k: v for k, v in cfg[block].items() if k != "per_suite"}
    return deep_merge(base, cfg[block].get("per_suite", {}).get(suite, {}))


def _check_semantics(cfg: dict) -> None:
    from npf.envs import SUITES

    schema = load_schema()
    for block in PER_SUITE_BLOCKS:
        sub = schema["properties"][block]
        for suite in cfg[block].get("per_suite", {}):
            merged = section(cfg, block, suite)
            _fill_defaults(merged, sub)
            errs = sorted(jsonschema.Draft7Validator(sub).iter_errors(merged), key=lambda e: list(e.absolute_path))
            if errs:
                raise ConfigError(f"config: {block}.per_suite.{suite}: {_describe(errs[0])}")

    for suite, tasks in cfg["tasks"].items():
        if suite not in SUITES:
            raise ConfigError(f"config: tasks.{suite}: unknown suite (known: {', '.join(SUITES)})")
        for t in tasks:
            if t not in SUITES[suite]:
                raise ConfigError(f"config: tasks.{suite}: unknown task {t!r} (known: {', '.join(SUITES[suite])})")
    from npf.algos.bcq import BCQConfig
    from npf.algos.iql import IQLConfig

    for suite in cfg["suites"]:
        off = section(cfg, "offline", suite)
        for name, cls in (("bcq", BCQConfig), ("iql", IQLConfig)):
            try:
                cls.from_dict(off.get(name, {}), where=f"offline.{name}")
            except (TypeError, ValueError) as e:
                raise ConfigError(f"config: {str(e).splitlines()[0]}") from None
        seed = section(cfg, "datasets", suite)["expert_seed"]
        if seed not in section(cfg, "experts", suite)["seeds"]:
            raise ConfigError(f"config: datasets.expert_seed {seed} is not in experts.seeds (suite {suite})")
    from npf.stages.online import check_online_config

    try:
        check_online_config(cfg)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config: {str(e).splitlines()[0]}") from None


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
