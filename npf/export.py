"""Export one task's policy from a trained NPF run: only its pathway, no training code needed.

``export_task_policy(final_path, task, out_path)`` reads a run's ``final.pt`` (offline:
:func:`npf.stages.offline.train_offline`; online SAC+NPF: :mod:`npf.online`) and writes a
small file holding, for every network the deterministic action needs, per layer the values of
θ ⊙ m_n (task n's pathway, in CSR = row-major order, the weights' dtype) and their positions —
CSR indices (``crow`` int32, ``col`` int16 when the layer has at most 32767 inputs) or, when that
is smaller, the layer's bit mask deflated with zlib (``mask_zlib``; 0.3-0.6 bit per weight at SNIP
densities, against 16 bits per kept weight for ``col``) —, the layer's bias (⊙ its bias mask when biases are
masked), sizes and activations, plus the task's observation normalizer and the algorithm's
constants. No optimizer state, no other task, no pickled code: :class:`PathwayPolicy` rebuilds the
policy with ``torch.load(weights_only=True)`` and this module alone (torch only).

Deterministic action of the exported policy (equal to the masked global networks' on the same,
normalized observation; tests/test_export.py):

``iql``  the tanh mean of the Gaussian policy, clipped to [-1, 1] (``IQL.act(deterministic=True)``).
``sac``  tanh(μ(s)) (``SAC.act(deterministic=True)``).
``bcq``  BCQ's own selection rule with a *fixed* sample: ``num_samples`` latents per observation
         from a ``torch.Generator`` seeded with ``seed`` (stored in the file, default 0) at every
         call, clipped to [-latent_clip, latent_clip], decoded by the VAE decoder, perturbed by the
         actor, and the candidate with the largest Q1 is returned. That is ``BCQ.act`` on the task's
         pathway when ``BCQ.generator`` is seeded with the same seed before the call, and a
         deterministic function of the observation batch. BCQ therefore exports three pathways:
         ``actor`` (perturbation net), ``decoder`` (VAE decoder) and ``q1`` (first critic).

``nnz`` / ``dense`` returned by :func:`export_task_policy` count the actor's weight matrices (the
pathway's entries and all entries); ``nnz_all`` / ``dense_all`` count every exported network,
``bytes`` is the file size and ``dense_bytes`` the size of the same networks saved densely.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import warnings
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

EXPORT_FORMAT = "npf.policy/1"
ALGOS = ("iql", "sac", "bcq")
#: At load, layers whose pathway keeps more than this share of their weights are held as dense
#: θ ⊙ m_n (a dense product beats CSR there; the file is CSR either way).
DENSE_AT_LOAD = 0.25

_ACTS = {"relu": torch.relu, "tanh": torch.tanh, "elu": F.elu, "gelu": F.gelu, None: None}


# ------------------------------------------------------------------------------------- export
def _layer_keys(state: Mapping[str, Tensor], prefix: str) -> list[str]:
    """``prefix + "<i>.weight"`` keys of one MLP in layer order (MaskedLinear weights are 2-D)."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.weight$")
    found = sorted((int(m.group(1)), k) for k in state if (m := pat.match(k)) and state[k].dim() == 2)
    if not found:
        raise ValueError(f"no layers under {prefix!r} in the saved network")
    return [k for _, k in found]


