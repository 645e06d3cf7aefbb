"""Dictionary features and directions as units: derived layers over a catalogue layer.

Two kinds of :class:`~causalvis.models.layers.DerivedLayer` (docs/dictionaries.md):

* :class:`Dictionary` — a sparse autoencoder's encoder: feature ``j`` at every position is
  ``act(W_enc·(x − b_dec) + b_enc)_j`` with ``act`` = ``relu`` | ``topk`` (k, ReLU of the k
  largest pre-activations, others 0) | ``jumprelu`` (``relu(pre) · [pre > threshold]``).
* :class:`Directions` — ``k`` directions ``v`` in the layer's channel space; unit ``j`` is
  ``⟨x, v_j⟩`` at every position.

Both map the base layer's canonical map ``[N, C, H, W]`` to ``[N, features, H, W]``
position by position (one batch at a time: nothing ``[images × d_sae]`` beyond a batch),
so the probe's spatial mean gives the unit activation and the incremental occlusion
engine applies them to its base maps exactly.

Files (the format readers live here, with the model weights):

* SAELens layout: a folder with ``sae_weights.safetensors`` (``W_enc`` [d_in × d_sae],
  ``b_enc`` [d_sae], ``W_dec`` [d_sae × d_in], ``b_dec`` [d_in], optionally ``threshold``
  [d_sae] for JumpReLU) and ``cfg.json`` (``hook_name`` or ``layer``: the catalogue layer;
  ``d_in``, ``d_sae``; the activation from ``activation`` / ``activation_fn_str`` /
  ``architecture``; ``k`` or ``activation_fn_kwargs.k``; ``threshold``;
  ``apply_b_dec_to_input``, default true).
* Directions: a folder with ``directions.safetensors`` (``directions`` [k × d_in]) and
  ``cfg.json`` (``layer``; optionally ``normalize``: scale each direction to unit norm).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from causalvis.errors import CausalvisError

SAE_WEIGHTS = "sae_weights.safetensors"
DIRECTIONS_FILE = "directions.safetensors"
CFG_FILE = "cfg.json"
ACTIVATIONS = ("relu", "topk", "jumprelu")


class DictionaryError(CausalvisError):
    """A dictionary / directions file that cannot be used (one message)."""


class Dictionary(nn.Module):
    """SAE encoder over a layer's channels (see the module docstring)."""

    def __init__(self, base: str, w_enc: torch.Tensor, b_enc: torch.Tensor,
                 b_dec: torch.Tensor, activation: str = "relu", k: int | None = None,
                 threshold: torch.Tensor | float | None = None,
                 apply_b_dec_to_input: bool = True) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise DictionaryError(f"unknown activation {activation!r}: choose one of "
                                  f"{', '.join(ACTIVATIONS)}")
        d_in, d_sae = w_enc.shape
        if activation == "topk" and not (isinstance(k, int) and 0 < k <= d_sae):
            raise DictionaryError(f"activation topk needs 0 < k <= d_sae = {d_sae} (got {k})")
        if activation == "jumprelu" and threshold is None:
            raise DictionaryError("activation jumprelu needs a threshold (cfg.json "
                                  "'threshold' or a 'threshold' tensor)")
        self.base = base
        self.features = int(d_sae)
        self.d_in = int(d_in)
        self.activation = activation
        self.k = k
        self.register_buffer("W_enc", w_enc.float().contiguous())
        self.register_buffer("b_enc", b_enc.float().reshape(d_sae))
        shift = b_dec.float().reshape(d_in) if apply_b_dec_to_input else torch.zeros(d_in)
        self.register_buffer("b_dec", shift)
        thr = torch.zeros(d_sae) if threshold is None else torch.as_tensor(threshold).float()
        self.register_buffer("threshold", thr.expand(d_sae).clone())

    @property
    def kind(self) -> str:
        extra = f" k={self.k}" if self.activation == "topk" else ""
        return f"dictionary ({self.activation}{extra})"

    def pre(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``[N, d_sae, H, W]`` of a map ``[N, d_in, H, W]``."""
        x = x.float() - self.b_dec.view(1, -1, 1, 1)
        return torch.einsum("nchw,cd->ndhw", x, self.W_enc) + self.b_enc.view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre(x)
        if self.activation == "relu":
            return torch.relu(pre)
        if self.activation == "jumprelu":
            return torch.relu(pre) * (pre > self.threshold.view(1, -1, 1, 1))
        top = torch.topk(pre, self.k, dim=1)
        return torch.zeros_like(pre).scatter_(1, top.indices, torch.relu(top.values))


class Directions(nn.Module):
    """``k`` directions in a layer's channel space: unit ``j`` = ``⟨x, v_j⟩``."""

    kind = "directions"

    def __init__(self, base: str, directions: torch.Tensor) -> None:
        super().__init__()
        self.base = base
        self.features = int(directions.shape[0])
        self.d_in = int(directions.shape[1])
        self.register_buffer("V", directions.float().contiguous())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nchw,kc->nkhw", x.float(), self.V)


# -- files -----------------------------------------------------------------------------

def _read_cfg(folder: Path) -> dict:
    path = folder / CFG_FILE
    if not path.is_file():
        raise DictionaryError(f"{folder}: no {CFG_FILE} (it names the layer)")
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DictionaryError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(cfg, dict):
        raise DictionaryError(f"{path}: expected a JSON object")
    return cfg


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise DictionaryError(f"{path}: not a readable safetensors file ({exc})") from exc


def _layer(cfg: dict, where: Path) -> str:
    layer = cfg.get("hook_name") or cfg.get("layer")
    if not isinstance(layer, str) or not layer:
        raise DictionaryError(f"{where / CFG_FILE}: names no layer ('hook_name' or 'layer')")
    return layer


def _activation(cfg: dict) -> str:
    for key in ("activation", "activation_fn_str", "activation_fn"):
        if isinstance(cfg.get(key), str):
            name = cfg[key].lower()
            break
    else:
        name = {"jumprelu": "jumprelu", "topk": "topk"}.get(str(cfg.get("architecture", "")),
                                                            "relu")
    if cfg.get("architecture") == "jumprelu":
        name = "jumprelu"
    return name


def _need(tensors: dict, key: str, shape: tuple[int, ...], path: Path) -> torch.Tensor:
    if key not in tensors:
        raise DictionaryError(f"{path}: no tensor {key!r}")
    t = tensors[key]
    if tuple(t.shape) != shape and not (len(shape) == 1 and t.numel() == shape[0]):
        raise DictionaryError(f"{path}: {key} has shape {tuple(t.shape)}, expected {shape}")
    return t


def _folder(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if p.is_file():
        p = p.parent
    if not p.is_dir():
        raise DictionaryError(f"dictionary not found: {path}")
    return p


def load_dictionary(path: str | Path) -> Dictionary | Directions:
    """A :class:`Dictionary` (SAELens folder) or :class:`Directions` from ``path``."""
    folder = _folder(path)
    if (folder / SAE_WEIGHTS).is_file():
        return _load_sae(folder)
    if (folder / DIRECTIONS_FILE).is_file():
        cfg = _read_cfg(folder)
        file = folder / DIRECTIONS_FILE
        tensors = _tensors(file)
        v = tensors.get("directions")
        if v is None or v.dim() != 2:
            raise DictionaryError(f"{file}: needs a 2-D tensor 'directions' [k x d_in]")
        if cfg.get("normalize"):
            v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return Directions(_layer(cfg, folder), v)
    raise DictionaryError(f"{folder}: neither {SAE_WEIGHTS} nor {DIRECTIONS_FILE} found")


def _load_sae(folder: Path) -> Dictionary:
    cfg = _read_cfg(folder)
    file = folder / SAE_WEIGHTS
    tensors = _tensors(file)
    if "W_enc" not in tensors or tensors["W_enc"].dim() != 2:
        raise DictionaryError(f"{file}: needs a 2-D tensor 'W_enc' [d_in x d_sae]")
    d_in, d_sae = (int(s) for s in tensors["W_enc"].shape)
    for key, have in (("d_in", d_in), ("d_sae", d_sae)):
        if key in cfg and int(cfg[key]) != have:
            raise DictionaryError(f"{folder / CFG_FILE}: {key} = {cfg[key]} but W_enc is "
                                  f"[{d_in} x {d_sae}]")
    b_enc = _need(tensors, "b_enc", (d_sae,), file)
    b_dec = _need(tensors, "b_dec", (d_in,), file)
    if "W_dec" in tensors:
        _need(tensors, "W_dec", (d_sae, d_in), file)
    activation = _activation(cfg)
    kwargs = cfg.get("activation_fn_kwargs") or {}
    k = cfg.get("k", kwargs.get("k") if isinstance(kwargs, dict) else None)
    threshold = tensors.get("threshold", cfg.get("threshold"))
    if isinstance(threshold, torch.Tensor):
        threshold = _need(tensors, "threshold", (d_sae,), file)
    return Dictionary(_layer(cfg, folder), tensors["W_enc"], b_enc, b_dec, activation,
                      k=int(k) if k is not None else None, threshold=threshold,
                      apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)))


