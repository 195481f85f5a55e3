"""LoRA adapters (peft) around a control model: what every alignment pass trains.

`attach_lora` wraps the model's denoiser network with peft adapters on its Linear (and Conv1d)
layers and freezes everything else; the base weights stay the foundation's, so the frozen
reference pi_ref of every method is the same network with its adapters switched off
(`reference_mode`), and no second copy is kept. Biases a spec trains (`bias: all` or
`lora_only`) are the base layers' own, which peft's switch leaves as trained; the foundation's
values are therefore kept aside at attach time and swapped in for the reference. A pass saves
only the adapters (`save_adapters`); the next pass loads them onto the foundation and continues
training the same adapter set (spec §4: one adapter set shared across methods). For evaluation
the adapters are merged into a plain copy of the model (`merged_copy`), which every stage loads
like a foundation.

References:
    Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models" (2021); peft's `LoraConfig`.
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import peft
import torch
from torch import nn

from dmc_align.spec import LoraSpec
from dmc_core.checkpoint import check_state_fits, load_checkpoint, save_checkpoint
from dmc_core.config import to_plain
from dmc_core.errors import CheckpointError
from dmc_core.models import ControlModel
from dmc_core.seeding import seeded_initialisation

__all__ = [
    "ADAPTER_FILE",
    "adapter_state",
    "attach_lora",
    "load_adapter_state",
    "load_adapters",
    "lora_targets",
    "merged_copy",
    "reference_mode",
    "sampling_mode",
    "save_adapters",
    "trainable_parameters",
]

ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CHECKPOINT_KIND = "dmc-lora-adapters"
_LAYER_TYPES = {"linear": nn.Linear, "conv1d": nn.Conv1d}
_MERGED = "base_layer.weight"  # what peft's merge changes: the adapted layers' weights


def lora_targets(net: nn.Module, spec: LoraSpec) -> list[str]:
    """Names of the layers of `net` whose type `spec.layers` selects (exact types, so that e.g.
    ConvTranspose1d, which peft cannot adapt, is never picked)."""
    types = tuple(_LAYER_TYPES[name] for name in spec.layers)
    return [name for name, module in net.named_modules() if type(module) in types]


def attach_lora(model: ControlModel, spec: LoraSpec, seed: int = 0) -> ControlModel:
    """Wrap `model.net` with fresh LoRA adapters (B = 0: the model is unchanged) in place.

    Everything but the adapters (and the biases `spec.bias` names) is frozen. The random A
    matrices are drawn from `seed`, without touching the global random state: the adapters'
    start, and so the whole pass, is the same on every run.

    Raises:
        ValueError: the network has no layer of the selected types.
    """
    targets = lora_targets(model.net, spec)
    if not targets:
        raise ValueError(f"{model.kind}: no {spec.layers} layer to adapt")
    config = peft.LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha,
        lora_dropout=spec.dropout,
        target_modules=targets,
        bias=spec.bias,
    )
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    with seeded_initialisation(seed):  # peft initialises the adapters on the CPU
        model.net = peft.get_peft_model(model.net, config)
    model._foundation_biases = {  # type: ignore[assignment]
        name: nn.Parameter(parameter.detach().clone(), requires_grad=False)
        for name, parameter in model.net.named_parameters()
        if parameter.requires_grad and "lora_" not in name
    }
    return model


def _peft_net(model: ControlModel) -> peft.PeftModel:
    if not isinstance(model.net, peft.PeftModel):
        raise TypeError(f"{model.kind}: no LoRA adapters attached (use attach_lora)")
    return model.net


@contextlib.contextmanager
def reference_mode(model: ControlModel) -> Iterator[ControlModel]:
    """Inside the block the model is pi_ref, the foundation: adapters off, the foundation's
    biases in place of the trained ones, no gradients."""
    net = _peft_net(model)
    foundation: dict[str, nn.Parameter] = getattr(model, "_foundation_biases", {})
    with warnings.catch_warnings(), torch.no_grad():
        # peft warns that switching adapters off keeps trained biases: they are swapped here
        warnings.filterwarnings("ignore", message="Careful, disabling adapter layers")
        with net.disable_adapter(), _swapped_parameters(net, foundation):
            yield model


@contextlib.contextmanager
def _swapped_parameters(net: nn.Module, replacements: dict[str, nn.Parameter]) -> Iterator[None]:
    """Put other Parameter objects in the named places for the block. The trained tensors are
    left untouched (not overwritten), so a graph built before the block can still backward."""
    owners = {name: net.get_submodule(name.rpartition(".")[0]) for name in replacements}
    trained = {}
    for name, value in replacements.items():
        attribute = name.rpartition(".")[2]
        trained[name] = owners[name]._parameters[attribute]
        owners[name]._parameters[attribute] = value
    try:
        yield
    finally:
        for name, value in trained.items():
            owners[name]._parameters[name.rpartition(".")[2]] = value


@contextlib.contextmanager
def sampling_mode(model: ControlModel) -> Iterator[ControlModel]:
    """Inside the block the adapters are merged into their base layers, gradients off: the same
    function as the adapted model at the foundation's cost per step (an unmerged peft layer adds
    two products and Python overhead to every call, which dominates sampling on a CPU). On exit
    the base weights are restored exactly (a copy, not a subtraction that would drift)."""
    net = _peft_net(model)
    with torch.no_grad():
        merged = [(name, p) for name, p in net.named_parameters() if name.endswith(_MERGED)]
        base = {name: p.detach().clone() for name, p in merged}
        net.merge_adapter()
        try:
            yield model
        finally:
            net.unmerge_adapter()
            parameters = dict(net.named_parameters())
            for name, value in base.items():
                parameters[name].copy_(value)


def trainable_parameters(model: ControlModel) -> list[nn.Parameter]:
    """What a pass trains: the adapters (and the biases, when `LoraSpec.bias` says so)."""
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


def adapter_state(model: ControlModel) -> dict[str, torch.Tensor]:
    """A detached copy of the adapter weights (what a pass trains, saves and rolls back to)."""
    state = peft.get_peft_model_state_dict(_peft_net(model))
    return {name: tensor.detach().clone() for name, tensor in state.items()}


def load_adapter_state(model: ControlModel, state: dict[str, torch.Tensor]) -> None:
    """Set the adapter weights from `adapter_state` output.

    Raises:
        CheckpointError: the state does not fit this model's adapters.
    """
    net = _peft_net(model)
    result = peft.set_peft_model_state_dict(net, state)
    unexpected = list(getattr(result, "unexpected_keys", []))
    if unexpected:
        raise CheckpointError(f"adapter weights do not fit the model: {unexpected[:3]}")


def save_adapters(directory: str | os.PathLike[str], model: ControlModel, spec: LoraSpec) -> Path:
    """Write the adapters to `<directory>/adapter.safetensors` with their LoRA spec."""
    config = {"checkpoint_kind": ADAPTER_CHECKPOINT_KIND, "lora": to_plain(spec)}
    return save_checkpoint(Path(directory) / ADAPTER_FILE, adapter_state(model), config)


def load_adapters(directory: str | os.PathLike[str], model: ControlModel, spec: LoraSpec) -> bool:
    """Load the adapters a previous pass left in `directory` onto `model`.

    Returns:
        False if `directory` holds no adapters (it is a foundation model's directory).

    Raises:
        CheckpointError: the adapters were made with another LoRA spec, or do not fit (the
            first tensor of the wrong shape is named).
    """
    path = Path(directory) / ADAPTER_FILE
    if not path.exists():
        return False
    checkpoint = load_checkpoint(path)
    recorded = checkpoint.config.get("lora")
    if recorded != to_plain(spec):
        raise CheckpointError(
            f"{path}: adapters made with LoRA {recorded}, this run's is {to_plain(spec)}; "
            "re-run the recipe from its first pass"
        )
    check_state_fits(path, adapter_state(model), checkpoint.tensors, "the model's adapters")
    load_adapter_state(model, checkpoint.tensors)
    return True


def merged_copy(model: ControlModel) -> ControlModel:
    """A copy of the model with the adapters merged into plain layers (for saving/evaluation)."""
    merged = copy.deepcopy(model)
    merged.net = _peft_net(merged).merge_and_unload()
    for parameter in merged.parameters():
        parameter.requires_grad_(True)
    return merged