def _csr_layer(weight: Tensor, bias: Tensor | None, mask: Tensor, bias_mask: Tensor | None) -> dict:
    """One layer of the file: θ ⊙ m's values in CSR (row-major) order, their positions as CSR
    indices or, when smaller, as the zlib-deflated bit mask, and the (masked) bias."""
    w = weight.detach().cpu()
    m = mask.to("cpu", torch.bool)
    if m.shape != w.shape:
        raise ValueError(f"mask shape {tuple(m.shape)} does not match weight {tuple(w.shape)}")
    out_f, in_f = w.shape
    rows, cols = torch.nonzero(m, as_tuple=True)
    layer = {"shape": [int(out_f), int(in_f)], "values": w[rows, cols].clone()}
    crow = torch.zeros(out_f + 1, dtype=torch.int64)
    crow[1:] = torch.bincount(rows, minlength=out_f).cumsum(0)
    col = cols.to(torch.int16 if in_f <= 32767 else torch.int32)
    bits = zlib.compress(np.packbits(m.numpy().reshape(-1)).tobytes(), 9)
    if len(bits) < crow.numel() * 4 + col.numel() * col.element_size():
        layer["mask_zlib"] = torch.frombuffer(bytearray(bits), dtype=torch.uint8)
    else:
        layer["crow"], layer["col"] = crow.to(torch.int32), col
    b = None
    if bias is not None:
        b = bias.detach().cpu().clone()
        if bias_mask is not None:
            b = b * bias_mask.to(b.dtype)
    layer["bias"] = b
    return layer


def _layer_indices(layer: Mapping, i: int) -> tuple[Tensor, Tensor]:
    """(crow, col) int64 of an exported layer, from either index encoding (validated)."""
    out_f, in_f = (int(s) for s in layer["shape"])
    nnz = int(layer["values"].numel())
    if "mask_zlib" in layer:
        try:
            raw = zlib.decompress(layer["mask_zlib"].numpy().tobytes())
        except zlib.error as e:
            raise ValueError(f"exported policy: layer {i} has a corrupt mask ({e})") from None
        if len(raw) != (out_f * in_f + 7) // 8:
            raise ValueError(f"exported policy: layer {i} mask has the wrong size")
        m = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=out_f * in_f).reshape(out_f, in_f)
        rows, cols = (torch.from_numpy(a.astype(np.int64)) for a in np.nonzero(m))
        crow = torch.zeros(out_f + 1, dtype=torch.int64)
        crow[1:] = torch.bincount(rows, minlength=out_f).cumsum(0)
    else:
        crow, cols = layer["crow"].to(torch.int64), layer["col"].to(torch.int64)
    if crow.numel() != out_f + 1 or cols.numel() != nnz or int(crow[-1]) != nnz:
        raise ValueError(f"exported policy: layer {i} has an inconsistent sparse structure")
    if nnz and (int(cols.min()) < 0 or int(cols.max()) >= in_f):
        raise ValueError(f"exported policy: layer {i} has column indices out of range")
    return crow, cols


def _net_spec(
    state: Mapping[str, Tensor],
    prefix: str,
    masks: Mapping[str, Tensor],
    task: int,
    activation: str,
    output_activation: str | None,
    mask_prefix: str,
) -> dict:
    layers = []
    for key in _layer_keys(state, prefix):
        local = key[len(prefix) :]
        mkey = mask_prefix + local
        if mkey not in masks:
            raise ValueError(f"no pathway mask for {mkey!r}")
        bkey = key[: -len("weight")] + "bias"
        bmask_key = mkey[: -len("weight")] + "bias"
        bm = masks[bmask_key][task] if bmask_key in masks else None
        layers.append(_csr_layer(state[key], state.get(bkey), masks[mkey][task], bm))
    for a, b in itertools.pairwise(layers):
        if a["shape"][0] != b["shape"][1]:
            raise ValueError(f"layers under {prefix!r} do not chain: {a['shape']} → {b['shape']}")
    return {"activation": activation, "output_activation": output_activation, "layers": layers}


def _algo_name(saved: Mapping) -> str:
    name = saved.get("algo_name")
    if name is None and "sac" in saved:
        name = "sac"
    if name not in ALGOS:
        raise ValueError(f"cannot export policies of algorithm {name!r} (supported: {', '.join(ALGOS)})")
    return name


def _task_index(saved: Mapping, task) -> int:
    tasks = list(saved.get("tasks") or [])
    if isinstance(task, str) and task in tasks:
        return tasks.index(task)
    if isinstance(task, int) or (isinstance(task, str) and task.isdigit()):
        i = int(task)
        if 0 <= i < len(tasks):
            return i
    raise ValueError(f"task {task!r} is not one of the run's tasks {tasks}")


