"""Regenerate the dataset part of the bad-input corpus (``tests/bad_inputs/datasets/``).

    .venv/bin/python tests/bad_inputs/make_corpus.py

``datasets/good/`` holds a valid two-task cheetah suite (forward, backward; 17-dim observations,
6-dim actions, 16 transitions each). Every other folder is one bad case: its files replace the
good ones of the same name, the names listed in its ``REMOVE`` file are deleted and those listed in
its ``MKDIR`` file are replaced by empty directories. The table
of cases and the error each must produce is in tests/test_bad_inputs.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent / "datasets"
OBS, ACT, T = 17, 6, 16


def arrays(seed: int, n: int = T, obs: int = OBS) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    o = rng.normal(size=(n + 1, obs)).astype(np.float32)
    timeouts = np.zeros(n, bool)
    timeouts[n // 2 - 1 :: n // 2] = True
    return {
        "observations": o[:-1].copy(),
        "actions": rng.uniform(-1, 1, (n, ACT)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "next_observations": o[1:].copy(),
        "terminals": np.zeros(n, bool),
        "timeouts": timeouts,
    }


def manifest(task: str, npz: Path, a: dict, **over) -> dict:
    n = len(a["rewards"]) if "rewards" in a else 0
    m = {
        "schema_version": 1,
        "suite": "cheetah",
        "task": task,
        "env_id": f"npf/cheetah-{task}-v0",
        "seed": 0,
        "expert": {"path": "corpus", "seed": 0},
        "counts": {"episodes": 2, "transitions": n, "obs_dim": OBS, "act_dim": ACT},
        "returns": {"mean": 100.0, "std": 1.0, "per_episode": [99.0, 101.0]},
        "scores": {"random": -50.0, "expert": 100.0, "expert_deterministic": 110.0},
        "sha256": hashlib.sha256(npz.read_bytes()).hexdigest(),
    }
    m.update(over)
    return m


def write(folder: Path, task: str, a: dict, allow_pickle: bool = False, **over) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    npz = folder / f"{task}.npz"
    with open(npz, "wb") as f:
        np.savez(f, allow_pickle=allow_pickle, **a)
    (folder / f"{task}.json").write_text(json.dumps(manifest(task, npz, a, **over), indent=1))
    return npz


def resha(folder: Path, task: str) -> None:
    """Make the manifest's sha256 match the (damaged) file, so the damage itself is reported."""
    m = json.loads((folder / f"{task}.json").read_text())
    m["sha256"] = hashlib.sha256((folder / f"{task}.npz").read_bytes()).hexdigest()
    (folder / f"{task}.json").write_text(json.dumps(m, indent=1))


def main() -> None:
    shutil.rmtree(ROOT, ignore_errors=True)
    good = ROOT / "good"
    write(good, "forward", arrays(1))
    write(good, "backward", arrays(2))

    def case(name: str) -> Path:
        return ROOT / name

    # truncated: the file was cut in half (copy interrupted); manifest hash of the cut file
    d = case("truncated")
    npz = write(d, "forward", arrays(1))
    npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    resha(d, "forward")
    # corrupted: bytes in the middle of the array data overwritten (zip CRC fails)
    d = case("corrupted_bytes")
    npz = write(d, "forward", arrays(1))
    b = bytearray(npz.read_bytes())
    b[len(b) // 3 : len(b) // 3 + 64] = bytes(range(64))
    npz.write_bytes(bytes(b))
    resha(d, "forward")
    # checksum mismatch: a valid file, but not the one the manifest describes
    d = case("checksum_mismatch")
    write(d, "forward", arrays(1))
    m = json.loads((d / "forward.json").read_text())
    m["sha256"] = "0" * 64
    (d / "forward.json").write_text(json.dumps(m, indent=1))
    # wrong shapes / dtypes / contents (manifest hashes match: the arrays themselves are bad)
    a = arrays(1)
    a["next_observations"] = a["next_observations"][:-1]
    write(case("wrong_shape"), "forward", a)
    a = arrays(1)
    a["actions"] = a["actions"][:, :4]
    write(case("wrong_action_dim"), "forward", a, counts={"transitions": T, "obs_dim": OBS, "act_dim": 4})
    a = arrays(1)
    a["observations"] = a["observations"].astype(np.float64)
    write(case("wrong_dtype"), "forward", a)
    a = arrays(1)
    a["rewards"][7] = np.nan
    write(case("nonfinite_rewards"), "forward", a)
    a = arrays(1)
    a["next_observations"][3, 2] = np.inf
    write(case("inf_observations"), "forward", a)
    a = arrays(1)
    del a["terminals"]
    write(case("missing_array"), "forward", a)
    a = {k: v[:0] for k, v in arrays(1).items()}
    write(case("empty"), "forward", a)
    a = arrays(1)
    a["rewards"] = np.array([object()] * T, dtype=object)  # a pickle inside the npz
    write(case("pickled_object_array"), "forward", a, allow_pickle=True)
    # manifest problems
    d = case("manifest_not_json")
    write(d, "forward", arrays(1))
    (d / "forward.json").write_text('{"schema_version": 1, "sha256": ')
    write(case("schema_version_unknown"), "forward", arrays(1), schema_version=99)
    write(
        case("transition_count_mismatch"),
        "forward",
        arrays(1),
        counts={"transitions": T + 5, "obs_dim": OBS, "act_dim": ACT},
    )
    d = case("missing_manifest")
    d.mkdir(parents=True)
    (d / "REMOVE").write_text("forward.json\n")
    d = case("missing_dataset")
    d.mkdir(parents=True)
    (d / "REMOVE").write_text("forward.npz\nforward.json\n")
    # observations and actions swapped: the arrays agree with each other, not with the manifest
    a = arrays(1)
    a["observations"], a["next_observations"] = (
        a["observations"][:, :ACT].copy(),
        a["next_observations"][:, :ACT].copy(),
    )
    a["actions"] = np.random.default_rng(3).uniform(-1, 1, (T, OBS)).astype(np.float32)
    write(case("obs_act_swapped"), "forward", a)
    a = arrays(1)
    a["actions"][5, 1] = 1.5
    write(case("actions_out_of_range"), "forward", a)
    # the manifest's transition count as a string
    write(
        case("transitions_count_string"),
        "forward",
        arrays(1),
        counts={"transitions": str(T), "obs_dim": OBS, "act_dim": ACT},
    )
    # a lone .npy array renamed to .npz
    d = case("npy_renamed_npz")
    write(d, "forward", arrays(1))
    with open(d / "forward.npz", "wb") as f:
        np.save(f, arrays(1)["observations"])
    resha(d, "forward")
    # a directory where the dataset file or the manifest should be
    for name, target in (("npz_is_directory", "forward.npz"), ("manifest_is_directory", "forward.json")):
        d = case(name)
        d.mkdir(parents=True)
        (d / "MKDIR").write_text(f"{target}\n")
    # the tasks of one suite disagree on the observation size
    write(
        case("obs_dim_mismatch_between_tasks"),
        "backward",
        arrays(2, obs=OBS + 1),
        counts={"transitions": T, "obs_dim": OBS + 1, "act_dim": ACT},
    )
    print(f"wrote {sum(1 for _ in ROOT.rglob('*') if _.is_file())} files under {ROOT}")


if __name__ == "__main__":
    main()