def attach_dictionaries(model, dictionaries: Mapping[str, str]) -> None:
    """Load each ``NAME = PATH`` and register it as ``model.derived[NAME]``, checking its
    layer against the model's catalogue (exists, channels == d_in)."""
    from causalvis.models.layers import list_layers

    layers = {i.name: i for i in list_layers(model)}
    for name, path in dictionaries.items():
        if not name or ":" in name or "." in name or name in layers:
            raise DictionaryError(f"dictionary name {name!r}: must be non-empty, without ':' "
                                  "or '.', and not a layer of the model")
        derived = load_dictionary(path)
        info = layers.get(derived.base)
        if info is None or not info.supported:
            raise DictionaryError(f"dictionary {name} ({path}): layer {derived.base!r} is not "
                                  f"a unit layer of model {model.name} (see `causalvis layers`)")
        if info.channels != derived.d_in:
            raise DictionaryError(f"dictionary {name} ({path}): d_in = {derived.d_in} but layer "
                                  f"{derived.base} has {info.channels} channels")
        model.derived[name] = derived.to(model.device)


def parse_assignments(values: list[str] | None) -> dict[str, str]:
    """``NAME=PATH`` options into a dict (paths made absolute)."""
    out: dict[str, str] = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise DictionaryError(f"--dictionary {value!r}: expected NAME=PATH")
        out[name] = str(Path(path).expanduser().resolve())
    return out