def build_export(saved: Mapping, task, seed: int = 0) -> dict:
    """The exported policy (a dict of tensors and plain values) of ``task`` from a loaded
    ``final.pt`` dict; see the module docstring. ``seed``: BCQ's fixed latent seed."""
    from npf.pathways import Pathways  # the exported file itself never needs this

    if "pathways" not in saved:
        raise ValueError(f"run (method {saved.get('method')!r}) has no pathways: only NPF runs can be exported")
    algo = _algo_name(saved)
    n = _task_index(saved, task)
    pw = Pathways.from_state_dict(saved["pathways"])
    pw.check(tasks=list(saved.get("tasks") or []))
    state = saved["algo"]
    cfg = dict(state.get("config") or saved.get("sac") or {})
    act_fn = cfg.get("activation", "relu")
    params: dict = {}
    if algo == "iql":
        nets = {"actor": _net_spec(state["actor"], "net.", pw.masks["actor"], n, act_fn, "tanh", "net.")}
        params["log_std"] = (
            state["actor"]["log_std"]
            .detach()
            .cpu()
            .clamp(float(cfg.get("log_std_min", -5.0)), float(cfg.get("log_std_max", 2.0)))
        )
    elif algo == "sac":
        nets = {"actor": _net_spec(state["actor"], "net.", pw.masks["actor"], n, act_fn, None, "net.")}
    else:  # bcq
        nets = {
            "actor": _net_spec(state["actor"], "net.", pw.masks["actor"], n, act_fn, "tanh", "net."),
            "decoder": _net_spec(state["vae"], "decoder.", pw.masks["vae"], n, act_fn, "tanh", "decoder."),
            "q1": _net_spec(state["critic"], "q1.", pw.masks["critic"], n, act_fn, None, "q1."),
        }
        params.update(
            phi=float(cfg.get("phi", 0.05)),
            num_samples=int(cfg.get("num_samples", 10)),
            latent_clip=float(cfg.get("latent_clip", 0.5)),
            seed=int(seed),
        )
    act_dim = nets["actor"]["layers"][-1]["shape"][0] // (2 if algo == "sac" else 1)
    obs_dim = nets["actor"]["layers"][0]["shape"][1] - (act_dim if algo == "bcq" else 0)  # BCQ actor: (s, a)
    if algo == "bcq":
        params["latent_dim"] = nets["decoder"]["layers"][0]["shape"][1] - obs_dim  # decoder: (s, z)
    norms = saved.get("normalizers")
    if norms:
        mean = torch.as_tensor(norms[n]["mean"]).float().reshape(-1)
        std = torch.as_tensor(norms[n]["std"]).float().reshape(-1)
    else:  # online runs observe raw states
        mean, std = torch.zeros(obs_dim), torch.ones(obs_dim)
    if mean.numel() != obs_dim:
        raise ValueError(f"normalizer has {mean.numel()} features, the policy takes {obs_dim}")
    tasks = list(saved.get("tasks") or [])
    return {
        "format": EXPORT_FORMAT,
        "algo": algo,
        "method": str(saved.get("method", "npf")),
        "suite": saved.get("suite"),
        "task": tasks[n],
        "task_index": n,
        "seed_run": saved.get("seed"),
        "obs_dim": int(obs_dim),
        "act_dim": int(act_dim),
        "obs_mean": mean,
        "obs_std": std,
        "nets": nets,
        "params": params,
        "keep_ratio": pw.keep_ratio,
    }


def _counts(net: Mapping) -> tuple[int, int]:
    nnz = sum(int(layer["values"].numel()) for layer in net["layers"])
    dense = sum(layer["shape"][0] * layer["shape"][1] for layer in net["layers"])
    return nnz, dense


def _dense_bytes(export: Mapping) -> int:
    """Size of the same networks saved densely (full float weight matrices and biases)."""
    state = {}
    for name, net in export["nets"].items():
        for i, layer in enumerate(net["layers"]):
            state[f"{name}.{i}.weight"] = torch.zeros(layer["shape"], dtype=layer["values"].dtype)
            if layer["bias"] is not None:
                state[f"{name}.{i}.bias"] = layer["bias"]
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getbuffer().nbytes


