"""Datasets (on-disk format, validation, normalization) and replay buffers.

Dataset format (schema version 1), one pair of files per task:

``{task}.npz`` — uncompressed NumPy arrays, row i is one transition:
    observations [T, obs_dim] float32, actions [T, act_dim] float32, rewards [T] float32,
    next_observations [T, obs_dim] float32, terminals [T] bool (true MDP terminal),
    timeouts [T] bool (episode cut by the time limit; bootstrap through it).
``{task}.json`` — manifest: schema_version, suite, task, env_id, seed, expert checkpoint,
    counts (transitions, episodes, obs_dim, act_dim), returns (per-episode list, mean, std),
    scores (random, expert) used for normalized scores, sha256 of the .npz.
The manifest is written last: a dataset without one is incomplete.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

SCHEMA_VERSION = 1
ARRAYS = {
    "observations": ("obs", np.float32, 2),
    "actions": ("act", np.float32, 2),
    "rewards": (None, np.float32, 1),
    "next_observations": ("obs", np.float32, 2),
    "terminals": (None, np.bool_, 1),
    "timeouts": (None, np.bool_, 1),
}


class DatasetError(ValueError):
    """A dataset file is missing, truncated, corrupted or malformed (message names the file)."""


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``path``: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, obj) -> None:
    """``obj`` as indented JSON, written atomically (:func:`atomic_write_bytes`)."""
    atomic_write_bytes(Path(path), lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2)))


def save_dataset(npz_path: str | os.PathLike, arrays: dict[str, np.ndarray], manifest: dict) -> dict:
    """Write the arrays and their manifest atomically (manifest last). Returns the manifest."""
    npz_path = Path(npz_path)
    validate_arrays(arrays, str(npz_path))

    def write_npz(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **{k: arrays[k] for k in ARRAYS})

    atomic_write_bytes(npz_path, write_npz)
    manifest = dict(manifest)
    manifest.update(
        schema_version=SCHEMA_VERSION,
        sha256=sha256_file(npz_path),
        counts={
            **manifest.get("counts", {}),
            "transitions": len(arrays["rewards"]),
            "obs_dim": int(arrays["observations"].shape[1]),
            "act_dim": int(arrays["actions"].shape[1]),
        },
    )
    write_json(manifest_path(npz_path), manifest)
    return manifest


def manifest_path(npz_path: str | os.PathLike) -> Path:
    return Path(npz_path).with_suffix(".json")


def validate_arrays(arrays: dict[str, np.ndarray], where: str) -> None:
    """Every array present with its shape and dtype, finite, actions in [-1, 1]."""
    check_array_layout(arrays, where)
    check_array_values(arrays, where)


def check_array_layout(arrays: dict[str, np.ndarray], where: str) -> None:
    missing = [k for k in ARRAYS if k not in arrays]
    if missing:
        raise DatasetError(f"{where}: missing array {missing[0]!r}")
    n = len(arrays["rewards"])
    if n == 0:
        raise DatasetError(f"{where}: dataset is empty")
    dims = {"obs": arrays["observations"].shape[-1], "act": arrays["actions"].shape[-1]}
    for key, (dim, dtype, ndim) in ARRAYS.items():
        a = arrays[key]
        if a.ndim != ndim or a.shape[0] != n or (dim and a.shape[-1] != dims[dim]):
            raise DatasetError(
                f"{where}: array {key!r} has shape {tuple(a.shape)}, expected {(n, dims[dim]) if dim else (n,)}"
            )
        if np.dtype(a.dtype) != np.dtype(dtype):
            raise DatasetError(f"{where}: array {key!r} has dtype {a.dtype}, expected {np.dtype(dtype)}")


def check_array_values(arrays: dict[str, np.ndarray], where: str) -> None:
    for key, (_, dtype, _) in ARRAYS.items():
        if dtype == np.float32 and not np.isfinite(arrays[key]).all():
            raise DatasetError(f"{where}: array {key!r} holds non-finite values (NaN or inf)")
    act = arrays["actions"]
    if (np.abs(act) > 1).any():
        raise DatasetError(
            f"{where}: array 'actions' holds values outside [-1, 1] "
            f"(min {act.min():.4g}, max {act.max():.4g}; actions are stored normalized)"
        )


def check_manifest_counts(arrays: dict[str, np.ndarray], counts, where: str, mpath: Path) -> None:
    """The manifest's transitions / obs_dim / act_dim (when given) are integers equal to the arrays'."""
    if not isinstance(counts, dict):
        raise DatasetError(f"{mpath}: manifest 'counts' is {counts!r}, expected an object")
    actual = {
        "transitions": len(arrays["rewards"]),
        "obs_dim": arrays["observations"].shape[1],
        "act_dim": arrays["actions"].shape[1],
    }
    for key in actual:
        said = counts.get(key)
        if said is not None and (isinstance(said, bool) or not isinstance(said, int)):
            raise DatasetError(
                f"{mpath}: manifest counts.{key} is {said!r} ({type(said).__name__}), expected an integer"
            )
    if counts.get("transitions", actual["transitions"]) != actual["transitions"]:
        raise DatasetError(f"{where}: holds {actual['transitions']} transitions, manifest says {counts['transitions']}")
    sizes = (actual["obs_dim"], actual["act_dim"])
    said = (counts.get("obs_dim", sizes[0]), counts.get("act_dim", sizes[1]))
    if said != sizes:
        raise DatasetError(f"{where}: observations/actions have sizes {sizes}, manifest says {said}")


@dataclass
class Dataset:
    arrays: dict[str, np.ndarray]
    manifest: dict
    path: Path

    def __len__(self) -> int:
        return len(self.arrays["rewards"])

    @property
    def obs_dim(self) -> int:
        return self.arrays["observations"].shape[1]

    @property
    def act_dim(self) -> int:
        return self.arrays["actions"].shape[1]


def load_dataset(npz_path: str | os.PathLike, verify_checksum: bool = True) -> Dataset:
    """Load and validate a dataset; every problem is a one-line DatasetError naming the file."""
    npz_path = Path(npz_path)
    mpath = manifest_path(npz_path)
    for p, what in ((npz_path, "dataset file"), (mpath, "manifest")):
        if p.is_dir():
            raise DatasetError(f"{p}: is a directory, expected the {what}")
    if not npz_path.exists():
        raise DatasetError(f"{npz_path}: dataset file not found")
    if not mpath.exists():
        raise DatasetError(f"{mpath}: manifest not found (the dataset is incomplete)")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{mpath}: manifest is not valid JSON ({e.msg if hasattr(e, 'msg') else e})") from None
    if not isinstance(manifest, dict):
        raise DatasetError(f"{mpath}: manifest is not a JSON object (got {type(manifest).__name__})")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise DatasetError(f"{mpath}: schema_version {manifest.get('schema_version')!r}, expected {SCHEMA_VERSION}")
    if verify_checksum and sha256_file(npz_path) != manifest.get("sha256"):
        raise DatasetError(f"{npz_path}: sha256 does not match the manifest (file changed or corrupted)")
    with open(npz_path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":  # np.load would return the single array of an .npy
        raise DatasetError(f"{npz_path}: a single .npy array, not an .npz archive of the dataset's arrays")
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise DatasetError(f"{npz_path}: cannot read arrays (truncated or corrupted: {e})") from None
    check_array_layout(arrays, str(npz_path))
    check_manifest_counts(arrays, manifest.get("counts", {}), str(npz_path), mpath)
    check_array_values(arrays, str(npz_path))
    return Dataset(arrays, manifest, npz_path)


def first_episodes(ds: Dataset, k: int) -> Dataset:
    """The first ``k`` whole episodes of ``ds`` (rows up to the ``k``-th episode end, a terminal or
    a time-limit cut), for the sample-complexity runs (``offline.dataset_sizes``); the manifest
    (reference scores) is kept. A dataset with fewer than ``k`` episodes is a DatasetError."""
    ends = np.flatnonzero(ds.arrays["terminals"] | ds.arrays["timeouts"])
    if k < 1 or len(ends) < k:
        raise DatasetError(
            f"{ds.path}: holds {len(ends)} whole episodes, {k} requested (offline.dataset_sizes "
            f"may not exceed datasets.episodes)"
        )
    stop = int(ends[k - 1]) + 1
    return Dataset({key: a[:stop] for key, a in ds.arrays.items()}, ds.manifest, ds.path)


class Normalizer:
    """Per-task state normalization with its dataset's mean/std (std floored at 1e-3)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        self.mean = np.asarray(mean, np.float32)
        self.std = np.maximum(np.asarray(std, np.float32), 1e-3)

    @classmethod
    def fit(cls, obs: np.ndarray) -> Normalizer:
        return cls(obs.mean(0), obs.std(0))

    def __call__(self, obs):
        if isinstance(obs, Tensor):
            return (obs - torch.as_tensor(self.mean, device=obs.device)) / torch.as_tensor(self.std, device=obs.device)
        return (obs - self.mean) / self.std

    def state_dict(self) -> dict:
        return {"mean": torch.from_numpy(self.mean), "std": torch.from_numpy(self.std)}

    @classmethod
    def from_state_dict(cls, s: dict) -> Normalizer:
        return cls(s["mean"].numpy(), s["std"].numpy())


