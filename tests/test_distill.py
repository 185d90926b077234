"""SlotMatch distillation: the KD loss, a frozen teacher, resume, the ablation switches."""

import os
import shutil

import pytest
import torch

from conftest import tiny_config
from slotmatch.checkpoint import CheckpointError, load_model, read_checkpoint
from slotmatch.distill import SlotMatchModule, distill, student_config
from slotmatch.models import count_parameters
from slotmatch.train import train


@pytest.fixture(scope="module")
def teacher_ckpt(tiny_dataset, tmp_path_factory):
    return train(tiny_config(tiny_dataset), str(tmp_path_factory.mktemp("t") / "teacher"), progress=False)


@pytest.fixture(scope="module")
def student_run(tiny_dataset, teacher_ckpt, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("s") / "student")
    return run, distill(tiny_config(tiny_dataset), teacher_ckpt, run, progress=False)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"video": torch.rand(2, 2, 3, 32, 32, generator=g)}


def test_student_is_smaller_and_starts_from_the_teachers_slot_inits(tiny_dataset, teacher_ckpt):
    m = SlotMatchModule(tiny_config(tiny_dataset), teacher_ckpt)
    assert torch.equal(m.model.initializer.slots, m.teacher.initializer.slots)
    assert count_parameters(m.model)["total"] < count_parameters(m.teacher)["total"]
    assert not any(p.requires_grad for p in m.teacher.parameters())


def test_teacher_weights_do_not_change_and_get_no_gradient(tiny_dataset, teacher_ckpt):
    m = SlotMatchModule(tiny_config(tiny_dataset), teacher_ckpt)
    before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    opt = m.configure_optimizers()["optimizer"]
    m.train()
    assert not m.teacher.training  # the teacher stays in eval mode
    for i in range(3):
        loss = m.compute_losses(_batch(i))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in m.teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in m.teacher.state_dict().items())


def test_every_ablation_switch_changes_the_loss(tiny_dataset, teacher_ckpt):
    def terms(**distill):
        cfg = tiny_config(tiny_dataset)
        cfg["distill"].update(distill)
        torch.manual_seed(0)
        m = SlotMatchModule(cfg, teacher_ckpt)
        torch.manual_seed(0)
        m.model.load_state_dict(base.model.state_dict())
        return {k: v.item() for k, v in m.compute_losses(_batch()).items() if k != "out"}

    torch.manual_seed(0)
    base = SlotMatchModule(tiny_config(tiny_dataset), teacher_ckpt)
    ref = terms()
    assert set(ref) >= {"rec", "contrast", "kd"} and ref["kd"] > 0
    no_kd = terms(beta=0.0)
    assert no_kd["loss"] == pytest.approx(ref["loss"] - ref["kd"], rel=1e-5)
    feat = terms(feature_kd=1.0)
    assert "feature_kd" in feat and feat["loss"] == pytest.approx(ref["loss"] + feat["feature_kd"], rel=1e-5)
    mask = terms(mask_kd=1.0)
    assert "mask_kd" in mask and mask["loss"] == pytest.approx(ref["loss"] + mask["mask_kd"], rel=1e-5)


def test_a_decaying_kd_weight_falls_linearly_to_zero_and_weighs_the_kd_term(tiny_dataset, teacher_ckpt, monkeypatch):
    cfg = tiny_config(tiny_dataset)
    cfg["distill"].update(beta=0.5, beta_decay_steps=4)
    m = SlotMatchModule(cfg, teacher_ckpt)
    assert torch.equal(m.model.initializer.slots, m.teacher.initializer.slots)  # still a distillation from step 0
    weights, losses = [], []
    for step in (0, 1, 2, 4, 9):
        monkeypatch.setattr(SlotMatchModule, "global_step", property(lambda self, s=step: s))
        weights.append(m.kd_weight())
        t = {k: v.item() for k, v in m.compute_losses(_batch()).items() if k != "out"}
        losses.append(t["loss"] - t["rec"] - 0.5 * t["contrast"] - t["mask_entropy"] * m.mask_entropy_weight())
        assert t["kd"] > 0  # still computed (and logged) once its weight is 0
    assert weights == pytest.approx([0.5, 0.375, 0.25, 0.0, 0.0])
    kd = m.compute_losses(_batch())["kd"].item()
    assert losses == pytest.approx([w * kd for w in weights], abs=1e-5)
    cfg["distill"]["beta_decay_steps"] = -1
    with pytest.raises(ValueError, match="beta_decay_steps"):
        SlotMatchModule(cfg, teacher_ckpt)


