"""``compile: auto | on | off``: a compiled update equals the eager one within float rounding on the
same batches, compiles once (never per step), checkpoints load across modes, and ``auto``'s
measurement leaves no trace in the run."""

from __future__ import annotations

import copy

import pytest
import torch
from algo_fixtures import random_batch, snapshot

from npf.algos import compile as compiling
from npf.algos.bcq import BCQ, BCQConfig
from npf.algos.iql import IQL, IQLConfig
from npf.algos.sac import SAC, SACConfig


def sac(seed=0):
    return SAC(5, 3, SACConfig(hidden=[16, 16]), seed=seed)


def iql(seed=0):
    return IQL(
        5,
        3,
        IQLConfig(
            actor_hidden=[16, 16],
            critic_hidden=[16, 16],
            value_hidden=[16, 16],
            lr_schedule="cosine",
            schedule_steps=10,
        ),
        seed=seed,
    )


def bcq(seed=0):
    return BCQ(5, 3, BCQConfig(actor_hidden=[16, 16], critic_hidden=[16, 16], vae_hidden=[16, 16]), seed=seed)


def batches(n, start=0):
    return [random_batch(seed=start + i) for i in range(n)]


def assert_close_states(a, b, tol=1e-4):
    sa, sb = snapshot(a), snapshot(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=tol, atol=tol, msg=k)


def test_unknown_mode_is_one_clear_error():
    with pytest.raises(ValueError, match="compile: unknown value 'yes'"):
        sac().set_compile("yes")


@pytest.mark.parametrize("make", [sac, iql, bcq], ids=["sac", "iql", "bcq"])
def test_compiled_update_equals_eager_within_rounding_and_never_recompiles(make):
    eager, comp = make(), make()
    comp.set_compile("on")
    assert comp.compile_report["compiled"]
    data = batches(6)
    for b in data[:2]:  # first updates compile (SAC: both branches of the delayed actor step)
        m_e, m_c = eager.update(b), comp.update(b)
    with torch.compiler.set_stance("fail_on_recompile"):  # a guard failing per step would raise here
        for b in data[2:]:
            m_e, m_c = eager.update(b), comp.update(b)
    assert m_e.keys() == m_c.keys()
    for k in m_e:
        assert m_c[k] == pytest.approx(m_e[k], rel=1e-4, abs=1e-5), k
    assert_close_states(eager, comp)
    assert not torch.equal(snapshot(eager)["critic.q1.0.weight"], snapshot(make())["critic.q1.0.weight"])
    # the optimizers run the fused kernel when compiled, foreach when eager
    assert all(g["fused"] for o in compiling.optimizers(comp) for g in o.param_groups)
    assert all(g["foreach"] for o in compiling.optimizers(eager) for g in o.param_groups)


def test_checkpoints_load_across_compile_modes():
    """A checkpoint of a compiled SAC resumes an eager one and the other way round: same keys, and
    the resumed run continues like the uninterrupted one."""
    comp = sac()
    comp.set_compile("on")
    for b in batches(2):
        comp.update(b)
    state = copy.deepcopy(comp.state_dict())
    eager = sac(seed=3)
    eager.load_state_dict(state)
    assert eager.state_dict().keys() == state.keys()
    assert all(g["foreach"] and not g["fused"] for g in eager.critic_opt.param_groups)
    back = sac(seed=4)
    back.set_compile("on")
    back.load_state_dict(copy.deepcopy(eager.state_dict()))
    for b in batches(2, start=10):
        comp.update(b), back.update(b), eager.update(b)
    assert torch.equal(snapshot(comp)["critic.q1.0.weight"], snapshot(back)["critic.q1.0.weight"])
    assert_close_states(comp, eager)


@pytest.mark.parametrize("gain,compiled", [(1e9, False), (0.0, True)])
def test_auto_measures_then_continues_as_if_it_had_not(monkeypatch, gain, compiled):
    """auto times eager and compiled updates on the first batch, then restores the state: with
    the eager choice the run is bit for bit the ``off`` run; with the compiled one, the ``on`` run."""
    monkeypatch.setattr(compiling, "MIN_GAIN", gain)
    ref, auto = sac(), sac()
    ref.set_compile("on" if compiled else "off")
    auto.set_compile("auto")
    for b in batches(3):
        ref.update(b), auto.update(b)
    rep = auto.compile_report
    assert rep["compiled"] is compiled and rep["compile_s"] > 0 and rep["eager_ms"] > 0 and rep["compiled_ms"] > 0
    assert auto.num_updates == ref.num_updates == 3
    assert all(torch.equal(x, y) for x, y in zip(snapshot(auto).values(), snapshot(ref).values()))
    assert torch.equal(auto.generator.get_state(), ref.generator.get_state())