def export_task_policy(final_path: str | os.PathLike, task, out_path: str | os.PathLike, seed: int = 0) -> dict:
    """Write ``task``'s pathway policy from the run ``final_path`` to ``out_path``; returns
    ``{"nnz", "dense", "bytes", "nnz_all", "dense_all", "dense_bytes", "algo", "task"}``."""
    from npf import checkpoint as ckpt
    from npf.data import atomic_write_bytes

    saved = ckpt.load(final_path, map_location="cpu")
    export = build_export(saved, task, seed)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_path, lambda tmp: torch.save(export, tmp))
    nnz, dense = _counts(export["nets"]["actor"])
    tot = [_counts(net) for net in export["nets"].values()]
    return {
        "nnz": nnz,
        "dense": dense,
        "bytes": out_path.stat().st_size,
        "nnz_all": sum(t[0] for t in tot),
        "dense_all": sum(t[1] for t in tot),
        "dense_bytes": _dense_bytes(export),
        "algo": export["algo"],
        "task": export["task"],
    }


# ------------------------------------------------------------------------------------- policy
class SparseMLP(nn.Module):
    """An MLP whose weight matrices are one task's pathway θ ⊙ m_n: CSR tensors (or dense ones for
    layers denser than ``DENSE_AT_LOAD``). Runs in transposed space (hᵀ = W xᵀ), the layout
    CSR × dense produces; accepts ``[..., in]``."""

    def __init__(self, spec: Mapping):
        super().__init__()
        self.activation = spec["activation"]
        self.output_activation = spec.get("output_activation")
        for a in (self.activation, self.output_activation):
            if a not in _ACTS:
                raise ValueError(f"exported policy: unknown activation {a!r}")
        self.sparse: list[bool] = []
        for i, layer in enumerate(spec["layers"]):
            out_f, in_f = (int(s) for s in layer["shape"])
            values, bias = layer["values"], layer["bias"]
            for part, t in (("weights", values), ("bias", bias)):
                if t is not None and not bool(torch.isfinite(t).all()):
                    raise ValueError(
                        f"exported policy: non-finite {part} in layer {i} of {spec.get('name', 'a network')}"
                    )
            crow, col = _layer_indices(layer, i)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
                csr = torch.sparse_csr_tensor(
                    crow.to(torch.int32), col.to(torch.int32), values, (out_f, in_f), check_invariants=True
                )
            dense = values.numel() > DENSE_AT_LOAD * out_f * in_f
            self.sparse.append(not dense)
            self.register_buffer(f"w{i}", csr.to_dense() if dense else csr)
            self.register_buffer(f"b{i}", torch.zeros(out_f, dtype=values.dtype) if bias is None else bias.clone())
        self.num_layers = len(spec["layers"])
        self.in_features = int(spec["layers"][0]["shape"][1])
        self.out_features = int(spec["layers"][-1]["shape"][0])

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        h = x.reshape(-1, x.shape[-1]).t().contiguous()  # [in, B]
        for i in range(self.num_layers):
            w, b = getattr(self, f"w{i}"), getattr(self, f"b{i}")
            h = torch.addmm(b.unsqueeze(1), w, h) if not self.sparse[i] else torch.mm(w, h).add_(b.unsqueeze(1))
            act = self.activation if i < self.num_layers - 1 else self.output_activation
            if act is not None:
                h = _ACTS[act](h)
        return h.t().reshape(*lead, self.out_features)