def test_copy_slot_modules_starts_the_students_slot_attention_and_predictor_from_the_teachers(tiny_dataset, teacher_ckpt):
    cfg = tiny_config(tiny_dataset)
    plain = SlotMatchModule(cfg, teacher_ckpt)
    cfg["distill"]["copy_slot_modules"] = True
    m = SlotMatchModule(cfg, teacher_ckpt)
    for name in ("slot_attention", "predictor"):
        mine, theirs = getattr(m.model, name).state_dict(), getattr(m.teacher, name).state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
        assert not all(torch.equal(getattr(plain.model, name).state_dict()[k], theirs[k]) for k in theirs)
    before = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    opt = m.configure_optimizers()["optimizer"]
    m.train()
    m.compute_losses(_batch())["loss"].backward()
    opt.step()  # the student's copies train; the teacher's originals do not move
    assert all(torch.equal(before[k], v) for k, v in m.teacher.state_dict().items())
    assert any(not torch.equal(a, b) for a, b in zip(m.model.slot_attention.parameters(),
                                                      m.teacher.slot_attention.parameters()))
    cfg["student"] = {**cfg.get("student", {}), "sa_mlp_hidden": 8}
    with pytest.raises(CheckpointError, match="copy_slot_modules.*slot_attention"):
        SlotMatchModule(cfg, teacher_ckpt)


def test_distillation_run_saves_student_and_teacher(student_run):
    run, last = student_run
    assert read_checkpoint(last)["global_step"] == 4
    student, _ = load_model(last)
    teacher, _ = load_model(last, which="teacher")
    assert count_parameters(student)["total"] < count_parameters(teacher)["total"]
    header = open(os.path.join(run, "logs", "metrics.csv")).readline()
    for col in ("train/kd", "val/video_mbo", "teacher/video_mbo"):
        assert col in header


def test_distillation_resumes_from_a_checkpoint(student_run, tiny_dataset, teacher_ckpt, tmp_path):
    run, _ = student_run
    copy = str(tmp_path / "resumed")
    shutil.copytree(run, copy)
    last = distill(tiny_config(tiny_dataset, max_steps=6), teacher_ckpt, copy, resume=True, progress=False)
    assert read_checkpoint(last)["global_step"] == 6


def test_teacher_with_other_slots_is_refused(tiny_dataset, teacher_ckpt):
    cfg = tiny_config(tiny_dataset)
    cfg["student"]["num_slots"] = 5
    with pytest.raises(CheckpointError, match="num_slots"):
        SlotMatchModule(cfg, teacher_ckpt)


def test_student_alone_starts_from_its_own_slots_and_skips_the_teacher(tiny_dataset, teacher_ckpt):
    cfg = tiny_config(tiny_dataset)
    cfg["distill"]["beta"] = 0.0
    m = SlotMatchModule(cfg, teacher_ckpt)
    assert not torch.equal(m.model.initializer.slots, m.teacher.initializer.slots)
    calls = []
    m.teacher.register_forward_hook(lambda *a: calls.append(1))
    assert float(m.compute_losses(_batch())["kd"]) == 0.0 and not calls


def test_feature_projection_is_optimised_with_the_schedule(tiny_dataset, teacher_ckpt):
    cfg = tiny_config(tiny_dataset)
    m = SlotMatchModule(cfg, teacher_ckpt)
    m.feature_proj = torch.nn.Linear(3, 3)  # as built when the two decoders' outputs differ in size
    conf = m.configure_optimizers()
    conf["optimizer"].step()
    conf["lr_scheduler"]["scheduler"].step()  # one param group: the projection follows the schedule too
    ids = {id(p) for g in conf["optimizer"].param_groups for p in g["params"]}
    assert all(id(p) in ids for p in m.feature_proj.parameters())


