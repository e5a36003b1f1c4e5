"""npf.checkpoint refuses to save or load a state holding a NaN or inf tensor anywhere outside its
replay data (top-level ``buffer`` / ``td`` / ``rows``), naming the entry."""

from __future__ import annotations

import math

import pytest
import torch

from npf import checkpoint as ckpt


def state(value=0.5):
    w = torch.zeros(3, 4)
    w[2, 1] = value
    return {
        "algo": {"critic": {"q1.0.weight": w, "q1.0.bias": torch.zeros(3)}},
        "history": [torch.ones(2), (torch.arange(3), 1.5)],
        "step": 7,
        "rng": torch.zeros(5, dtype=torch.uint8),
    }


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nonfinite_entries_are_found_and_refused_on_save_and_load(tmp_path, value):
    assert ckpt.first_non_finite(state()) is None
    assert ckpt.first_non_finite(state(value)) == "algo.critic.q1.0.weight"
    nested = state()
    nested["history"][1] = (torch.arange(3), torch.tensor([1.0, value]))
    assert ckpt.first_non_finite(nested) == "history.1.1"
    path = tmp_path / "c.pt"
    with pytest.raises(
        ckpt.CheckpointError, match="c.pt: refusing to save non-finite values in algo.critic.q1.0.weight"
    ):
        ckpt.save(state(value), path)
    assert not path.exists()
    torch.save(state(value), path)  # written by something else
    with pytest.raises(ckpt.CheckpointError, match="c.pt: non-finite values in algo.critic.q1.0.weight"):
        ckpt.load(path)


def test_finite_state_round_trips(tmp_path):
    ckpt.save(state(), tmp_path / "c.pt")
    back = ckpt.load(tmp_path / "c.pt")
    assert torch.equal(back["algo"]["critic"]["q1.0.weight"], state()["algo"]["critic"]["q1.0.weight"])
    assert back["step"] == 7


def test_replay_data_may_hold_inf_and_plain_floats_are_not_weights(tmp_path):
    for key in ckpt.DATA_KEYS:
        s = {**state(), key: {"obs": torch.tensor([1.0, math.inf])}, "last_return": math.nan}
        ckpt.save(s, tmp_path / f"{key}.pt")
        assert math.isinf(float(ckpt.load(tmp_path / f"{key}.pt")[key]["obs"][1]))
    with pytest.raises(ckpt.CheckpointError, match="non-finite values in other.obs"):
        ckpt.save({**state(), "other": {"obs": torch.tensor([math.inf])}}, tmp_path / "x.pt")
