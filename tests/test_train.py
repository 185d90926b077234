"""Teacher training: a few Lightning steps, checkpoints that load safely, resume, config checks, export."""

import os
import stat
import warnings

import lightning as L
import pytest
import torch

from conftest import tiny_config
from slotmatch.checkpoint import CheckpointError, export_safetensors, load_model, read_checkpoint
from slotmatch.train import lr_factor, train, warn_if_collapsed


@pytest.fixture(scope="module")
def teacher_run(tiny_dataset, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("runs") / "teacher")
    cfg = tiny_config(tiny_dataset)
    last = train(cfg, run, progress=False)
    return cfg, run, last


def test_run_writes_checkpoints_logs_and_overlays(teacher_run):
    cfg, run, last = teacher_run
    ckpt = torch.load(last, map_location="cpu", weights_only=True)  # safe loading works
    assert ckpt["global_step"] == 4
    assert os.path.exists(os.path.join(run, "logs", "metrics.csv"))
    assert os.path.exists(os.path.join(run, "config.yaml"))
    assert sorted(os.listdir(os.path.join(run, "overlays"))) == ["step_0000002.png", "step_0000004.png"]
    header = open(os.path.join(run, "logs", "metrics.csv")).readline()
    for col in ("train/loss", "val/video_fg_ari", "val/video_mbo", "ref_grid/video_fg_ari", "val/segments_per_frame"):
        assert col in header