def dictionary_digest(path: str | Path) -> str:
    """Hash of a dictionary's files (weights and cfg.json): stage digests change with them."""
    import hashlib

    folder = _folder(path)
    h = hashlib.sha256()
    for name in (SAE_WEIGHTS, DIRECTIONS_FILE, CFG_FILE):
        if (folder / name).is_file():
            h.update(name.encode() + (folder / name).read_bytes())
    return h.hexdigest()[:16]


def save_sae(folder: str | Path, layer: str, w_enc: torch.Tensor, b_enc: torch.Tensor,
             w_dec: torch.Tensor, b_dec: torch.Tensor, *, activation: str = "relu",
             k: int | None = None, threshold: float | None = None) -> Path:
    """Write a SAE in the SAELens layout :func:`load_dictionary` reads (tests, benchmarks,
    a SAE fitted by hand)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"W_enc": w_enc.contiguous(), "b_enc": b_enc.contiguous(),
               "W_dec": w_dec.contiguous(), "b_dec": b_dec.contiguous()},
              str(folder / SAE_WEIGHTS))
    d_in, d_sae = w_enc.shape
    cfg: dict = {"hook_name": layer, "d_in": int(d_in), "d_sae": int(d_sae),
                 "activation_fn_str": activation}
    if k is not None:
        cfg["activation_fn_kwargs"] = {"k": int(k)}
    if threshold is not None:
        cfg["threshold"] = float(threshold)
    (folder / CFG_FILE).write_text(json.dumps(cfg, indent=2))
    return folder


def save_directions(folder: str | Path, layer: str, directions: torch.Tensor) -> Path:
    """Write a directions folder (``directions.safetensors`` + ``cfg.json``)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"directions": directions.contiguous()}, str(folder / DIRECTIONS_FILE))
    (folder / CFG_FILE).write_text(json.dumps({"layer": layer}, indent=2))
    return folder
