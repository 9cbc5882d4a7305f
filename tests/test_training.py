"""Training without Ray: the objective's values, ``train_step`` learning a batch, loss reading, checkpoint round trip.

These run the functions the Ray Train workers run (``colorray.train.loop``,
``colorray.losses.objective``, ``colorray.train.checkpoints``) in this process on
tiny tensors; the end-to-end runs on a real cluster are in ``test_train.py``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from ray.train import Checkpoint
from skimage import data as skimage_data

from colorray import color
from colorray.config import config_from_dict, load_config
from colorray.export import load_generator, write_atomically
from colorray.losses.objective import Objective
from colorray.train import checkpoints
from colorray.train.loop import LossMeter, build_models, train_step
from colorray.train.optim import build_optimizer, build_scheduler
from colorray.train.stepping import Updater

SIZE = 32
CPU = torch.device("cpu")


def tiny_config(**sections):
    values = {"model": {"name": "cnn", "options": {"width": 8}}, "data": {"image_size": SIZE, "batch_size": 4}}
    return config_from_dict({**values, **sections})


def fixed_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized (L, ab) of four SIZE x SIZE views of scikit-image's astronaut photo."""
    photo = torch.from_numpy(skimage_data.astronaut()).permute(2, 0, 1)[None].float()
    crops = [photo[..., :256, :256], photo[..., 256:, 256:], photo[..., :256, 256:], photo]
    rgb = torch.cat([F.interpolate(crop, size=(SIZE, SIZE), mode="area") for crop in crops]).round().byte()
    return color.rgb_to_model_inputs(rgb)


def training_parts(config, seed: int = 0):
    torch.manual_seed(seed)
    models = build_models(config, {}, CPU)
    optimizers = {name: build_optimizer(model.parameters(), config.optim) for name, model in models.items()}
    schedulers = {name: build_scheduler(opt, config.optim, steps_per_epoch=10, epochs=2)
                  for name, opt in optimizers.items()}
    return models, Updater(config, models, optimizers, schedulers, CPU)