def test_a_validation_whose_masks_sit_on_one_slot_warns_with_its_step():
    with pytest.warns(UserWarning, match=r"step 750: the masks sit on one slot.*1\.02 segments of 15"):
        assert warn_if_collapsed(1.02, 15, 750, warmup_steps=200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a healthy validation warns nothing
        assert not warn_if_collapsed(7.9, 11, 1000, warmup_steps=200)
        assert not warn_if_collapsed(float("nan"), 11, 1000)  # no frames scored: nothing to say
        assert not warn_if_collapsed(1.0, 11, 100, warmup_steps=200)  # a fresh model still warming up


def test_resume_continues_from_last_checkpoint(teacher_run, tmp_path):
    cfg, run, last = teacher_run
    import shutil

    copy = str(tmp_path / "resumed")
    shutil.copytree(run, copy)
    cfg6 = tiny_config(cfg["data"]["path"], max_steps=6)
    last6 = train(cfg6, copy, resume=True, progress=False)
    assert read_checkpoint(last6)["global_step"] == 6
    assert os.path.exists(os.path.join(copy, "logs", "metrics.csv"))  # the first part of the curves is kept
    assert os.path.exists(os.path.join(copy, "logs_1", "metrics.csv"))
    with pytest.raises(ValueError, match="--resume"):
        train(cfg6, copy, progress=False)  # an existing run is never overwritten silently


def test_resume_with_another_model_config_is_refused(teacher_run, tmp_path):
    cfg, run, last = teacher_run
    import shutil

    copy = str(tmp_path / "other")
    shutil.copytree(run, copy)
    other = tiny_config(cfg["data"]["path"])
    other["model"]["num_slots"] = 5
    with pytest.raises(CheckpointError, match="another model config"):
        train(other, copy, resume=True, progress=False)


def test_load_model_and_export_give_the_same_masks(teacher_run, tmp_path):
    cfg, run, last = teacher_run
    model, loaded_cfg = load_model(last)
    assert loaded_cfg["model"] == cfg["model"]
    out = str(tmp_path / "teacher.safetensors")
    export_safetensors(last, out)
    small, _ = load_model(out)
    video = torch.rand(1, 3, 3, 32, 32)
    with torch.no_grad():
        a = model(video, masks_only=True)["masks"]
        b = small(video, masks_only=True)["masks"]
    assert torch.allclose(a, b, atol=2e-2)  # fp16 export


def test_exported_weights_are_readable_as_the_umask_says(teacher_run, tmp_path):
    _, _, last = teacher_run
    old = os.umask(0o022)
    try:
        out = export_safetensors(last, str(tmp_path / "teacher.safetensors"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644  # safetensors alone leaves 0600: others could not read it


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="x.ckpt"):
        load_model(str(bad))
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a slotmatch checkpoint"):
        load_model(str(tmp_path / "other.ckpt"))


def test_lr_schedule_warms_up_then_decays():
    assert lr_factor(0, 10, 0.5, 100) == pytest.approx(0.1 * 0.5 ** 0)
    assert lr_factor(9, 10, 0.5, 100) == pytest.approx(0.5 ** 0.09)
    assert lr_factor(100, 10, 0.5, 100) == pytest.approx(0.5)


def test_config_typos_are_errors(tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset)
    cfg["train"]["max_step"] = 10
    with pytest.raises(ValueError, match="train.max_step"):
        train(cfg, str(tmp_path / "a"), progress=False)
    cfg = tiny_config(tiny_dataset)
    cfg["model"]["num_slot"] = 5
    with pytest.raises(ValueError, match="num_slot"):
        train(cfg, str(tmp_path / "b"), progress=False)


def test_init_from_starts_from_a_checkpoints_weights(tiny_teacher_run, tiny_dataset, tmp_path):
    from slotmatch.train import SlotContrastModule, init_weights

    cfg, _, last = tiny_teacher_run
    source, _ = load_model(last)
    module = SlotContrastModule(tiny_config(tiny_dataset))
    assert not torch.equal(module.model.initializer.slots, source.initializer.slots)  # fresh weights differ
    init_weights(module.model, last)
    for k, v in source.state_dict().items():
        assert torch.equal(module.model.state_dict()[k], v), k
    other_cfg = tiny_config(tiny_dataset)
    other_cfg["model"]["slot_dim"] = 8
    with pytest.raises(CheckpointError, match="does not fit"):
        init_weights(SlotContrastModule(other_cfg).model, last)
    # through `train`, with other data settings: the run starts from the checkpoint's weights
    run = str(tmp_path / "ft")
    ft_cfg = tiny_config(tiny_dataset, max_steps=1, val_every=1, init_from=last, lr=1e-9)
    ft_cfg["data"]["clip_length"] = 3
    tuned, _ = load_model(train(ft_cfg, run, progress=False))
    assert torch.allclose(tuned.initializer.slots, source.initializer.slots, atol=1e-6)


def test_burn_in_splits_off_the_frames_before_the_clip():
    from slotmatch.train import split_burn_in

    batch = {"video": torch.arange(6).view(1, 6, 1, 1, 1).float(), "key": ["v0"]}
    head, tail = split_burn_in(batch, 3, 2)
    assert head["video"].flatten().tolist() == [0, 1, 2] and tail["video"].flatten().tolist() == [3, 4]
    assert head["key"] == tail["key"] == ["v0"]
    head, tail = split_burn_in(batch, 0, 2)
    assert head["video"].shape[1] == 0 and tail["video"].flatten().tolist() == [0, 1]
    with pytest.raises(ValueError, match="burn-in of 5"):
        split_burn_in(batch, 5, 2)
    from slotmatch.train import TIME_KEYS

    every = {k: torch.arange(6).view(1, 6, 1).expand(2, 6, 3) for k in TIME_KEYS}
    every["num_objects"] = torch.tensor([3, 4])  # not a time axis: kept whole
    head, tail = split_burn_in(every, 3, 2)
    for k in TIME_KEYS:  # video, features, teacher_features, depth, flow and segmentations alike
        assert head[k][0, :, 0].tolist() == [0, 1, 2] and tail[k][0, :, 0].tolist() == [3, 4], k
    assert torch.equal(head["num_objects"], every["num_objects"]) and torch.equal(tail["num_objects"], every["num_objects"])


def test_a_clip_started_from_the_burn_in_slots_continues_the_rollout(tiny_dataset):
    from slotmatch.models import build_model
    from slotmatch.train import rollout_slots, split_burn_in

    torch.manual_seed(0)
    model = build_model(tiny_config(tiny_dataset)["model"]).eval()
    video = torch.rand(2, 5, 3, 32, 32)
    with torch.no_grad():
        whole = model(video)["slots"]  # one pass over the 5 frames
        head, tail = split_burn_in({"video": video}, 3, 2)
        prev = rollout_slots(model, head)
        clip = model(tail["video"], prev_slots=prev)["slots"]
        fresh = model(tail["video"])["slots"]
    assert torch.allclose(clip, whole[:, 3:], atol=1e-5)  # the clip continues the rollout ...
    assert not torch.allclose(fresh, whole[:, 3:], atol=1e-3)  # ... where a fresh start would not
    assert rollout_slots(model, split_burn_in({"video": video}, 0, 2)[0]) is None
    model.train()
    rollout_slots(model, head)
    assert model.training  # the mode is restored


def test_training_with_a_burn_in_reads_longer_clips(tiny_dataset, tmp_path):
    from slotmatch.train import SlotContrastModule, make_loaders

    cfg = tiny_config(tiny_dataset, max_steps=2, val_every=2, burn_in=3)
    module = SlotContrastModule(cfg)
    loader, _ = make_loaders(cfg, module.model, progress=False)
    batch = next(iter(loader))
    assert batch["video"].shape[1] == 2 + 3  # clip_length + burn_in
    assert torch.isfinite(module.compute_losses(batch)["loss"])
    assert read_checkpoint(train(cfg, str(tmp_path / "run"), progress=False))["global_step"] == 2
    long = SlotContrastModule(tiny_config(tiny_dataset, burn_in=10))  # longer than the 6-frame videos allow
    burn, clip = long.draw_burn_in({"video": torch.rand(1, 6, 3, 32, 32)})
    assert burn["video"].shape[1] <= 4 and clip["video"].shape[1] == 2
    burn, clip = long.draw_burn_in({"video": torch.rand(1, 1, 3, 32, 32)})  # shorter than a clip: used as it is
    assert burn["video"].shape[1] == 0 and clip["video"].shape[1] == 1
    with pytest.raises(CheckpointError, match="burn_in=3"):  # a resume never switches the burn-in silently
        train(tiny_config(tiny_dataset, max_steps=4, burn_in=0), str(tmp_path / "run"), resume=True, progress=False)


def test_held_out_training_videos_choose_best_ckpt(tiny_dataset, tmp_path):
    import csv

    from slotmatch.plots import plot_run
    from slotmatch.train import make_loaders

    cfg = tiny_config(tiny_dataset, max_steps=6, val_every=2, checkpoint_every=2, select_videos=2)
    train_loader, (val_loader, select_loader) = make_loaders(cfg, progress=False)
    trained = {train_loader.dataset[i]["key"] for i in range(len(train_loader.dataset))}
    held_out = {s["key"] for s in select_loader.dataset}
    assert len(trained) == 4 and len(held_out) == 2 and not trained & held_out  # never trained on
    assert select_loader.dataset[0]["video"].shape[0] == 6  # whole videos, as validation scores them
    run = str(tmp_path / "select")
    train(cfg, run, progress=False)
    rows = [r for r in csv.DictReader(open(os.path.join(run, "logs", "metrics.csv"))) if r.get("select/video_mbo")]
    assert [int(r["step"]) for r in rows] == [1, 3, 5]  # Lightning logs validation at step - 1
    scores = [float(r["select/video_mbo"]) for r in rows]
    best = read_checkpoint(os.path.join(run, "checkpoints", "best.ckpt"))
    assert best["global_step"] == 2 * (1 + scores.index(max(scores)))  # the first of equal scores is kept
    assert len(plot_run(run)) == 2  # the validation plot draws the held-out curve beside the model's
    with pytest.raises(ValueError, match="select_videos=6.*only 6 training videos"):
        make_loaders(tiny_config(tiny_dataset, select_videos=6), progress=False)
    with pytest.raises(ValueError, match="select_metric='mbo'"):
        train(tiny_config(tiny_dataset, select_videos=2, select_metric="mbo"), str(tmp_path / "typo"), progress=False)


@pytest.mark.filterwarnings("ignore:The dirpath has changed")  # Lightning's note on a moved run: what is tested here
def test_a_copied_run_keeps_its_best_score_on_resume(tmp_path):
    from slotmatch.train import _run_checkpoint_class

    from lightning.pytorch.callbacks import ModelCheckpoint

    RunCheckpoint = _run_checkpoint_class()
    kwargs = dict(dirpath=str(tmp_path), monitor="step", mode="max", every_n_train_steps=250)
    assert RunCheckpoint(**kwargs).state_key == ModelCheckpoint(**kwargs).state_key  # older runs resume their state
    old = RunCheckpoint(dirpath=str(tmp_path / "a" / "checkpoints"), filename="best", monitor="select/video_mbo")
    state = dict(old.state_dict(), best_model_score=torch.tensor(0.3),
                 best_model_path=os.path.join(old.dirpath, "best.ckpt"),
                 best_k_models={os.path.join(old.dirpath, "best.ckpt"): torch.tensor(0.3)})
    os.makedirs(tmp_path / "b" / "checkpoints")
    new = RunCheckpoint(dirpath=str(tmp_path / "b" / "checkpoints"), filename="best", monitor="select/video_mbo")
    new.load_state_dict(dict(state))
    assert new.best_model_score is None  # best.ckpt was not copied along: nothing to keep
    (tmp_path / "b" / "checkpoints" / "best.ckpt").write_bytes(b"")
    new.load_state_dict(dict(state))
    assert float(new.best_model_score) == pytest.approx(0.3)  # a later, worse step will not overwrite best.ckpt
    assert new.best_model_path == os.path.join(new.dirpath, "best.ckpt")
    assert list(new.best_k_models) == [new.best_model_path]


def test_ema_validates_and_saves_averaged_weights_while_the_raw_ones_train(tiny_dataset, tmp_path):
    plain = tiny_config(tiny_dataset, max_steps=4)
    train(plain, str(tmp_path / "plain"), progress=False)
    ema = tiny_config(tiny_dataset, max_steps=4, ema=0.999999)  # the average stays at the weights after step 1
    train(ema, str(tmp_path / "ema"), progress=False)
    raw = read_checkpoint(str(tmp_path / "plain" / "checkpoints" / "step0000004.ckpt"))["state_dict"]
    step4 = torch.load(str(tmp_path / "ema" / "checkpoints" / "step0000004.ckpt"), map_location="cpu",
                       weights_only=True)
    trained = [k for k in raw if k.startswith("model.") and "encoder" not in k and raw[k].is_floating_point()]
    assert trained
    for k in trained:  # the raw weights train exactly as without the average
        torch.testing.assert_close(step4["current_model_state"][k], raw[k])
    moved = [k for k in trained if not torch.allclose(step4["state_dict"][k], raw[k])]
    assert len(moved) > len(trained) // 2  # what evaluate and distill read is the average, not the raw weights
    final = torch.load(str(tmp_path / "ema" / "checkpoints" / "last.ckpt"), map_location="cpu", weights_only=True)
    for k in trained:  # the last.ckpt written after training still carries the raw weights for a resume
        torch.testing.assert_close(final["current_model_state"][k], raw[k])
    last = train(tiny_config(tiny_dataset, max_steps=6, ema=0.999999), str(tmp_path / "ema"), resume=True,
                 progress=False)
    assert read_checkpoint(last)["global_step"] == 6
    with pytest.raises(CheckpointError, match="train.ema=0.999999"):  # switched off, it would train on the average
        train(tiny_config(tiny_dataset, max_steps=8), str(tmp_path / "ema"), resume=True, progress=False)
    with pytest.raises(ValueError, match="train.ema=1.5"):
        train(tiny_config(tiny_dataset, ema=1.5), str(tmp_path / "bad"), progress=False)


def test_ema_moves_only_the_trained_weights_and_lives_on_the_training_device():
    from types import SimpleNamespace

    from slotmatch.train import ema_callback

    class Net(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.frozen, self.trained = torch.nn.Linear(2, 2).requires_grad_(False), torch.nn.Linear(2, 2)
            self.register_buffer("stat", torch.zeros(2))

    net, callback = Net(), ema_callback(0.5)
    trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu")), global_step=1)
    callback.setup(trainer, net, "fit")
    assert all(p.device == trainer.strategy.root_device for p in callback._average_model.parameters())
    callback.on_train_batch_end(trainer, net, None, None, 0)  # the first update copies every weight
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
        net.stat += 2.0
    trainer.global_step = 2
    callback.on_train_batch_end(trainer, net, None, None, 1)
    average = callback._average_model.module
    torch.testing.assert_close(average.trained.weight, net.trained.weight - 0.5)  # halfway with decay 0.5
    torch.testing.assert_close(average.stat, torch.ones(2))
    torch.testing.assert_close(average.frozen.weight, net.frozen.weight - 1.0)  # a frozen weight is never read
    callback.on_train_batch_end(trainer, net, None, None, 1)  # the same optimizer step: no second update
    torch.testing.assert_close(average.trained.weight, net.trained.weight - 0.5)
