"""Datasets on disk (round trip, one-line errors naming the file, atomic writes), the replay
buffer, and episode collection checked against a replay in a fresh environment."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from npf.data import SCHEMA_VERSION, DatasetError, ReplayBuffer, load_dataset, save_dataset
from npf.envs import make_env
from npf.stages.dataset import collect_episodes

torch.set_num_threads(1)

OBS, ACT, T = 4, 2, 30


def make_arrays(n: int = T, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n + 1, OBS)).astype(np.float32)
    timeouts = np.zeros(n, bool)
    if n:
        timeouts[n // 2 - 1 :: n // 2] = True
    return {
        "observations": obs[:-1].copy(),
        "actions": rng.uniform(-1, 1, size=(n, ACT)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "next_observations": obs[1:].copy(),
        "terminals": np.zeros(n, bool),
        "timeouts": timeouts,
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_raw(npz: Path, arrays: dict, manifest_extra: dict | None = None) -> None:
    """Write a dataset bypassing save_dataset's validation, with a manifest whose sha matches."""
    with open(npz, "wb") as f:
        np.savez(f, **arrays)
    manifest = {"schema_version": SCHEMA_VERSION, "sha256": sha256(npz), "counts": {}}
    manifest.update(manifest_extra or {})
    npz.with_suffix(".json").write_text(json.dumps(manifest))


def assert_one_line_naming(err: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "\r" not in msg, msg
    assert str(path) in msg, f"message does not name {path}: {msg}"
    return msg


def load_error(npz: Path, named: Path, **kwargs) -> str:
    """``load_dataset(npz)`` fails with a one-line DatasetError naming ``named``; its message."""
    with pytest.raises(DatasetError) as e:
        load_dataset(npz, **kwargs)
    return assert_one_line_naming(e, named)


def flip_middle_bytes(path: Path) -> None:
    """Corrupt the file in place: invert 8 bytes in its middle."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 8] = bytes(b ^ 0xFF for b in data[mid : mid + 8])
    path.write_bytes(bytes(data))


@contextlib.contextmanager
def editing_manifest(npz: Path):
    """Yields the dataset's manifest as a dict; writes it back (as JSON) after the block."""
    mpath = npz.with_suffix(".json")
    m = json.loads(mpath.read_text())
    yield m
    mpath.write_text(json.dumps(m))


@pytest.fixture
def saved(tmp_path):
    npz = tmp_path / "forward.npz"
    arrays = make_arrays()
    manifest = save_dataset(npz, arrays, {"suite": "cheetah", "task": "forward", "counts": {"episodes": 2}})
    return npz, arrays, manifest


# ---------------------------------------------------------------- round trip


def test_round_trip(saved):
    npz, arrays, manifest = saved
    assert sorted(os.listdir(npz.parent)) == ["forward.json", "forward.npz"]
    ds = load_dataset(npz)
    assert set(ds.arrays) == set(arrays)
    for k, v in arrays.items():
        assert ds.arrays[k].dtype == v.dtype, k
        np.testing.assert_array_equal(ds.arrays[k], v, err_msg=k)
    m = ds.manifest
    assert m == manifest == json.loads(npz.with_suffix(".json").read_text())
    assert m["schema_version"] == SCHEMA_VERSION == 1
    assert m["sha256"] == sha256(npz)
    assert m["suite"] == "cheetah" and m["task"] == "forward"
    assert m["counts"] == {"episodes": 2, "transitions": T, "obs_dim": OBS, "act_dim": ACT}
    assert len(ds) == T and ds.obs_dim == OBS and ds.act_dim == ACT
    # the file is a plain (uncompressed) npz readable without npf
    with np.load(npz) as z:
        np.testing.assert_array_equal(z["rewards"], arrays["rewards"])


# ---------------------------------------------------------------- bad files


def test_missing_npz(saved):
    npz, _, _ = saved
    npz.unlink()
    assert "not found" in load_error(npz, npz)


def test_missing_manifest(saved):
    npz, _, _ = saved
    npz.with_suffix(".json").unlink()
    load_error(npz, npz.with_suffix(".json"))


@pytest.mark.parametrize("verify_checksum", [True, False])
def test_truncated_npz(saved, verify_checksum):
    npz, _, _ = saved
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2])
    # make the manifest agree with the truncated file: only the truncation itself can be detected
    with editing_manifest(npz) as m:
        m["sha256"] = sha256(npz)
    load_error(npz, npz, verify_checksum=verify_checksum)


