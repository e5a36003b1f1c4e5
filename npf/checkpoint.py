"""Atomic checkpoints with RNG state, loaded with ``weights_only=True`` (no arbitrary pickle)."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from npf.data import atomic_write_bytes


class CheckpointError(ValueError):
    """A checkpoint cannot be used (message names the file)."""


#: Top-level keys holding replay data rather than weights or training state (expert buffer, DAPD's
#: temporary buffers, online replay chunks): environment data may hold inf, so save/load skip them.
DATA_KEYS = ("buffer", "td", "rows")


def first_non_finite(state, prefix: str = "", floats: bool = True) -> str | None:
    """Dotted name of the first floating tensor (or, with ``floats``, Python float) holding NaN/inf
    in a nested state (dicts, lists, tuples); None when there is none."""
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() and state.numel() and not bool(torch.isfinite(state).all()):
            return prefix or "<tensor>"
        return None
    if isinstance(state, float):
        return None if not floats or math.isfinite(state) else (prefix or "<float>")
    if isinstance(state, Mapping):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return None
    for k, v in items:
        bad = first_non_finite(v, f"{prefix}.{k}" if prefix else str(k), floats)
        if bad:
            return bad
    return None


def _non_finite_weight(state) -> str | None:
    """A non-finite tensor anywhere outside :data:`DATA_KEYS`: a weight outside every pathway is
    invisible to CSR kernels, yet it is in the state and would reach any dense use of it."""
    if isinstance(state, Mapping):
        state = {k: v for k, v in state.items() if k not in DATA_KEYS}
    return first_non_finite(state, floats=False)


def save(state: dict, path: str | os.PathLike) -> None:
    bad = _non_finite_weight(state)
    if bad is not None:
        raise CheckpointError(f"{path}: refusing to save non-finite values in {bad}")
    atomic_write_bytes(Path(path), lambda tmp: torch.save(state, tmp))


def load(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint not found") from None
    except Exception as e:  # truncated zip, foreign pickle, …
        raise CheckpointError(
            f"{path}: not a readable npf checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200]})"
        ) from None
    bad = _non_finite_weight(state)
    if bad is not None:
        raise CheckpointError(f"{path}: non-finite values in {bad}")
    return state


def rng_state() -> dict:
    """Python, NumPy-global and torch RNG states (all weights_only-loadable)."""
    np_state = np.random.get_state()
    return {
        "python": list(random.getstate()[1]),
        "python_version": random.getstate()[0],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(s: dict) -> None:
    random.setstate((s["python_version"], tuple(s["python"]), None))
    n = s["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(s["torch"])
    if s["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def load_matching(module: torch.nn.Module, state: dict, path: str | os.PathLike) -> None:
    """``load_state_dict`` with a one-line error when the checkpoint is from another architecture."""
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).replace("\n", " ")[:300]
        raise CheckpointError(f"{path}: checkpoint does not match the configured network ({first})") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