class PathwayPolicy(nn.Module):
    """One task's exported policy: ``policy(obs)`` → its deterministic action (module docstring).

    ``obs``: raw (unnormalized) observations ``[..., obs_dim]``; the task's normalizer is applied
    inside. Build it with :meth:`load` (``torch.load(weights_only=True)``) or from an export dict.
    """

    def __init__(self, export: Mapping):
        super().__init__()
        if export.get("format") != EXPORT_FORMAT:
            raise ValueError(
                f"not an exported npf policy (format {export.get('format')!r}, expected {EXPORT_FORMAT!r})"
            )
        self.algo = export["algo"]
        if self.algo not in ALGOS:
            raise ValueError(f"exported policy: unknown algorithm {self.algo!r}")
        self.task, self.method = export.get("task"), export.get("method")
        self.obs_dim, self.act_dim = int(export["obs_dim"]), int(export["act_dim"])
        self.params = dict(export.get("params") or {})
        for key in ("obs_mean", "obs_std"):
            if not bool(torch.isfinite(export[key]).all()):
                raise ValueError(f"exported policy: non-finite values in {key}")
        self.register_buffer("obs_mean", export["obs_mean"].clone())
        self.register_buffer("obs_std", export["obs_std"].clone())
        self.nets = nn.ModuleDict({k: SparseMLP({**v, "name": k}) for k, v in export["nets"].items()})
        need = {"iql": {"actor"}, "sac": {"actor"}, "bcq": {"actor", "decoder", "q1"}}[self.algo]
        if not need <= set(self.nets):
            raise ValueError(f"exported {self.algo} policy lacks networks {sorted(need - set(self.nets))}")

    @classmethod
    def load(cls, path: str | os.PathLike, map_location="cpu") -> PathwayPolicy:
        export = torch.load(path, map_location=map_location, weights_only=True)
        try:
            return cls(export)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def normalize(self, obs: Tensor) -> Tensor:
        return (obs - self.obs_mean) / self.obs_std

    @torch.no_grad()
    def forward(self, obs: Tensor) -> Tensor:
        """Deterministic action ``[..., act_dim]`` in [-1, 1] for raw observations ``[..., obs_dim]``."""
        obs = torch.as_tensor(obs, dtype=self.obs_mean.dtype, device=self.obs_mean.device)
        if obs.shape[-1] != self.obs_dim:
            raise ValueError(f"observation has {obs.shape[-1]} features, the policy takes {self.obs_dim}")
        s = self.normalize(obs)
        if self.algo == "iql":
            return self.nets["actor"](s).clamp(-1.0, 1.0)
        if self.algo == "sac":
            return torch.tanh(self.nets["actor"](s)[..., : self.act_dim])
        return self._bcq(s)

    def _bcq(self, s: Tensor) -> Tensor:
        p = self.params
        k, latent, c = int(p["num_samples"]), int(p["latent_dim"]), float(p["latent_clip"])
        rep = s.unsqueeze(-2).expand(*s.shape[:-1], k, s.shape[-1])  # [..., S, d]
        g = torch.Generator(device=s.device).manual_seed(int(p.get("seed", 0)))
        z = torch.randn((*rep.shape[:-1], latent), generator=g, device=s.device, dtype=s.dtype).clamp(-c, c)
        a = self.nets["decoder"](torch.cat([rep, z], -1))  # G(s)
        a = (a + float(p["phi"]) * self.nets["actor"](torch.cat([rep, a], -1))).clamp(-1.0, 1.0)
        q1 = self.nets["q1"](torch.cat([rep, a], -1))  # [..., S, 1]
        idx = q1.argmax(dim=-2, keepdim=True).expand(*a.shape[:-2], 1, a.shape[-1])
        return a.gather(-2, idx).squeeze(-2)

    def act(self, obs) -> Tensor:
        """Alias of ``forward`` accepting NumPy arrays."""
        return self(torch.as_tensor(obs))

    def extra_repr(self) -> str:
        return f"algo={self.algo}, task={self.task!r}, obs_dim={self.obs_dim}, act_dim={self.act_dim}"


def load_pathway_policy(path: str | os.PathLike, map_location="cpu") -> PathwayPolicy:
    """:meth:`PathwayPolicy.load`."""
    return PathwayPolicy.load(path, map_location)


__all__ = ["EXPORT_FORMAT", "PathwayPolicy", "SparseMLP", "build_export", "export_task_policy", "load_pathway_policy"]