def test_truncated_npz_is_caught_by_checksum(saved):
    npz, _, _ = saved
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2])
    assert "sha256" in load_error(npz, npz)


def test_corrupted_bytes(saved):
    npz, _, _ = saved
    flip_middle_bytes(npz)
    assert "sha256" in load_error(npz, npz)


@pytest.mark.parametrize(
    "key,bad",
    [
        ("next_observations", lambda a: a["next_observations"][:, :-1]),  # obs dim differs
        ("actions", lambda a: a["actions"][:-1]),  # one row short
        ("rewards", lambda a: a["rewards"][:, None]),  # [T, 1] instead of [T]
        ("terminals", lambda a: np.stack([a["terminals"]] * 2, 1)),
    ],
)
def test_wrong_shape(tmp_path, key, bad):
    npz = tmp_path / "d.npz"
    arrays = make_arrays()
    arrays[key] = bad(arrays)
    write_raw(npz, arrays)
    msg = load_error(npz, npz)
    assert key in msg and "shape" in msg


@pytest.mark.parametrize(
    "key,dtype",
    [("rewards", np.float64), ("observations", np.float16), ("terminals", np.float32), ("timeouts", np.int64)],
)
def test_wrong_dtype(tmp_path, key, dtype):
    npz = tmp_path / "d.npz"
    arrays = make_arrays()
    arrays[key] = arrays[key].astype(dtype)
    write_raw(npz, arrays)
    msg = load_error(npz, npz)
    assert key in msg and "dtype" in msg


def test_missing_array(tmp_path):
    npz = tmp_path / "d.npz"
    arrays = make_arrays()
    del arrays["timeouts"]
    write_raw(npz, arrays)
    assert "timeouts" in load_error(npz, npz)


@pytest.mark.parametrize("key,value", [("rewards", np.nan), ("observations", np.inf), ("actions", -np.inf)])
def test_non_finite(tmp_path, key, value):
    npz = tmp_path / "d.npz"
    arrays = make_arrays()
    arrays[key][3] = value
    write_raw(npz, arrays)
    assert key in load_error(npz, npz)


def test_manifest_not_json(saved):
    npz, _, _ = saved
    mpath = npz.with_suffix(".json")
    mpath.write_text('{"schema_version": 1, "sha256": ')  # cut short
    assert "JSON" in load_error(npz, mpath)


def test_manifest_binary_garbage(saved):
    npz, _, _ = saved
    mpath = npz.with_suffix(".json")
    mpath.write_bytes(b"\xff\xfe\x00garbage\n\n")
    load_error(npz, mpath)


@pytest.mark.parametrize("text", ["[1, 2]", "null", '"schema_version"', "1"])
def test_manifest_not_an_object(saved, text):
    npz, _, _ = saved
    mpath = npz.with_suffix(".json")
    mpath.write_text(text)
    load_error(npz, mpath)


def test_corrupted_bytes_without_checksum(saved):
    """Even without the sha256 check, the zip's own CRC/headers catch flipped bytes."""
    npz, _, _ = saved
    flip_middle_bytes(npz)
    load_error(npz, npz, verify_checksum=False)


@pytest.mark.parametrize("version", [2, 0, None, "1"])
def test_wrong_schema_version(saved, version):
    npz, _, _ = saved
    with editing_manifest(npz) as m:
        if version is None:
            del m["schema_version"]
        else:
            m["schema_version"] = version
    assert "schema_version" in load_error(npz, npz.with_suffix(".json"))


def test_transition_count_mismatch(saved):
    npz, _, _ = saved
    with editing_manifest(npz) as m:
        m["counts"]["transitions"] = T + 1
    load_error(npz, npz)


def test_empty_dataset(tmp_path):
    npz = tmp_path / "d.npz"
    write_raw(npz, make_arrays(n=0))
    assert "empty" in load_error(npz, npz)


# ---------------------------------------------------------------- atomic save


@pytest.mark.parametrize("breakage", ["nan", "dtype", "empty", "missing"])
def test_save_invalid_arrays_writes_nothing(tmp_path, breakage):
    npz = tmp_path / "sub" / "d.npz"
    arrays = make_arrays(n=0) if breakage == "empty" else make_arrays()
    if breakage == "nan":
        arrays["rewards"][0] = np.nan
    elif breakage == "dtype":
        arrays["actions"] = arrays["actions"].astype(np.float64)
    elif breakage == "missing":
        del arrays["next_observations"]
    with pytest.raises(DatasetError) as e:
        save_dataset(npz, arrays, {})
    assert_one_line_naming(e, npz)
    assert not npz.exists() and not npz.with_suffix(".json").exists()
    assert not npz.parent.exists() or os.listdir(npz.parent) == []