class ReplayBuffer:
    """Ring buffer of transitions held as tensors on the training device."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device | str = "cpu"):
        self.capacity, self.device = int(capacity), torch.device(device)
        shapes = {"obs": obs_dim, "act": act_dim, "rew": 1, "next_obs": obs_dim, "done": 1}
        self.data = {k: torch.zeros(self.capacity, d, device=self.device) for k, d in shapes.items()}
        self.ptr, self.size = 0, 0

    def add(self, **batch) -> None:
        """Add k rows: each value is array-like [k, d] (or [k] for rew/done)."""
        k = len(batch["obs"])
        idx = (torch.arange(k, device=self.device) + self.ptr) % self.capacity
        for key, buf in self.data.items():
            v = torch.as_tensor(np.asarray(batch[key]), dtype=torch.float32, device=self.device)
            buf[idx] = v.reshape(k, -1)
        self.ptr = (self.ptr + k) % self.capacity
        self.size = min(self.size + k, self.capacity)

    @classmethod
    def from_dataset(cls, ds: Dataset, device="cpu", normalizer: Normalizer | None = None) -> ReplayBuffer:
        a = ds.arrays
        buf = cls(len(ds), ds.obs_dim, ds.act_dim, device)
        norm = normalizer or (lambda x: x)
        buf.add(
            obs=norm(a["observations"]),
            act=a["actions"],
            rew=a["rewards"],
            next_obs=norm(a["next_observations"]),
            done=a["terminals"].astype(np.float32),
        )
        return buf

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, Tensor]:
        idx = torch.randint(0, self.size, (batch_size,), generator=generator, device=self.device)
        return {k: v[idx] for k, v in self.data.items()}

    def state_dict(self) -> dict:
        return {
            "data": {k: v[: self.size].clone() for k, v in self.data.items()},
            "ptr": self.ptr,
            "size": self.size,
            "capacity": self.capacity,
        }

    def load_state_dict(self, s: dict) -> None:
        if s["capacity"] != self.capacity:
            raise ValueError(f"replay buffer capacity {s['capacity']} in checkpoint, {self.capacity} configured")
        for k, v in s["data"].items():
            self.data[k][: len(v)] = v.to(self.device)
        self.ptr, self.size = int(s["ptr"]), int(s["size"])