def test_supervised_objective_is_the_weighted_sum_of_its_terms_plus_the_class_term():
    config = tiny_config(loss={"terms": {"l1": 2.0, "mse": 0.5}, "class_weight": 0.25})
    objective = Objective(config, None, CPU)
    L, true_ab = fixed_batch()
    pred_ab = torch.tanh(torch.randn_like(true_ab))
    losses = objective.supervised(pred_ab, true_ab, L)
    expected = 2.0 * F.l1_loss(pred_ab, true_ab) + 0.5 * F.mse_loss(pred_ab, true_ab)
    assert losses["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert losses["l1"].item() == pytest.approx(F.l1_loss(pred_ab, true_ab).item(), rel=1e-6)
    logits, labels = torch.randn(4, 3), torch.tensor([0, 2, 1, -1])
    with_class = objective.supervised(pred_ab, true_ab, L, logits, labels)
    class_ce = F.cross_entropy(logits[:3], labels[:3])
    assert with_class["class_ce"].item() == pytest.approx(class_ce.item(), rel=1e-6)
    assert with_class["total"].item() == pytest.approx((expected + 0.25 * class_ce).item(), rel=1e-6)


def test_gan_objective_values_for_the_generator_and_the_critic():
    config = tiny_config(gan={"enabled": True, "mode": "lsgan", "lambda_l1": 10.0})
    objective = Objective(config, None, CPU)
    L, true_ab = fixed_batch()
    pred_ab = torch.tanh(torch.randn_like(true_ab))
    critic_real, critic_fake = torch.randn(4, 1, 3, 3), torch.randn(4, 1, 3, 3)
    generator = objective.generator(pred_ab, true_ab, L, critic_fake)
    adversarial = F.mse_loss(critic_fake, torch.ones_like(critic_fake))
    assert generator["adversarial"].item() == pytest.approx(adversarial.item(), rel=1e-6)
    expected = adversarial + 10.0 * F.l1_loss(pred_ab, true_ab)
    assert generator["total"].item() == pytest.approx(expected.item(), rel=1e-6)
    critic = objective.critic(critic_real, critic_fake)
    expected_critic = 0.5 * (F.mse_loss(critic_real, torch.ones_like(critic_real))
                             + F.mse_loss(critic_fake, torch.zeros_like(critic_fake)))
    assert critic["critic"].item() == pytest.approx(expected_critic.item(), rel=1e-6)


def test_train_step_returns_the_objective_before_the_update_and_learns_a_fixed_batch():
    config = tiny_config(optim={"lr": 0.01, "schedule": "constant"})
    models, updater = training_parts(config)
    objective = Objective(config, None, CPU)
    L, ab = fixed_batch()
    with torch.no_grad():
        before = objective.supervised(models["generator"](L), ab, L)["total"].item()
    first = train_step(models, updater, objective, L, ab, torch.full((4,), -1), False)
    assert first["total"].item() == pytest.approx(before, rel=1e-5)
    for _ in range(40):
        last = train_step(models, updater, objective, L, ab, torch.full((4,), -1), False)
    assert last["total"].item() < 0.5 * before


def test_gan_train_step_updates_the_critic_and_the_generator():
    config = tiny_config(gan={"enabled": True, "options": {"ndf": 8}})
    models, updater = training_parts(config)
    critic_before = [p.detach().clone() for p in models["critic"].parameters()]
    L, ab = fixed_batch()
    losses = train_step(models, updater, Objective(config, None, CPU), L, ab, torch.full((4,), -1), True)
    assert {"critic", "critic_real", "critic_fake", "adversarial", "l1", "total"} <= set(losses)
    assert any(not torch.equal(p, q) for p, q in zip(models["critic"].parameters(), critic_before))


def test_loss_meter_gives_interval_means_and_starts_over():
    meter = LossMeter()
    assert meter.read() == {}
    for value in (1.0, 2.0, 6.0):
        meter.add({"total": torch.tensor(value, requires_grad=True), "l1": torch.tensor(value / 2)})
    assert meter.read() == {"train/total": 3.0, "train/l1": 1.5}
    meter.add({"total": torch.tensor(5.0)})
    assert meter.read() == {"train/total": 5.0}


def test_checkpoint_round_trip_restores_models_optimizers_schedulers_and_position(tmp_path):
    config = tiny_config(gan={"enabled": True, "options": {"ndf": 8}}, run={"name": "trip",
                                                                          "storage_path": str(tmp_path)})
    models, updater = training_parts(config, seed=0)
    L, ab = fixed_batch()
    for _ in range(3):  # each step also advances the schedules
        train_step(models, updater, Objective(config, None, CPU), L, ab, torch.full((4,), -1), True)
    position = checkpoints.Position(epoch=1, batches_done=3, step=7, val_metrics={"val/psnr": 20.5})
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    checkpoints.save(folder, config, models, updater, position, {"val/psnr": 20.5, "step": 7})

    fresh_models, fresh_updater = training_parts(config, seed=1)
    restored = checkpoints.restore(Checkpoint.from_directory(str(folder)), fresh_models, fresh_updater)
    assert restored == position
    for name, model in models.items():
        for (key, value), fresh in zip(model.state_dict().items(), fresh_models[name].state_dict().values()):
            assert torch.equal(value, fresh), (name, key)
        saved, loaded = updater.optimizers[name].state_dict(), fresh_updater.optimizers[name].state_dict()
        assert all(torch.equal(saved["state"][k]["exp_avg"], loaded["state"][k]["exp_avg"]) for k in saved["state"])
        assert updater.schedulers[name].last_epoch == fresh_updater.schedulers[name].last_epoch == 3
    exported, info = load_generator(folder)
    assert info.metrics == {"val/psnr": 20.5} and info.image_size == SIZE
    with torch.no_grad():
        assert torch.equal(exported(L), models["generator"].eval()(L))
    assert load_config(folder / checkpoints.RUN_CONFIG_FILE) == config


def test_restore_refuses_a_checkpoint_without_a_models_state(tmp_path):
    config = tiny_config()
    models, updater = training_parts(config)
    checkpoints.save(tmp_path, config, models, updater, checkpoints.Position(), {})
    gan_config = tiny_config(gan={"enabled": True, "options": {"ndf": 8}})
    gan_models, gan_updater = training_parts(gan_config)
    with pytest.raises(ValueError, match="no models state for critic"):
        checkpoints.restore(Checkpoint.from_directory(str(tmp_path)), gan_models, gan_updater)


def save_checkpoint(folder, config, epoch: int):
    models, updater = training_parts(config)
    folder.mkdir(parents=True)
    checkpoints.save(folder, config, models, updater, checkpoints.Position(epoch, 0, 10 * epoch), {"epoch": epoch})


def test_a_corrupt_latest_state_falls_back_to_the_previous_checkpoint_and_says_so(tmp_path, caplog):
    config = tiny_config()
    older, newer = tmp_path / "checkpoint_2026-12-03_10-00-00.000001", tmp_path / "checkpoint_2026-12-03_10-05-00.000001"
    save_checkpoint(older, config, epoch=1)
    save_checkpoint(newer, config, epoch=2)
    (newer / checkpoints.STATE_FILE).write_bytes(b"half a file")
    models, updater = training_parts(config)
    with caplog.at_level("WARNING", logger="colorray.train"):
        position = checkpoints.restore(Checkpoint.from_directory(str(newer)), models, updater)
    assert position == checkpoints.Position(1, 0, 10)
    assert f"checkpoint {newer} is unreadable (" in caplog.text
    assert f"resuming from the newest readable checkpoint, {older}" in caplog.text
    (older / checkpoints.STATE_FILE).unlink()
    with pytest.raises(checkpoints.CheckpointError, match=f"cannot resume: checkpoint {newer} is unreadable .*; "
                                                          f"checkpoint {older} is unreadable"):
        checkpoints.restore(Checkpoint.from_directory(str(newer)), models, updater)


def test_files_written_atomically_stay_whole_when_the_writing_fails(tmp_path):
    target = tmp_path / "config.yaml"
    target.write_text("old: true\n")

    def broken_writer(tmp: str) -> None:
        with open(tmp, "w") as handle:
            handle.write("new: tr")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, broken_writer)
    assert target.read_text() == "old: true\n" and sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]
    config = tiny_config(run={"name": "atomic", "storage_path": str(tmp_path)})
    checkpoints.save_run_config(config)
    assert load_config(tmp_path / "atomic" / checkpoints.RUN_CONFIG_FILE) == config
