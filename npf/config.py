"""Pipeline configuration: load YAML, fill schema defaults, validate with one-line errors."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

from npf.algos.hparams import json_schema

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """Invalid configuration; the message names the key and the problem on one line."""


def load_schema() -> dict:
    """The config schema, with the algorithm blocks generated from their hyper-parameter dataclasses."""
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    for path, (cls, defaults) in _algorithm_blocks().items():
        parent = schema
        for key in path[:-1]:
            parent = parent["properties"][key]
        block = json_schema(cls, defaults)
        block["description"] = parent["properties"][path[-1]].get("description", block["description"])
        parent["properties"][path[-1]] = block
    return schema


def _algorithm_blocks() -> dict[tuple[str, ...], tuple[type, bool]]:
    """Config blocks holding an algorithm's hyper-parameters: path → (dataclass, fill defaults into
    the config). Only ``experts.sac`` is filled (as it always was); the others stay as written and
    the dataclass supplies what they leave out."""
    from npf.algos.bcq import BCQConfig
    from npf.algos.iql import IQLConfig
    from npf.algos.sac import SACConfig

    return {
        ("experts", "sac"): (SACConfig, True),
        ("offline", "iql"): (IQLConfig, False),
        ("offline", "bcq"): (BCQConfig, False),
        ("online", "sac"): (SACConfig, False),
        ("online", "dapd_ablation", "sac"): (SACConfig, False),
    }


def _fill_defaults(instance: dict, schema: dict) -> None:
    props = schema.get("properties", {})
    for key, sub in props.items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if isinstance(instance.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(instance[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict) and extra.get("type") == "object":  # e.g. custom_suites.<name>.tasks.<task>
        for key, value in instance.items():
            if key not in props and isinstance(value, dict):
                _fill_defaults(value, extra)


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
    _reject_nan(cfg, "")
    schema = load_schema()
    _fill_defaults(cfg, schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(f"config: {_describe(errors[0])}")
    _check_semantics(cfg)
    return cfg


def _reject_nan(value, where: str) -> None:
    """NaN compares false with every bound, so the schema's minimum / maximum would let it through."""
    if isinstance(value, float) and value != value:
        raise ConfigError(f"config: {where or '<top>'}: nan is not a number")
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, sub in items:
        _reject_nan(sub, f"{where}.{key}" if where else str(key))


def _check_directories(cfg: dict) -> None:
    for key in ("results_dir", "reports_dir"):
        if not cfg[key].strip():
            raise ConfigError(f"config: {key}: {cfg[key]!r} is empty (outputs would be planned at the filesystem root)")


PER_SUITE_BLOCKS = ("experts", "datasets", "offline")


def section(cfg: dict, block: str, suite: str) -> dict:
    """``cfg[block]`` with ``cfg[block]["per_suite"][suite]`` merged over it.

    Also registers the config's custom suites in this process (cheap after the first call), so a
    stage that reads its settings through ``section`` / ``suite_tasks`` can make their envs.
    """
    register_suites(cfg)
    base = {k: v for k, v in cfg[block].items() if k != "per_suite"}
    return deep_merge(base, cfg[block].get("per_suite", {}).get(suite, {}))


def offline_section(cfg: dict, suite: str, algo: str) -> dict:
    """The offline settings of one algorithm's runs: ``section(cfg, "offline", suite)`` with
    ``offline.per_algo[algo]`` (seeds, updates, batch size, evaluation and checkpoint intervals) merged over it."""
    off = section(cfg, "offline", suite)
    return deep_merge({k: v for k, v in off.items() if k != "per_algo"}, off.get("per_algo", {}).get(algo, {}))


def register_suites(cfg: dict) -> list[str]:
    """Register ``cfg["custom_suites"]`` with Gymnasium / ``npf.envs`` (idempotent); one-line errors."""
    if not cfg.get("custom_suites"):
        return []
    from npf.envs import register_custom_suites

    try:
        return register_custom_suites(cfg)
    except ValueError as e:
        raise ConfigError(f"config: {str(e).splitlines()[0]}") from None


def _check_suite_names(cfg: dict) -> None:
    """Every suite the config names is built in or declared under ``custom_suites``."""
    from npf.envs import BUILTIN_SUITES

    custom = list(cfg.get("custom_suites") or {})
    known = f"known: {', '.join(BUILTIN_SUITES)}" + (
        f"; custom: {', '.join(custom)}" if custom else "; or declare it under custom_suites"
    )
    ok = set(BUILTIN_SUITES) | set(custom)
    named = [("suites", s) for s in cfg["suites"]]
    named += [(f"{b}.per_suite.{s}", s) for b in PER_SUITE_BLOCKS for s in cfg[b].get("per_suite", {})]
    named += [(f"tasks.{s}", s) for s in cfg["tasks"]]
    named += [("online.suites", s) for s in cfg["online"]["suites"]]
    named += [("online.dapd_ablation.suite", cfg["online"]["dapd_ablation"]["suite"])]
    for where, suite in named:
        if suite not in ok:
            raise ConfigError(f"config: {where}: unknown suite {suite!r} ({known})")