def test_resume_with_another_teacher_or_settings_is_refused(student_run, tiny_dataset, teacher_ckpt, tmp_path):
    run, _ = student_run
    copy = str(tmp_path / "r")
    shutil.copytree(run, copy)
    other = str(tmp_path / "other.ckpt")
    shutil.copy(teacher_ckpt, other)
    with pytest.raises(CheckpointError, match="distils"):
        distill(tiny_config(tiny_dataset, max_steps=6), other, copy, resume=True, progress=False)
    cfg = tiny_config(tiny_dataset, max_steps=6)
    cfg["distill"]["mask_kd"] = 1.0
    with pytest.raises(CheckpointError, match="other distill settings"):
        distill(cfg, teacher_ckpt, copy, resume=True, progress=False)


def test_a_run_saved_before_a_distill_setting_existed_resumes_with_its_default(student_run, tiny_dataset, teacher_ckpt,
                                                                            tmp_path):
    run, _ = student_run
    copy = str(tmp_path / "old")
    shutil.copytree(run, copy)
    last = os.path.join(copy, "checkpoints", "last.ckpt")
    ckpt = read_checkpoint(last)
    for key in ("beta_decay_steps", "copy_slot_modules"):  # settings added after the run was made
        ckpt["hyper_parameters"]["cfg"]["distill"].pop(key)
    torch.save(ckpt, last)
    assert read_checkpoint(distill(tiny_config(tiny_dataset, max_steps=6), teacher_ckpt, copy, resume=True,
                                   progress=False))["global_step"] == 6
    cfg = tiny_config(tiny_dataset, max_steps=8)
    cfg["distill"]["beta_decay_steps"] = 4  # a value other than the default is still a change
    with pytest.raises(CheckpointError, match="beta_decay_steps"):
        distill(cfg, teacher_ckpt, copy, resume=True, progress=False)


def test_a_resumed_run_keeps_its_trained_slot_modules_not_fresh_copies(tiny_dataset, teacher_ckpt, tmp_path, monkeypatch):
    def slot_modules(state):
        return {k: v for k, v in state.items() if k.startswith(("model.slot_attention.", "model.predictor."))}

    cfg = tiny_config(tiny_dataset, max_steps=2)
    cfg["distill"]["copy_slot_modules"] = True
    run = str(tmp_path / "run")
    trained = slot_modules(read_checkpoint(distill(cfg, teacher_ckpt, run, progress=False))["state_dict"])
    teacher = {f"model.{k}": v for k, v in load_model(teacher_ckpt)[0].state_dict().items()}
    assert any(not torch.equal(v, teacher[k]) for k, v in trained.items())  # two steps moved them off the copies
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, closure=None: closure and closure())  # no update
    cfg["train"]["max_steps"] = 4
    ckpt = read_checkpoint(distill(cfg, teacher_ckpt, run, resume=True, progress=False))
    assert ckpt["global_step"] == 4
    assert all(torch.equal(v, trained[k]) for k, v in slot_modules(ckpt["state_dict"]).items())


def test_a_typo_in_the_config_is_an_error(tiny_dataset, teacher_ckpt):
    cfg = tiny_config(tiny_dataset)
    cfg["distill"]["betta"] = 1.0
    with pytest.raises(ValueError, match="distill.betta"):
        SlotMatchModule(cfg, teacher_ckpt)


def test_teacher_gets_the_depth_maps_for_feature_distillation(tiny_dataset, teacher_ckpt):
    cfg = tiny_config(tiny_dataset)
    cfg["distill"]["feature_kd"] = 1.0
    m = SlotMatchModule(cfg, teacher_ckpt)
    seen = []
    m.teacher.register_forward_hook(lambda mod, args, kwargs, out: seen.append(kwargs.get("depth")), with_kwargs=True)
    batch = dict(_batch(), depth=torch.rand(2, 2, 32, 32) + 1)
    m.compute_losses(batch)
    assert seen and seen[0] is batch["depth"]  # a depth-target teacher can build its reconstruction target


