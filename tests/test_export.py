"""Exported per-task policies (npf.export): same actions as the masked global networks, loadable
with ``torch.load(weights_only=True)`` and nothing else, much smaller than the dense networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from npf import checkpoint as ckpt
from npf.algos.bcq import BCQ, BCQConfig
from npf.algos.iql import IQL, IQLConfig
from npf.algos.sac import SAC, SACConfig
from npf.data import Normalizer
from npf.export import EXPORT_FORMAT, PathwayPolicy, export_task_policy
from npf.multitask import MultitaskLearner
from npf.pathways import Pathways

torch.set_num_threads(1)
N, OBS, ACT = 3, 5, 2
TASKS = ["alpha", "beta", "gamma"]


def batches(seed, n=N, B=32):
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "obs": torch.randn(B, OBS, generator=g),
            "act": torch.rand(B, ACT, generator=g) * 2 - 1,
            "rew": torch.randn(B, 1, generator=g),
            "next_obs": torch.randn(B, OBS, generator=g),
            "done": torch.zeros(B, 1),
        }
        for _ in range(n)
    ]


def normalizers():
    g = np.random.default_rng(0)
    return [Normalizer(g.normal(size=OBS), 0.5 + g.random(OBS)) for _ in range(N)]


def trained(algo, keep_ratio=0.1, mask_bias=False, reduce="sum", steps=3):
    pw = Pathways.discover(algo, batches(1), keep_ratio=keep_ratio, mask_bias=mask_bias)
    learner = MultitaskLearner(algo, "npf", N, pw, reduce=reduce)
    for s in range(steps):
        learner.update(batches(10 + s))
    return learner, pw


def write_offline_final(tmp_path, learner, pw, algo_name, norms):
    """What npf.stages.offline.train_offline writes as final.pt."""
    final = {
        "algo": learner.algo.state_dict(),
        "method": "npf",
        "algo_name": algo_name,
        "suite": "toy",
        "tasks": TASKS,
        "seed": 0,
        "normalizers": [n.state_dict() for n in norms],
        "pathways": pw.state_dict(),
    }
    path = tmp_path / "final.pt"
    ckpt.save(final, path)
    return path


def raw_obs(seed, B=17):
    return torch.randn(B, OBS, generator=torch.Generator().manual_seed(seed)) * 2 + 1


@pytest.mark.parametrize("mask_bias", [False, True])
def test_iql_export_matches_masked_global_actor(tmp_path, mask_bias):
    algo = IQL(OBS, ACT, IQLConfig(actor_hidden=[64, 48], critic_hidden=[32, 32], value_hidden=[32, 32]), seed=0)
    learner, pw = trained(algo, mask_bias=mask_bias)
    norms = normalizers()
    final = write_offline_final(tmp_path, learner, pw, "iql", norms)
    for n, task in enumerate(TASKS):
        out = tmp_path / f"{task}.pt"
        info = export_task_policy(final, task, out)
        mask_entries = sum(int(m[n].sum()) for k, m in pw.masks["actor"].items() if k.endswith("weight"))
        assert info["nnz"] == mask_entries
        assert info["dense"] == sum(p.numel() for k, p in algo.actor.named_parameters() if k.endswith("weight"))
        assert info["bytes"] == out.stat().st_size and info["task"] == task
        policy = PathwayPolicy.load(out)
        obs = raw_obs(n)
        ref = learner.act_task(n, norms[n](obs))  # masked global actor, N-task attach
        assert torch.allclose(policy(obs), ref, rtol=1e-5, atol=1e-5)
        full = torch.stack([norms[t](obs) for t in range(N)])
        assert torch.allclose(policy(obs), learner.act(full)[n], rtol=1e-5, atol=1e-5)
        assert policy(obs[0]).shape == (ACT,)  # batch-1 / unbatched observations
        assert torch.allclose(policy(obs[:1])[0], ref[0], rtol=1e-5, atol=1e-5)
        assert policy.act(obs.numpy()).shape == (obs.shape[0], ACT)


def test_export_file_is_weights_only_self_contained_and_small(tmp_path):
    algo = IQL(OBS, ACT, IQLConfig(actor_hidden=[256, 256], critic_hidden=[16], value_hidden=[16]), seed=0)
    learner, pw = trained(algo, keep_ratio=0.05, steps=1)
    final = write_offline_final(tmp_path, learner, pw, "iql", normalizers())
    out = tmp_path / "p.pt"
    info = export_task_policy(final, "beta", out)
    blob = torch.load(out, weights_only=True)  # plain tensors and values only
    assert blob["format"] == EXPORT_FORMAT and blob["algo"] == "iql" and blob["task"] == "beta"
    assert set(blob["nets"]) == {"actor"} and not any("opt" in k for k in blob)

    def tensors(x):
        if isinstance(x, dict):
            return [t for v in x.values() for t in tensors(v)]
        if isinstance(x, list):
            return [t for v in x for t in tensors(v)]
        return [x] if isinstance(x, torch.Tensor) else []

    stored = sum(t.numel() * t.element_size() for t in tensors(blob))
    dense_weights = 4 * info["dense"]
    assert stored < 0.1 * dense_weights
    assert info["bytes"] < 0.1 * info["dense_bytes"]
    for layer in blob["nets"]["actor"]["layers"]:  # the smaller index encoding of each layer
        assert ("mask_zlib" in layer) != ("col" in layer)
        if "col" in layer:
            assert layer["col"].dtype == torch.int16 and layer["crow"].dtype == torch.int32


def test_bcq_export_matches_seeded_bcq_act(tmp_path):
    cfg = BCQConfig(actor_hidden=[32, 24], critic_hidden=[32, 24], vae_hidden=[40, 40], num_samples=6)
    algo = BCQ(OBS, ACT, cfg, seed=0)
    learner, pw = trained(algo)
    norms = normalizers()
    final = write_offline_final(tmp_path, learner, pw, "bcq", norms)
    for n, task in enumerate(TASKS):
        out = tmp_path / f"{task}.pt"
        info = export_task_policy(final, task, out, seed=123)
        assert info["nnz_all"] > info["nnz"] and info["dense_all"] > info["dense"]  # actor + decoder + q1
        policy = PathwayPolicy.load(out)
        assert set(policy.nets) == {"actor", "decoder", "q1"}
        obs = raw_obs(n, B=9)
        pw.task_view(n).attach(algo)  # the masked global networks, task n alone
        algo.generator.manual_seed(123)
        ref = algo.act(norms[n](obs).unsqueeze(0))[0]
        got = policy(obs)
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-5)
        assert torch.equal(policy(obs), got)  # deterministic: the same sample at every call


def test_sac_export_from_online_final(tmp_path):
    algo = SAC(OBS, ACT, SACConfig(hidden=[48, 48, 48]), seed=0)
    learner, pw = trained(algo, reduce="mean")
    final = {
        "format": "npf.online/1",
        "algo": algo.state_dict(),
        "method": "sac-npf",
        "suite": "toy",
        "tasks": TASKS,
        "seed": 0,
        "obs_dim": OBS,
        "act_dim": ACT,
        "sac": {"hidden": [48, 48, 48]},
        "conditioning": "npf",
        "pathways": pw.state_dict(),
    }
    path = tmp_path / "final.pt"
    ckpt.save(final, path)
    out = tmp_path / "sac.pt"
    export_task_policy(path, "gamma", out)
    policy = PathwayPolicy.load(out)
    obs = raw_obs(3)
    ref = learner.act_task(2, obs)  # online runs observe raw states
    assert policy.algo == "sac"
    assert torch.allclose(policy(obs), ref, rtol=1e-5, atol=1e-5)


def test_cli_export_and_errors(tmp_path, capsys):
    from npf.cli import main

    algo = IQL(OBS, ACT, IQLConfig(actor_hidden=[32, 32], critic_hidden=[16], value_hidden=[16]), seed=0)
    learner, pw = trained(algo, steps=1)
    final = write_offline_final(tmp_path, learner, pw, "iql", normalizers())
    assert main(["export", str(final), "alpha", str(tmp_path / "a.pt")]) == 0
    assert "pathway weights of" in capsys.readouterr().out
    assert main(["export", str(final), "delta", str(tmp_path / "d.pt")]) == 1
    assert "not one of the run's tasks" in capsys.readouterr().err
    mt = {"algo": learner.algo.state_dict(), "method": "mt", "algo_name": "iql", "tasks": TASKS}
    ckpt.save(mt, tmp_path / "mt.pt")
    with pytest.raises(ValueError, match="only NPF runs"):
        export_task_policy(tmp_path / "mt.pt", "alpha", tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not an exported npf policy"):
        PathwayPolicy({"format": "something else"})


def test_nonfinite_values_are_refused_by_the_final_loader_and_the_policy_loader(tmp_path):
    algo = IQL(OBS, ACT, IQLConfig(actor_hidden=[32, 32], critic_hidden=[16], value_hidden=[16]), seed=0)
    learner, pw = trained(algo, steps=1)
    final = write_offline_final(tmp_path, learner, pw, "iql", normalizers())
    export_task_policy(final, "alpha", tmp_path / "a.pt")
    saved = torch.load(final, weights_only=True)
    w = saved["algo"]["value"]["0.weight"]
    outside = tuple((~pw.masks["value"]["0.weight"].any(0)).nonzero()[0])  # in no task's pathway
    w[outside] = float("inf")
    torch.save(saved, tmp_path / "inf.pt")
    with pytest.raises(ckpt.CheckpointError, match=r"inf.pt: non-finite values in algo.value.0.weight"):
        export_task_policy(tmp_path / "inf.pt", "alpha", tmp_path / "b.pt")
    export = torch.load(tmp_path / "a.pt", weights_only=True)
    export["nets"]["actor"]["layers"][1]["values"][0] = float("nan")
    torch.save(export, tmp_path / "nan_policy.pt")
    with pytest.raises(ValueError, match=r"nan_policy.pt: exported policy: non-finite weights in layer 1 of actor"):
        PathwayPolicy.load(tmp_path / "nan_policy.pt")
    export = torch.load(tmp_path / "a.pt", weights_only=True)
    export["obs_std"][0] = float("inf")
    with pytest.raises(ValueError, match="non-finite values in obs_std"):
        PathwayPolicy(export)


def test_both_index_encodings_round_trip():
    import zlib

    from npf.export import _csr_layer, _layer_indices

    g = torch.Generator().manual_seed(0)
    w = torch.randn(7, 40, generator=g)
    m = torch.rand(7, 40, generator=g) < 0.2
    m[3] = False  # an empty row
    layer = _csr_layer(w, torch.randn(7), m, None)
    rows, cols = torch.nonzero(m, as_tuple=True)
    crow_ref = torch.cat([torch.zeros(1, dtype=torch.int64), torch.bincount(rows, minlength=7).cumsum(0)])
    as_csr = {"shape": [7, 40], "values": layer["values"], "crow": crow_ref.int(), "col": cols.short()}
    bits = zlib.compress(np.packbits(m.numpy().reshape(-1)).tobytes())
    as_bits = {
        "shape": [7, 40],
        "values": layer["values"],
        "mask_zlib": torch.frombuffer(bytearray(bits), dtype=torch.uint8),
    }
    for enc in (as_csr, as_bits, layer):
        crow, col = _layer_indices(enc, 0)
        assert torch.equal(crow, crow_ref) and torch.equal(col, cols)
    assert torch.equal(layer["values"], w[m])
    with pytest.raises(ValueError, match="inconsistent"):
        _layer_indices({**as_csr, "values": layer["values"][:-1]}, 0)
    with pytest.raises(ValueError, match="corrupt"):
        _layer_indices({**as_bits, "mask_zlib": torch.zeros(5, dtype=torch.uint8)}, 0)