def _resolve_episode_lengths(cfg: dict) -> None:
    """``max_episode_steps: null`` of a custom task → the env's registered limit (shown in MLflow params)."""
    from npf.envs.custom import resolve_tasks

    for suite, decl in cfg["custom_suites"].items():
        try:
            resolved = resolve_tasks(suite, decl)
        except ValueError as e:
            raise ConfigError(f"config: {str(e).splitlines()[0]}") from None
        for task, t in decl["tasks"].items():
            t["max_episode_steps"] = resolved[task].max_episode_steps


def _check_semantics(cfg: dict) -> None:
    from npf.envs import SUITES

    _check_directories(cfg)
    _check_suite_names(cfg)
    _resolve_episode_lengths(cfg)
    register_suites(cfg)
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
        for t in tasks:
            if t not in SUITES[suite]:
                raise ConfigError(f"config: tasks.{suite}: unknown task {t!r} (known: {', '.join(SUITES[suite])})")
    for suite in cfg["suites"]:
        off = section(cfg, "offline", suite)
        episodes = section(cfg, "datasets", suite)["episodes"]
        too_big = [k for k in off["dataset_sizes"] if k > episodes]
        if too_big:
            raise ConfigError(
                f"config: offline.dataset_sizes: {too_big[0]} trajectories per task, but datasets.episodes "
                f"is {episodes} (suite {suite})"
            )
        experts = section(cfg, "experts", suite)
        if experts["source"] == "scripted":
            from npf.envs.scripted import SCRIPTED_SUITES

            if suite not in SCRIPTED_SUITES:
                raise ConfigError(
                    f"config: experts.source scripted: suite {suite} has no scripted policies "
                    f"(only {', '.join(SCRIPTED_SUITES)}); use source sac for it (per_suite)"
                )
            continue  # no SAC experts to pick a seed from
        seed = section(cfg, "datasets", suite)["expert_seed"]
        if seed not in experts["seeds"]:
            raise ConfigError(f"config: datasets.expert_seed {seed} is not in experts.seeds (suite {suite})")
    _check_online(cfg)
    if not cfg["suites"] and not online_runs(cfg) and not cfg["online"]["dapd_ablation"]["variants"]:
        raise ConfigError(
            "config: suites is empty and online.methods / online.dapd_ablation.variants name no "
            "online run: nothing to do"
        )


def online_runs(cfg: dict) -> list[tuple[str, str, int]]:
    """``(suite, method, seed)`` of every online training run the config asks for (the no-pretrain
    SAC+NPF run is added for Fig. 4 when ``grad_norm_ablation`` and ``pretrain_steps > 0``)."""
    o = cfg["online"]
    runs = []
    for suite in o["suites"]:
        for seed in o["seeds"]:
            runs += [(suite, m, seed) for m in o["methods"]]
            if "sac-npf" in o["methods"] and o["grad_norm_ablation"] and o["pretrain_steps"] > 0:
                runs.append((suite, "sac-npf-nopretrain", seed))
    return runs


def _check_online(cfg: dict) -> None:
    """What the schema cannot say about the ``online`` block (its types and ranges it does say)."""
    from npf.envs import SUITES

    o, a = cfg["online"], cfg["online"]["dapd_ablation"]
    if o["learning_starts"] >= o["total_steps"]:
        raise ConfigError(
            f"config: online.learning_starts ({o['learning_starts']}) must be below online.total_steps "
            f"({o['total_steps']})"
        )
    _check_sac_batch_size(o["sac"], o["batch_size"], "online.sac")
    if a["suite"] not in SUITES:
        raise ConfigError(f"config: online.dapd_ablation.suite: unknown suite {a['suite']!r}")
    for t in a["tasks"]:
        if t not in SUITES[a["suite"]]:
            raise ConfigError(
                f"config: online.dapd_ablation.tasks: unknown task {t!r} for suite {a['suite']!r} "
                f"(known: {', '.join(SUITES[a['suite']])})"
            )
    if a["variants"]:
        batch = o["batch_size"] if a["batch_size"] is None else a["batch_size"]
        _check_sac_batch_size({**o["sac"], **a["sac"]}, batch, "online.dapd_ablation.sac")
        starts = o["learning_starts"] if a["learning_starts"] is None else a["learning_starts"]
        total = o["total_steps"] if a["total_steps"] is None else a["total_steps"]
        if starts >= total:
            raise ConfigError(
                f"config: online.dapd_ablation: learning_starts ({starts}) must be below total_steps ({total})"
            )


def _check_sac_batch_size(sac: dict, batch_size: int, where: str) -> None:
    if "batch_size" in sac and sac["batch_size"] != batch_size:
        raise ConfigError(f"config: {where}.batch_size: set the batch size with the block's batch_size key, not in sac")


def pathway_backend(cfg: dict) -> str:
    """How NPF's masked layers compute (top-level ``pathway_backend``; see npf.pathways.backends)."""
    return cfg["pathway_backend"]


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
    """The configured tasks of a suite: ``tasks.<suite>``, else all of the suite's tasks."""
    from npf.envs import SUITES

    register_suites(cfg)
    if suite not in SUITES:
        raise ConfigError(f"config: unknown suite {suite!r} (known: {', '.join(SUITES)})")
    return list(cfg["tasks"].get(suite, SUITES[suite]))