def test_batches_carry_what_the_student_and_a_feature_kd_teacher_reconstruct(tiny_dataset, teacher_ckpt):
    cfg = tiny_config(tiny_dataset)
    cfg["student"]["target"] = "pixels_raw+flow"  # the student's own target, not the config's model target
    m = SlotMatchModule(cfg, teacher_ckpt)
    assert m.data_targets() == ["pixels_raw+flow"]
    cfg["distill"]["feature_kd"] = 1.0
    m = SlotMatchModule(cfg, teacher_ckpt)
    assert m.data_targets() == ["pixels_raw+flow", m.teacher.target_type]
    from slotmatch.data.shards import DatasetError
    from slotmatch.train import make_loaders

    with pytest.raises(DatasetError, match="--with-flow"):  # the tiny dataset has no flow: asked for, not ignored
        make_loaders(cfg, targets=m.data_targets())


def _subset_kd_terms(data: str, teacher: str) -> tuple:
    """A student decoding 20 of its 64 patches, with feature and mask KD on: (module, its loss terms, its output)."""
    cfg = tiny_config(data, decoded_tokens=20)
    cfg["distill"].update(feature_kd=1.0, mask_kd=1.0)
    torch.manual_seed(0)
    m = SlotMatchModule(cfg, teacher)
    terms = m.compute_losses(_batch())
    return m, terms, terms["out"]


def test_kd_terms_follow_the_students_decoded_patch_subset(tiny_dataset, teacher_ckpt):
    m, terms, out = _subset_kd_terms(tiny_dataset, teacher_ckpt)
    assert out["reconstruction"].shape[2] == 20 and out["masks"].shape[-1] == 20  # of 64 patches
    assert all(torch.isfinite(terms[k]) for k in ("rec", "kd", "feature_kd", "mask_kd"))
    # the masks term compares the same patches: recomputed by hand from the teacher's full masks
    with torch.no_grad():
        t_masks = m.teacher(_batch()["video"], masks_only=True)["masks"][..., out["token_index"]]
    from slotmatch import losses
    assert terms["mask_kd"].item() == pytest.approx(losses.mask_distillation_loss(out["masks"], t_masks).item(), rel=1e-5)


def test_an_oracle_teacher_diagnostic_gets_the_masks_and_the_student_does_not(tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, max_steps=1, val_every=1)
    cfg["model"]["encoder"] = {"name": "oracle", "patch_size": 4}
    cfg["model"]["target"] = "features"
    cfg["student"]["encoder"]["frozen"] = True
    teacher = train(cfg, str(tmp_path / "oracle-teacher"), progress=False)
    m = SlotMatchModule(tiny_config(tiny_dataset), teacher)
    seen = {"teacher": [], "student": []}
    m.teacher.register_forward_hook(lambda mod, a, kw, out: seen["teacher"].append(kw.get("segmentations")),
                                    with_kwargs=True)
    m.model.register_forward_hook(lambda mod, a, kw, out: seen["student"].append(kw.get("segmentations")),
                                  with_kwargs=True)
    batch = dict(_batch(), segmentations=torch.randint(0, 3, (2, 2, 32, 32)))
    m.compute_losses(batch)
    assert seen["teacher"][0] is batch["segmentations"] and seen["student"] == [None]
    distill(tiny_config(tiny_dataset, max_steps=1, val_every=1), teacher, str(tmp_path / "s"), progress=False)


