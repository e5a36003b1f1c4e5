"""The update's speed-ups keep its numbers: foreach Adam and multi-tensor Polyak averaging equal
torch's single-tensor defaults bit for bit; metrics come back as floats with one host sync;
optimizer checkpoints of either implementation load into the other."""

from __future__ import annotations

import copy

import pytest
import torch

from npf.algos.base import load_optimizer, make_optimizer, scalars
from npf.nets import mlp, soft_update


def _net(seed=0):
    torch.manual_seed(seed)
    return mlp(5, 2, [16, 8])


def _train(opt_factory, steps=4):
    net = _net()
    opt = opt_factory(net.parameters())
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(32, 5, generator=g), torch.randn(32, 2, generator=g)
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), y).backward()
        opt.step()
    return net, opt


@pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_foreach_optimizer_equals_the_single_tensor_loop_bitwise(name, cls):
    ours, opt = _train(lambda p: make_optimizer(name, p, 1e-3))
    ref, _ = _train(lambda p: cls(p, lr=1e-3, foreach=False))
    assert opt.param_groups[0]["foreach"] is True
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), ref.parameters()))


def test_fused_optimizer_equals_the_loop_within_float_rounding():
    ours, _ = _train(lambda p: make_optimizer("adam", p, 1e-3, fused=True))
    ref, _ = _train(lambda p: torch.optim.Adam(p, lr=1e-3, foreach=False))
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_unknown_optimizer_is_one_clear_error():
    with pytest.raises(ValueError, match="optimizer: unknown value 'sgd'"):
        make_optimizer("sgd", _net().parameters(), 1e-3)


@pytest.mark.parametrize(
    "saved_kw,own_fused", [({"foreach": False}, False), ({"foreach": False}, True), ({"fused": True}, False)]
)
def test_optimizer_checkpoints_load_across_implementations(saved_kw, own_fused):
    """A checkpoint of the single-tensor (old) or fused Adam resumes into a foreach or fused one:
    same moments and step, and the loading optimizer keeps its own implementation."""
    net, old = _train(lambda p: torch.optim.Adam(p, lr=1e-3, **saved_kw))
    state = copy.deepcopy(old.state_dict())
    new = make_optimizer("adam", net.parameters(), 1e-3, fused=own_fused)
    load_optimizer(new, state)
    group = new.param_groups[0]
    assert (group["fused"], group["foreach"]) == ((True, None) if own_fused else (None, True))
    for p in net.parameters():
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(new.state[p][k], old.state[p][k])


def test_soft_update_equals_polyak_per_tensor_and_moves_versions():
    target, source = _net(0), _net(1)
    expect = [t.detach() * (1 - 0.1) + s.detach() * 0.1 for t, s in zip(target.parameters(), source.parameters())]
    ref = copy.deepcopy(target)
    with torch.no_grad():
        for t, s in zip(ref.parameters(), source.parameters()):
            t.lerp_(s, 0.1)
    versions = [p._version for p in target.parameters()]
    soft_update(target, source, 0.1)
    for t, r, e in zip(target.parameters(), ref.parameters(), expect):
        assert torch.equal(t, r)
        torch.testing.assert_close(t.detach(), e)
    # pathway views are cached by version counter: every target tensor must show the write
    assert all(p._version > v for p, v in zip(target.parameters(), versions))


def test_scalars_are_the_items_of_the_metric_tensors():
    m = {"a": torch.tensor(1.5), "b": torch.tensor([2.25]).mean(), "c": torch.tensor(-3.0, dtype=torch.float64)}
    out = scalars(m)
    assert out == {k: v.item() for k, v in m.items()}
    assert all(isinstance(v, float) for v in out.values()) and scalars({}) == {}
