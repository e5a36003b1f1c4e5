"""Typed hyper-parameter dataclasses as the single source of an algorithm's settings.

Each field of a config dataclass (:class:`~npf.algos.sac.SACConfig`, ``IQLConfig``, ``BCQConfig``)
has a type, a default, an allowed range (given with :func:`hp`) and a docstring (the string literal
under it). :func:`json_schema` turns the class into the JSON schema of its config block, which
:mod:`npf.config` places into the pipeline's schema, so the block is checked, with ranges, before
any job starts; :func:`from_dict` validates a mapping against the same schema and builds the config.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import inspect
import itertools
import textwrap
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

import jsonschema

T = TypeVar("T")


def hp(default, *, ge=None, gt=None, le=None, lt=None, choices=None):
    """A dataclass field with its allowed range: ``ge``/``gt``/``le``/``lt`` bound a number (for a
    ``list[int]`` field: each item, and the list has at least one), ``choices`` lists the values."""
    bounds = {"minimum": ge, "exclusiveMinimum": gt, "maximum": le, "exclusiveMaximum": lt, "enum": choices}
    meta = {"schema": {k: v for k, v in bounds.items() if v is not None}}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring}`` from the string literal under each annotated field of ``cls``."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


_JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean"}


def _type_schema(tp, bounds: dict) -> dict:
    args = typing.get_args(tp)
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union {tp}")
        s = _type_schema(inner[0], bounds)
        return {**s, "type": [s["type"], "null"]}
    if typing.get_origin(tp) is list:
        return {"type": "array", "items": _type_schema(args[0], bounds), "minItems": 1}
    return {"type": _JSON_TYPES[tp], **bounds}


@functools.cache
def _schema(cls: type) -> dict:
    hints, docs = typing.get_type_hints(cls), field_docs(cls)
    props = {}
    for f in dataclasses.fields(cls):
        s = _type_schema(hints[f.name], f.metadata.get("schema", {}))
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        props[f.name] = {**s, "default": default, "description": docs.get(f.name, "")}
    return {
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "description": f"{cls.__name__} ({cls.__module__})",
        "properties": props,
    }


def json_schema(cls: type, defaults: bool = True) -> dict:
    """JSON schema of a config block holding ``cls``'s fields (types, ranges, docstrings as
    descriptions; with ``defaults``, each field's default, filled in by :func:`npf.config.validate`)."""
    s = copy.deepcopy(_schema(cls))
    if not defaults:
        for p in s["properties"].values():
            p["description"] = f"{p['description']} (default {p.pop('default')!r})"
    return s


def from_dict(cls: type[T], d: Mapping[str, Any] | None, where: str) -> T:
    """``cls(**d)`` after validating ``d`` against :func:`json_schema` (one-line ValueError naming
    ``where.<key>``: an unknown key, a wrong type, a value out of range)."""
    d = dict(d or {})
    s = _schema(cls)
    err = next(iter(sorted(jsonschema.Draft7Validator(s).iter_errors(d), key=lambda e: list(e.absolute_path))), None)
    if err is not None:
        if err.validator == "additionalProperties":
            key = sorted(set(d) - set(s["properties"]))[0]
            raise ValueError(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(s['properties']))})")
        path = ".".join(str(p) for p in (where, *err.absolute_path))
        raise ValueError(f"{path}: {err.message}")
    return cls(**d)