def test_with_the_feature_cache_neither_encoder_runs_and_the_kd_is_the_same(tiny_dataset, tmp_path):
    from slotmatch.data.dataset import open_dataset
    from slotmatch.train import make_loaders

    cfg = tiny_config(tiny_dataset, feature_cache=True, max_steps=2, val_every=2)
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    for part in ("model", "student"):
        cfg[part]["encoder"]["frozen"] = True
    cfg["model"]["target"] = "features"
    teacher = train(cfg, str(tmp_path / "teacher"), progress=False)
    m = SlotMatchModule(cfg, teacher)
    assert m.uses_feature_cache
    loader, _ = make_loaders(cfg, m.model, progress=False, targets=m.data_targets(), teacher=m.teacher,
                             teacher_cfg=m.teacher_model_cfg, model_cfg=student_config(cfg))
    assert len(os.listdir(tmp_path / "cache")) == 2  # the student's features and the teacher's
    batch = next(iter(loader))
    assert "video" not in batch and batch["teacher_features"].shape[-1] == m.teacher.encoder.feature_dim
    videos = open_dataset(tiny_dataset, "train", size=32)
    for j, key in enumerate(batch["key"]):  # the same clip of the same video in both caches
        frames = videos[int(key)]["video"]
        with torch.no_grad():
            whole_t, whole_s = m.teacher.encoder(frames), m.model.encoder(frames)
        starts = [t for t in range(frames.shape[0] - 1)
                  if torch.allclose(whole_t[t:t + 2], batch["teacher_features"][j], atol=1e-2)]
        assert starts and torch.allclose(whole_s[starts[0]:starts[0] + 2], batch["features"][j], atol=1e-2)
    # the cached features give the loss the frames give
    key, start = int(batch["key"][0]), starts[0]
    clip = {"video": videos[key]["video"][None, start:start + 2]}
    with torch.no_grad():
        from_frames = m.compute_losses(clip)

        def no_encoder(*args, **kwargs):
            raise AssertionError("an encoder ran on a cached batch")

        m.model.encoder.forward = m.teacher.encoder.forward = no_encoder
        from_cache = m.compute_losses({k: batch[k][:1] for k in ("features", "teacher_features")})
    assert float(from_cache["kd"]) == pytest.approx(float(from_frames["kd"]), abs=1e-2)
    del m.model.encoder.forward, m.teacher.encoder.forward
    last = distill(cfg, teacher, str(tmp_path / "student"), progress=False)
    assert read_checkpoint(last)["global_step"] == 2
    # held-out videos (train.select_videos) leave the cached training set too, and choose the student's best.ckpt
    cfg["train"]["select_videos"] = 2
    loader, (_, select) = make_loaders(cfg, m.model, progress=False, targets=m.data_targets(), teacher=m.teacher,
                                       teacher_cfg=m.teacher_model_cfg, model_cfg=student_config(cfg))
    assert sorted(int(loader.dataset[i]["key"]) for i in range(len(loader.dataset))) == [0, 1, 2, 3]
    assert [s["key"] for s in select.dataset] == [videos[4]["key"], videos[5]["key"]]
    distill(cfg, teacher, str(tmp_path / "selected"), progress=False)
    assert read_checkpoint(str(tmp_path / "selected" / "checkpoints" / "best.ckpt"))["global_step"] == 2


def test_an_oracle_teacher_is_never_fed_from_the_cache(tiny_dataset, tmp_path):
    cfg = tiny_config(tiny_dataset, feature_cache=True, max_steps=1, val_every=1)
    cfg["model"]["encoder"] = {"name": "oracle", "patch_size": 4}
    cfg["model"]["target"] = "features"
    cfg["student"]["encoder"]["frozen"] = True
    teacher = train(tiny_config(tiny_dataset, max_steps=1, val_every=1) | {"model": cfg["model"]},
                    str(tmp_path / "teacher"), progress=False)
    assert not SlotMatchModule(cfg, teacher).uses_feature_cache


