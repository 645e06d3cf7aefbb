"""``causalvis models``, ``layers`` and ``probe``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from causalvis.cli.app import app

WeightsOpt = typer.Option(
    None, "--weights", help="state-dict file (.pth/.safetensors), or 'random' for tests"
)
DeviceOpt = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ...")
TokensOpt = typer.Option(
    "patch", "--tokens", help="token layers (ViTs): patch (default), cls or all tokens"
)
DictionaryOpt = typer.Option(
    None, "--dictionary", help="NAME=PATH: a SAE (SAELens folder) or directions folder "
    "whose units are NAME:FEATURE (repeatable; docs/dictionaries.md)"
)


def _with_dictionaries(m, dictionary: list[str] | None):
    from causalvis.models import attach_dictionaries
    from causalvis.models.dictionary import parse_assignments

    attach_dictionaries(m, parse_assignments(dictionary))
    return m


@app.command("models")
def models_command(
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """List the available models (embedded ones are marked and need no download)."""
    from causalvis.models import available_models

    specs = available_models()
    if as_json:
        rows = [
            {"name": s.name, "embedded": s.embedded, "description": s.description} for s in specs
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    for spec in specs:
        mark = "*" if spec.embedded else " "
        typer.echo(f"{mark} {spec.name:<12} {spec.description}")
    typer.echo("  timm:ARCH    any timm architecture (cached weights or --weights)")
    typer.echo("  torchvision:ARCH  any torchvision classifier (cached weights or --weights)")
    typer.echo("  python:MODULE_OR_FILE.py:FACTORY  any nn.Module (docs/own-model.md)")
    typer.echo("* = embedded: weights ship with an installed package")


@app.command("layers")
def layers_command(
    model: str = typer.Argument(..., help="model name, e.g. lite0"),
    weights: str | None = WeightsOpt,
    tokens: str = TokensOpt,
    dictionary: list[str] = DictionaryOpt,
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Layers a unit can live in, in forward order, with kind (block, norm, tokens (...),
    channels-last (...)), Inception branch (3x3, pool, concat, ...; '-' outside one),
    channels and the size of the unit's map (token layers: the patch grid); registered
    dictionaries (--dictionary) follow with their kind and base layer."""
    from causalvis.models import list_layers, load_model, resolve_layer

    m = _with_dictionaries(load_model(model, weights=weights, tokens=tokens), dictionary)
    layers = list_layers(m) + [resolve_layer(m, name) for name in m.derived]
    if as_json:
        typer.echo(json.dumps([info.to_dict() for info in layers], indent=2))
        return
    typer.echo(f"{m.name}: input {m.input_size}x{m.input_size}, {len(layers)} layers")
    kind_w = max([22, *(len(info.kind) for info in layers)])
    name_w = max([24, *(len(info.name) for info in layers)])
    typer.echo(f"{'layer':<{name_w}} {'kind':<{kind_w}} {'branch':<10} {'channels':>8}  size")
    for info in layers:
        typer.echo(
            f"{info.name:<{name_w}} {info.kind:<{kind_w}} {info.branch or '-':<10} "
            f"{info.channels:>8}  {info.height}x{info.width}"
            + (f"  (on {info.base})" if info.base else "")
        )
    if any(info.layout == "tokens" for info in layers):
        typer.echo(f"token layers read {tokens} tokens (--tokens patch|cls|all)")


@app.command("probe")
def probe_command(
    model: str = typer.Argument(..., help="model name, e.g. lite0"),
    images: list[Path] = typer.Argument(..., help="image files"),
    unit: list[str] = typer.Option(..., "--unit", help="LAYER:CHANNEL (repeatable)"),
    weights: str | None = WeightsOpt,
    device: str = DeviceOpt,
    tokens: str = TokensOpt,
    dictionary: list[str] = DictionaryOpt,
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Each image's activation of each unit (spatial mean of the unit's feature map; token
    layers: the mean over the --tokens policy's tokens; NAME:FEATURE for a --dictionary),
    measured as a study's stages measure them: eval BatchNorm folded into the convs
    (float rounding only; CAUSALVIS_FOLD_NORMS=0 measures the model as loaded)."""
    from causalvis.errors import CausalvisError
    from causalvis.images import load_image_file, pil_to_tensor, prepare_image
    from causalvis.models import load_model, parse_unit, probe_tensor

    m = _with_dictionaries(load_model(model, weights=weights, device=device, tokens=tokens),
                           dictionary)
    units = [parse_unit(u, m) for u in unit]
    for path in images:
        if not path.is_file():
            raise CausalvisError(f"image not found: {path}")
    import torch

    batch = torch.stack(
        [pil_to_tensor(prepare_image(load_image_file(p), m.input_size, m.crop_pct)) for p in images]
    )
    acts = probe_tensor(m, batch, sorted({layer for layer, _ in units}))
    rows = []
    for i, path in enumerate(images):
        for layer, channel in units:
            rows.append(
                {
                    "image": str(path),
                    "unit": f"{layer}:{channel}",
                    "activation": float(acts[layer][i, channel]),
                }
            )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        for row in rows:
            typer.echo(f"{row['image']}\t{row['unit']}\t{row['activation']:.6f}")