def test_config_key_is_validated_and_bare_yaml_booleans_are_modes():
    from pathlib import Path

    from npf.algos.compile import compile_mode
    from npf.config import load

    path = Path(__file__).resolve().parents[1] / "config" / "config.yaml"
    assert load(path)["compile"] == "off"
    assert compile_mode(load(path, {"compile": False})["compile"]) == "off"
    assert compile_mode(True) == "on" and compile_mode("auto") == "auto"
    with pytest.raises(Exception, match="compile"):
        load(path, {"compile": "sometimes"})


def test_npf_masked_update_compiles_once_and_matches_eager():
    """NPF: task n through θ ⊙ m_n, gradients of all tasks summed into θ, one optimizer step; the
    pathway backend runs eagerly inside the compiled loss (opaque to the compiler), so its caches
    never cause a recompile."""
    from npf.multitask import MultitaskLearner
    from npf.pathways import Pathways

    N = 3
    data = [[random_batch(seed=10 * s + n) for n in range(N)] for s in range(5)]
    learners = []
    for mode in ("off", "on"):
        algo = iql()
        pw = Pathways.discover(iql(seed=1), data[0], keep_ratio=0.3)
        learners.append(MultitaskLearner(algo, "npf", N, pw, reduce="sum", backend="dense"))
        algo.set_compile(mode)
    eager, comp = learners
    eager.update(data[0]), comp.update(data[0])
    with torch.compiler.set_stance("fail_on_recompile"):
        for b in data[1:]:
            m_e, m_c = eager.update(b), comp.update(b)
    for k in m_e:
        assert m_c[k] == pytest.approx(m_e[k], rel=1e-4, abs=1e-5), k
    assert_close_states(eager.algo, comp.algo)


@pytest.mark.parametrize("make", [sac, iql, bcq], ids=["sac", "iql", "bcq"])
def test_fused_adam_steps_with_the_fused_kernel_and_stays_within_rounding(make, monkeypatch):
    calls = []
    kernel = torch._fused_adam_
    monkeypatch.setattr(torch, "_fused_adam_", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    foreach, fused = make(), make()
    fused.set_compile("off", fused_adam=True)
    groups = [g for opt in compiling.optimizers(fused) for g in opt.param_groups]
    assert groups and all(g["fused"] and not g["foreach"] for g in groups)
    assert not compiling.optimizers(fused)[0].param_groups[0].get("foreach")
    for b in batches(6):
        before = len(calls)
        m_a = foreach.update(b)
        assert len(calls) == before  # foreach Adam (the default) never reaches the fused kernel
        m_b = fused.update(b)
        assert len(calls) > before  # every fused update steps through it
    for k in m_a:
        assert m_b[k] == pytest.approx(m_a[k], rel=1e-4, abs=1e-5), k
    assert_close_states(foreach, fused)
    # and a checkpoint of either loads into the other, keeping the loader's kernel
    back = make()
    back.set_compile("off", fused_adam=True)
    back.load_state_dict(copy.deepcopy(foreach.state_dict()))
    assert all(g["fused"] for opt in compiling.optimizers(back) for g in opt.param_groups)
    b = random_batch(seed=99)
    assert back.update(b).keys() == foreach.update(b).keys()


def test_fused_adam_is_one_clear_error_when_not_a_boolean():
    with pytest.raises(ValueError, match="fused_adam: expected true or false, got 'yes'"):
        sac().set_compile("off", fused_adam="yes")


def test_the_offline_stage_takes_fused_adam_from_the_config(tmp_path, monkeypatch):
    """Config key → stage → optimizers: a short offline run with ``fused_adam: true`` steps every
    update through the fused kernel; the default never does."""
    import shutil
    from pathlib import Path

    from npf.config import validate
    from npf.stages import offline

    repo = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    store = tmp_path / "results"
    d = store / "datasets" / "cheetah"
    d.mkdir(parents=True)
    for f in (repo / "tests" / "bad_inputs" / "datasets" / "good").iterdir():
        shutil.copy(f, d / f.name)
    calls = []
    kernel = torch._fused_adam_
    monkeypatch.setattr(torch, "_fused_adam_", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    h = [16, 16]
    for fused in (False, True):
        cfg = validate(
            {
                "results_dir": str(store),
                "device": "cpu",
                "fused_adam": fused,
                "tasks": {"cheetah": ["forward", "backward"]},
                "offline": {
                    "updates": 4,
                    "batch_size": 8,
                    "eval_interval": 1000,
                    "eval_episodes": 1,
                    "checkpoint_every": 1000,
                    "iql": {"actor_hidden": h, "critic_hidden": h, "value_hidden": h},
                },
            }
        )
        offline.train_offline(cfg, "cheetah", "mt", "iql", 0, store / "runs" / f"fused{fused}")
        assert (len(calls) >= 4 * 3) if fused else not calls  # IQL: actor, critic and value steps per update