@pytest.mark.parametrize("cached", [False, True])
def test_with_a_burn_in_each_model_carries_its_own_slots_into_the_clip(tiny_dataset, teacher_ckpt, monkeypatch, cached):
    from slotmatch import distill as distill_module
    from slotmatch.train import split_burn_in

    cfg = tiny_config(tiny_dataset, burn_in=2)
    if cached:
        cfg["model"]["target"] = "features"  # what a cached student reconstructs, with its frozen encoder
        cfg["student"]["encoder"]["frozen"] = True
    m = SlotMatchModule(cfg, teacher_ckpt)
    monkeypatch.setattr(m, "draw_burn_in", lambda batch: split_burn_in(batch, 2, 2))  # the longest burn-in
    seen = {}

    def kd(student, teacher):
        seen["student"], seen["teacher"] = student, teacher
        return (student * 0).sum()

    monkeypatch.setattr(distill_module.losses, "slot_distillation_loss", kd)
    video = torch.rand(2, 4, 3, 32, 32)
    with torch.no_grad():  # the feature cache's batches: both models' features, no frames
        batch = {"features": m.model.encode(video, with_target=False)["features"],
                 "teacher_features": m.teacher.encode(video, with_target=False)["features"]} if cached else {"video": video}
    m.compute_losses(batch)
    with torch.no_grad():
        assert torch.allclose(seen["teacher"], m.teacher(video)["slots"][:, 2:], atol=1e-5)
        m.model.eval()
        assert torch.allclose(seen["student"], m.model(video)["slots"][:, 2:], atol=1e-5)


@pytest.mark.filterwarnings("ignore:step .*the masks sit on one slot")  # a 4-step student may; the warning is tested
def test_distillation_with_ema_saves_a_student_that_loads(tiny_dataset, teacher_ckpt, tmp_path):
    last = distill(tiny_config(tiny_dataset, ema=0.9), teacher_ckpt, str(tmp_path / "ema"), progress=False)
    student, _ = load_model(last)
    teacher, _ = load_model(teacher_ckpt)
    assert count_parameters(student)["total"] < count_parameters(teacher)["total"]  # the student, not the teacher
    inside, _ = load_model(last, which="teacher")
    assert all(torch.equal(inside.state_dict()[k], v) for k, v in teacher.state_dict().items())  # teacher untouched


def test_the_mask_flow_weight_reaches_the_students_loss(tiny_dataset, teacher_ckpt):
    cfg = tiny_config(tiny_dataset, mask_flow=0.5)
    torch.manual_seed(0)
    m = SlotMatchModule(cfg, teacher_ckpt)
    batch = _batch()
    with pytest.raises(ValueError, match="with-flow"):  # no flow in the batch: a clear error
        m.compute_losses(batch)
    B, T, _, H, W = batch["video"].shape
    batch["flow"] = torch.randn(B, T, H, W, 2)
    torch.manual_seed(0)
    terms = m.compute_losses(batch)
    torch.manual_seed(0)
    m.ts["mask_flow"] = 0.0
    off = m.compute_losses(batch)
    assert "mask_flow" not in off and 0 <= terms["mask_flow"].item() <= 1
    assert terms["loss"].item() == pytest.approx((off["loss"] + 0.5 * terms["mask_flow"]).item(), rel=1e-5)


def test_export_writes_either_model_of_a_distillation_as_small_weights_that_load_alone(student_run, tmp_path, capsys):
    from slotmatch.cli import main

    run, last = student_run
    video = torch.rand(1, 3, 3, 32, 32)
    for which in ("model", "teacher"):
        out = str(tmp_path / "exports" / f"{which}.safetensors")  # the folder is made
        assert main(["export", last, "--out", out, "--which", which, "--dtype", "fp32"]) == 0
        assert out in capsys.readouterr().out
        exported, _ = load_model(out)
        original, _ = load_model(last, which=which)
        with torch.no_grad():
            assert torch.equal(exported(video, masks_only=True)["masks"], original(video, masks_only=True)["masks"])
    assert count_parameters(load_model(str(tmp_path / "exports" / "model.safetensors"))[0])["total"] < \
        count_parameters(load_model(str(tmp_path / "exports" / "teacher.safetensors"))[0])["total"]
    half = str(tmp_path / "half.safetensors")
    assert main(["export", last, "--out", half]) == 0  # fp16 by default: half the bytes of fp32
    assert os.path.getsize(half) < 0.6 * os.path.getsize(str(tmp_path / "exports" / "model.safetensors"))