def test_crash_while_writing_npz_leaves_nothing(tmp_path, monkeypatch):
    npz = tmp_path / "d.npz"

    def crash(file, *args, **kwargs):
        file.write(b"PK\x03\x04 half of a zip")  # some bytes reach the disk, then the process dies
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        save_dataset(npz, make_arrays(), {})
    assert os.listdir(tmp_path) == []  # no .npz, no .json, no temp file


def test_crash_replacing_an_existing_dataset_keeps_the_old_one(saved, monkeypatch):
    npz, arrays, _manifest = saved
    before = {p: p.read_bytes() for p in npz.parent.iterdir()}

    def crash(file, *args, **kwargs):
        file.write(b"partial")
        raise OSError("killed")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError):
        save_dataset(npz, make_arrays(seed=1), {})
    assert {p: p.read_bytes() for p in npz.parent.iterdir()} == before
    np.testing.assert_array_equal(load_dataset(npz).arrays["rewards"], arrays["rewards"])


def test_crash_before_manifest_leaves_an_incomplete_dataset(tmp_path, monkeypatch):
    """The manifest is written last: if writing it fails, load_dataset reports the dataset incomplete."""
    npz = tmp_path / "d.npz"
    import npf.data

    def crash(*a, **k):
        raise OSError("killed")

    monkeypatch.setattr(npf.data.json, "dumps", crash)
    with pytest.raises(OSError):
        save_dataset(npz, make_arrays(), {})
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["d.npz"]  # no manifest, no temp file
    assert "incomplete" in load_error(npz, npz.with_suffix(".json"))


# ---------------------------------------------------------------- replay buffer


def rows(start: int, k: int) -> dict[str, np.ndarray]:
    i = np.arange(start, start + k, dtype=np.float32)
    return {
        "obs": np.stack([i, -i], 1),
        "act": i[:, None] * 10,
        "rew": i + 0.5,
        "next_obs": np.stack([i + 1, -i - 1], 1),
        "done": (i % 2 == 0).astype(np.float32),
    }


def test_replay_buffer_ring_wraps():
    buf = ReplayBuffer(5, obs_dim=2, act_dim=1)
    buf.add(**rows(0, 3))
    assert (buf.ptr, buf.size) == (3, 3)
    buf.add(**rows(3, 4))  # items 0..6; capacity 5: slots hold 5, 6, 2, 3, 4
    assert (buf.ptr, buf.size) == (2, 5)
    expected_item = np.array([5, 6, 2, 3, 4], np.float32)
    np.testing.assert_array_equal(buf.data["obs"].numpy(), np.stack([expected_item, -expected_item], 1))
    np.testing.assert_array_equal(buf.data["act"].numpy()[:, 0], expected_item * 10)
    np.testing.assert_array_equal(buf.data["rew"].numpy()[:, 0], expected_item + 0.5)
    np.testing.assert_array_equal(buf.data["next_obs"].numpy()[:, 0], expected_item + 1)
    np.testing.assert_array_equal(buf.data["done"].numpy()[:, 0], (expected_item % 2 == 0).astype(np.float32))
    # samples only ever return stored rows, consistent across keys
    s = buf.sample(64, torch.Generator().manual_seed(0))
    assert s["obs"].shape == (64, 2) and s["rew"].shape == (64, 1)
    assert set(s["act"][:, 0].tolist()) <= set((expected_item * 10).tolist())
    torch.testing.assert_close(s["rew"][:, 0], s["obs"][:, 0] + 0.5)


def test_replay_buffer_samples_only_filled_rows():
    buf = ReplayBuffer(100, obs_dim=2, act_dim=1)
    buf.add(**rows(1, 3))
    s = buf.sample(200, torch.Generator().manual_seed(1))
    assert set(s["obs"][:, 0].tolist()) == {1.0, 2.0, 3.0}


