"""Mixed precision, gradient accumulation and the generator's EMA (colorray.train.stepping), one real step at a time."""

from __future__ import annotations

import copy

import pytest
import ray.train
import torch

from colorray import color
from colorray.config import ConfigError, config_from_dict, load_config
from colorray.export import load_generator
from colorray.losses.objective import Objective
from colorray.train import checkpoints, preflight
from colorray.train.loop import build_models, train_step
from colorray.train.optim import build_optimizer, build_scheduler
from colorray.train.stepping import Updater, amp_dtype, check_stepping

CPU = torch.device("cpu")


def config_with(**run_and_optim):
    values = {"model": {"name": "cnn", "options": {"width": 4}}, "data": {"image_size": 32, "batch_size": 4}}
    for key, value in run_and_optim.items():
        section, name = key.split("__")
        values.setdefault(section, {})[name] = value
    config = config_from_dict(values)
    check_stepping(config)
    return config


def setup(config, models=None):
    torch.manual_seed(0)
    models = models or build_models(config, {}, CPU)
    optimizers = {name: build_optimizer(model.parameters(), config.optim) for name, model in models.items()}
    schedulers = {name: build_scheduler(opt, config.optim, 4, 1) for name, opt in optimizers.items()}
    return models, Updater(config, models, optimizers, schedulers, CPU)


def batch(n: int = 4, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return color.rgb_to_model_inputs(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator))


def step(models, updater, config, L, ab):
    return train_step(models, updater, Objective(config, None, CPU), L, ab, torch.full((L.shape[0],), -1), False)


def params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("value, mode", [(True, "auto"), (False, "none"), ("fp16", "fp16"), ("bf16", "bf16")])
def test_amp_reads_the_old_boolean_and_the_named_modes(value, mode):
    assert config_from_dict({"run": {"amp": value}}).run.amp == mode
    assert load_config(None, [f"run.amp={str(value).lower()}"]).run.amp == mode


def test_bad_stepping_settings_are_named():
    for override, message in (("run.amp=fp32", "run.amp must be one of none, fp16, bf16, auto"),
                              ("optim.accumulate_steps=0", "optim.accumulate_steps must be >= 1"),
                              ("run.ema_decay=1.0", "run.ema_decay must be in [0, 1)")):
        with pytest.raises((ConfigError, ValueError), match=message.replace("[", r"\[").replace(")", r"\)")):
            preflight.check(load_config(None, [override]))


def test_amp_dtypes_on_the_cpu():
    assert amp_dtype("auto", CPU) is None and amp_dtype("none", CPU) is None
    assert amp_dtype("fp16", CPU) == torch.float16 and amp_dtype("bf16", CPU) == torch.bfloat16


@pytest.mark.parametrize("amp, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_a_mixed_precision_step_runs_under_autocast_and_updates_the_weights(amp, dtype):
    config = config_with(run__amp=amp)
    models, updater = setup(config)
    before = params(models["generator"])
    seen = []
    handle = models["generator"].register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    losses = step(models, updater, config, *batch())
    handle.remove()
    assert seen == [dtype] and torch.isfinite(losses["total"])
    assert updater.scalers["generator"].is_enabled() == (amp == "fp16")
    assert any(not torch.equal(a, b) for a, b in zip(before, params(models["generator"])))


def test_accumulated_half_batches_give_the_gradient_of_the_whole_batch():
    config = config_with(optim__accumulate_steps=2)
    models, updater = setup(config)
    whole_models, whole = setup(config_with(), {"generator": copy.deepcopy(models["generator"])})
    for model in (models["generator"], whole_models["generator"]):
        model.eval()  # BatchNorm on its running statistics: halves and whole see the same normalization
    L, ab = batch()
    updater.stepping = whole.stepping = False  # look at the summed gradients before any step
    step(models, updater, config, L[:2], ab[:2])
    step(models, updater, config, L[2:], ab[2:])
    step(whole_models, whole, config, L, ab)
    for halves, full in zip(models["generator"].parameters(), whole_models["generator"].parameters()):
        torch.testing.assert_close(halves.grad, full.grad, rtol=1e-4, atol=1e-6)


def test_the_optimizer_steps_every_k_batches_and_at_the_epoch_end():
    config = config_with(optim__accumulate_steps=2)
    models, updater = setup(config)
    generator = models["generator"]
    history = [params(generator)]
    for index in range(3):  # an epoch of 3 batches: steps after the 2nd and the 3rd (the last)
        updater.begin(index, 3)
        step(models, updater, config, *batch(seed=index))
        history.append(params(generator))
    changed = [any(not torch.equal(a, b) for a, b in zip(x, y)) for x, y in zip(history, history[1:])]
    assert changed == [False, True, True]
    assert all(p.grad is None for p in generator.parameters())
    assert updater.schedulers["generator"].last_epoch == 2


def test_the_ema_follows_the_generator_and_is_what_is_exported(tmp_path):
    decay = 0.9
    config = config_with(run__ema_decay=decay)
    models, updater = setup(config)
    snapshots = []
    for seed in range(2):
        step(models, updater, config, *batch(seed=seed))
        snapshots.append({k: v.detach().clone() for k, v in models["generator"].state_dict().items()})
    ema = updater.generator(models["generator"])
    assert ema is not models["generator"]
    for name, value in ema.state_dict().items():
        if value.is_floating_point():  # the first update copies, later ones average
            torch.testing.assert_close(value, decay * snapshots[0][name] + (1 - decay) * snapshots[1][name])

    checkpoints.save(tmp_path, config, models, updater, checkpoints.Position(), {"val/psnr": 20.0})
    exported, _ = load_generator(tmp_path)
    for name, value in exported.state_dict().items():
        torch.testing.assert_close(value, ema.state_dict()[name])

    resumed_models, resumed = setup(config)
    checkpoints.restore(ray.train.Checkpoint.from_directory(tmp_path), resumed_models, resumed)
    for name, value in resumed.generator(resumed_models["generator"]).state_dict().items():
        torch.testing.assert_close(value, ema.state_dict()[name])