def test_export_errors_name_the_file(student_run, tmp_path, capsys):
    from slotmatch.cli import main

    run, last = student_run
    assert main(["export", last, "--out", str(tmp_path / "model.pt")]) == 2
    assert "model.pt" in capsys.readouterr().err  # the loaders need the .safetensors suffix
    assert main(["export", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert "missing.ckpt" in capsys.readouterr().err
    exported = str(tmp_path / "exported.safetensors")
    assert main(["export", last, "--out", exported]) == 0
    assert main(["export", exported, "--out", str(tmp_path / "again.safetensors")]) == 2
    assert "already exported" in capsys.readouterr().err


def test_feature_kd_from_a_finer_teacher_grid_compares_each_student_patch_with_the_mean_it_covers(tiny_dataset,
                                                                                                 tmp_path):
    from slotmatch import losses
    from slotmatch.distill import match_grid

    cfg = tiny_config(tiny_dataset, max_steps=1)
    cfg["model"]["encoder"]["patch_size"] = 2  # the teacher on 16x16 tokens, the student on 8x8 (as movi-c-like-pixel)
    m, terms, out = _subset_kd_terms(tiny_dataset, train(cfg, str(tmp_path / "fine-teacher"), progress=False))
    decoded = []  # the teacher decodes only the 4 tokens under each of the student's 20 decoded patches
    hook = m.teacher.decoder.register_forward_hook(lambda mod, args, o: decoded.append(o["reconstruction"].shape[1]))
    m.compute_losses(_batch())
    hook.remove()
    assert decoded == [20 * 4]
    assert tuple(out["mask_grid"]) == (8, 8) and all(torch.isfinite(terms[k]) for k in ("feature_kd", "mask_kd"))
    with torch.no_grad():
        t = m.teacher(_batch()["video"])
        t_rec = t["reconstruction"]  # (B, T, 256, F) on the 16x16 grid
        B, T, _, F = t_rec.shape
        pooled = t_rec.reshape(B, T, 8, 2, 8, 2, F).mean((3, 5)).reshape(B, T, 64, F)[:, :, out["token_index"]]
        s_rec = m.feature_proj(out["reconstruction"]) if m.feature_proj is not None else out["reconstruction"]
    assert terms["feature_kd"].item() == pytest.approx(losses.feature_distillation_loss(s_rec, pooled).item(), rel=1e-5)
    # the masks are pooled alike and stay distributions over the slots
    masks = match_grid(t["masks"], (16, 16), (8, 8))
    assert torch.allclose(masks.sum(2), torch.ones(()), atol=1e-5)
    assert terms["mask_kd"].item() == pytest.approx(
        losses.mask_distillation_loss(out["masks"], masks[..., out["token_index"]]).item(), rel=1e-5)
    assert torch.allclose(masks, t["masks"].reshape(B, T, -1, 8, 2, 8, 2).mean((4, 6)).reshape(B, T, -1, 64), atol=1e-6)


def test_covering_tokens_lists_each_student_patch_block_of_teacher_tokens_in_a_row():
    from slotmatch.distill import block_mean, covering_tokens

    # patches 1 and 2 of a 2x2 grid cover these tokens of a 4x4 grid
    assert covering_tokens(torch.tensor([1, 2]), (2, 2), (4, 4)).tolist() == [2, 3, 6, 7, 8, 9, 12, 13]
    # a 2x3 grid over a 4x6 one: patch 4 (row 1, column 1) covers rows 2-3, columns 2-3 of the 6-wide grid
    assert covering_tokens(torch.tensor([4]), (2, 3), (4, 6)).tolist() == [14, 15, 20, 21]
    assert covering_tokens(torch.tensor([3]), (2, 2), (2, 2)).tolist() == [3]  # the same grid: the same tokens
    assert covering_tokens(torch.tensor([0]), (2, 2), (3, 3)) is None  # not a whole multiple: decode every token
    assert covering_tokens(None, (2, 2), (4, 4)) is None
    x = torch.arange(8.0).view(1, 8, 1)
    assert block_mean(x, 1, 2).flatten().tolist() == [1.5, 5.5]
