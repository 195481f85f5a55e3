"""LoRA around a pass: fresh adapters change nothing, the reference is the foundation, adapters
round-trip through a checkpoint, and the merged copy samples exactly like the adapted model."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from dmc_align.lora import (
    adapter_state,
    attach_lora,
    load_adapters,
    lora_targets,
    merged_copy,
    reference_mode,
    sampling_mode,
    save_adapters,
)
from dmc_align.spec import LoraSpec
from dmc_core.checkpoint import load_checkpoint, save_checkpoint
from dmc_core.errors import CheckpointError
from dmc_core.seeding import torch_generator


def _x0(model, history: torch.Tensor, seed: int = 3) -> torch.Tensor:
    return model.sample(history, torch_generator(seed), record=False).x0


@pytest.mark.parametrize("kind", ["diffuser", "policy"])
def test_fresh_adapters_leave_the_model_unchanged_and_only_they_train(kind: str, plain) -> None:
    foundation = plain(kind)
    history = torch.zeros(3, foundation.history_len, foundation.obs_dim)
    before = _x0(foundation, history)
    adapted = attach_lora(foundation, LoraSpec(rank=2))
    assert torch.allclose(_x0(adapted, history), before)
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_the_adapters_start_is_drawn_from_the_seed_alone(plain) -> None:
    # An unseeded start made two runs of the same pass part at the first update.
    models = [plain("policy") for _ in range(3)]
    torch.manual_seed(123)
    first = adapter_state(attach_lora(models[0], LoraSpec(rank=2), seed=7))
    torch.manual_seed(456)  # another global random state...
    global_state = torch.get_rng_state()
    again = adapter_state(attach_lora(models[1], LoraSpec(rank=2), seed=7))
    assert torch.equal(torch.get_rng_state(), global_state)  # ... left as it was
    other = adapter_state(attach_lora(models[2], LoraSpec(rank=2), seed=8))
    lora_a = [name for name in first if "lora_A" in name]
    assert lora_a
    for name in first:  # the seed alone decides
        assert torch.equal(first[name], again[name])
    assert not any(torch.equal(first[name], other[name]) for name in lora_a)


def test_targets_are_the_selected_layer_types(plain) -> None:
    model = plain("diffuser")
    convs = lora_targets(model.net, LoraSpec(layers=["conv1d"]))
    linears = lora_targets(model.net, LoraSpec(layers=["linear"]))
    assert convs and linears and not set(convs) & set(linears)
    assert all(type(model.net.get_submodule(n)) is torch.nn.Conv1d for n in convs)


@pytest.mark.parametrize("kind", ["diffuser", "policy"])
def test_reference_mode_is_the_foundation_and_merging_keeps_the_samples(
    kind: str, plain, tiny
) -> None:
    foundation = plain(kind)
    history = torch.zeros(3, foundation.history_len, foundation.obs_dim)
    base = _x0(foundation, history)
    model = tiny(kind)
    adapted = _x0(model, history)
    assert not torch.allclose(adapted, base)
    with reference_mode(model):
        assert torch.allclose(_x0(model, history), base, atol=1e-6)
    # Merged weights round differently, and the untrained tiny UNet's chain amplifies that to
    # ~1% of its samples (which reach ~200); the adapters themselves move them by ~20%.
    assert torch.allclose(_x0(merged_copy(model), history), adapted, rtol=2e-2, atol=1e-4)


def test_adapters_round_trip_and_reject_another_spec(tmp_path: Path, plain, tiny) -> None:
    spec = LoraSpec(rank=2, alpha=2.0)
    model = tiny("policy", spec)
    save_adapters(tmp_path, model, spec)
    fresh = attach_lora(plain("policy"), spec)
    assert load_adapters(tmp_path, fresh, spec)
    for name, tensor in adapter_state(model).items():
        assert torch.equal(adapter_state(fresh)[name], tensor)
    assert not load_adapters(tmp_path / "nothing-here", fresh, spec)
    with pytest.raises(CheckpointError, match="re-run the recipe"):
        load_adapters(tmp_path, fresh, LoraSpec(rank=4))


@pytest.mark.parametrize("bias", ["all", "lora_only"])
def test_reference_mode_restores_the_foundation_biases_a_pass_trains(bias: str, plain) -> None:
    foundation = plain("policy")
    history = torch.zeros(3, foundation.history_len, foundation.obs_dim)
    base = _x0(foundation, history)
    model = attach_lora(plain("policy"), LoraSpec(rank=2, bias=bias))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.requires_grad and "lora_" not in name:
                parameter.add_(0.5)  # a trained bias
    trained = _x0(model, history)
    assert not torch.allclose(trained, base)
    z0 = torch.randn(3, model.horizon, model.transition_dim)
    loss = model.denoising_loss(z0, history, torch_generator(0)).mean()
    with reference_mode(model):
        assert torch.allclose(_x0(model, history), base, atol=1e-6)
    assert torch.equal(_x0(model, history), trained)
    loss.backward()  # the graph built before the reference block is intact


@pytest.mark.parametrize("kind", ["diffuser", "policy"])
def test_sampling_mode_samples_like_the_adapted_model_and_restores_it_exactly(
    kind: str, tiny
) -> None:
    model = tiny(kind, LoraSpec(rank=2, alpha=2.0, bias="all"))
    history = torch.zeros(3, model.history_len, model.obs_dim)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    adapted = _x0(model, history)
    with sampling_mode(model):
        merged = _x0(model, history)
        assert not torch.is_grad_enabled()
    assert torch.allclose(merged, adapted, rtol=2e-2, atol=1e-5)  # rounding, as above
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, before[name]), name
    assert torch.equal(_x0(model, history), adapted)


def test_adapters_of_the_wrong_shape_name_the_file_and_the_tensor(tmp_path: Path, tiny) -> None:
    spec = LoraSpec(rank=2, alpha=2.0)
    model = tiny("policy", spec)
    path = save_adapters(tmp_path, model, spec)
    state = adapter_state(model)
    name = next(iter(state))
    state[name] = torch.zeros(state[name].shape[0] + 1, *state[name].shape[1:])
    save_checkpoint(path, state, load_checkpoint(path).config)
    fits = f"{path}: weights do not fit the model's adapters: '{name}' should have shape"
    with pytest.raises(CheckpointError, match=re.escape(fits)):
        load_adapters(tmp_path, model, spec)