@pytest.mark.parametrize("filled", [3, 8])  # partially filled, and wrapped
def test_replay_buffer_state_round_trip(filled):
    a = ReplayBuffer(5, obs_dim=2, act_dim=1)
    a.add(**rows(0, filled))
    b = ReplayBuffer(5, obs_dim=2, act_dim=1)
    b.load_state_dict(a.state_dict())
    assert (b.ptr, b.size) == (a.ptr, a.size)
    for k in a.data:
        assert torch.equal(a.data[k][: a.size], b.data[k][: b.size]), k
    # identical samples and identical future after more additions
    assert all(
        torch.equal(x, y)
        for x, y in zip(
            a.sample(16, torch.Generator().manual_seed(3)).values(),
            b.sample(16, torch.Generator().manual_seed(3)).values(),
        )
    )
    a.add(**rows(100, 4))
    b.add(**rows(100, 4))
    assert (b.ptr, b.size) == (a.ptr, a.size)
    for k in a.data:
        assert torch.equal(a.data[k], b.data[k]), k


def test_replay_buffer_capacity_mismatch():
    a = ReplayBuffer(5, obs_dim=2, act_dim=1)
    a.add(**rows(0, 2))
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(6, obs_dim=2, act_dim=1).load_state_dict(a.state_dict())


def test_replay_buffer_from_dataset(saved):
    npz, arrays, _ = saved
    buf = ReplayBuffer.from_dataset(load_dataset(npz))
    assert buf.size == T
    np.testing.assert_array_equal(buf.data["obs"].numpy(), arrays["observations"])
    np.testing.assert_array_equal(buf.data["rew"].numpy()[:, 0], arrays["rewards"])
    np.testing.assert_array_equal(buf.data["done"].numpy()[:, 0], arrays["terminals"].astype(np.float32))


# ---------------------------------------------------------------- episode collection


def scripted_policy(obs: np.ndarray) -> np.ndarray:
    """A fixed, observation-dependent gait (so trajectories differ between episodes)."""
    return np.tanh(2.0 * np.sin(3.0 * obs[:, 2:8] + obs[:, 8:14])).astype(np.float32)


def test_collect_episodes_against_replay():
    episodes, n_envs, seed, H = 3, 2, 77, 1000
    envs = [make_env("cheetah", "forward") for _ in range(n_envs)]
    d = collect_episodes(scripted_policy, envs, episodes, seed)
    n = episodes * H
    assert len(d["rewards"]) == n
    for k in ("observations", "actions", "next_observations", "terminals", "timeouts"):
        assert len(d[k]) == n, k
    assert d["observations"].shape == (n, 17) and d["actions"].shape == (n, 6)
    assert len(d["episode_returns"]) == episodes
    assert not d["terminals"].any()
    ends = np.flatnonzero(d["timeouts"])
    np.testing.assert_array_equal(ends, np.arange(H - 1, n, H))
    # within an episode, s' of one transition is s of the next
    within = np.ones(n - 1, bool)
    within[ends[:-1]] = False
    np.testing.assert_array_equal(d["next_observations"][:-1][within], d["observations"][1:][within])
    assert not np.array_equal(d["next_observations"][ends[0]], d["observations"][ends[0] + 1])
    # quota: env 0 runs episodes 0 and 1, env 1 runs episode 0; arrays are concatenated per env
    order = [(0, 0), (0, 1), (1, 0)]
    returns = []
    for block, (env_index, k) in enumerate(order):
        sl = slice(block * H, (block + 1) * H)
        ep_seed = int(np.random.SeedSequence([seed, env_index, k]).generate_state(1)[0])
        env = make_env("cheetah", "forward")
        o, _ = env.reset(seed=ep_seed)
        np.testing.assert_array_equal(np.asarray(o, np.float32), d["observations"][sl][0])
        rews = []
        for t, a in enumerate(d["actions"][sl]):
            o, r, term, trunc, _ = env.step(a)
            rews.append(r)
            assert not term and trunc == (t == H - 1)
        np.testing.assert_array_equal(np.asarray(rews, np.float32), d["rewards"][sl])
        np.testing.assert_array_equal(np.asarray(o, np.float32), d["next_observations"][sl][-1])
        returns.append(sum(rews))
        env.close()
    # actions are the policy's on the recorded observations
    np.testing.assert_allclose(d["actions"], scripted_policy(d["observations"]), rtol=0, atol=1e-6)
    np.testing.assert_allclose(sorted(d["episode_returns"]), sorted(returns), rtol=1e-6)
    assert len(set(np.round(returns, 3))) == episodes  # three distinct episodes, not one repeated
