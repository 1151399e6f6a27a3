"""The fgseg task: data from the synthetic generator, dense and stage-2 steps that learn."""
import numpy as np
import pytest
import torch

from patchprune.learned import build
from patchprune.fgseg.model import FgSegConfig, FgSegModel
from patchprune.train.checkpoint import load_checkpoint
from patchprune.fgseg.training import FgSegData, dense_step, make_data, sample_chains, sparse_step


def test_data_labels_and_instances_agree():
    data = make_data(0, "train", 2, 6, 48, progress=False)
    assert data.frames.shape == (2, 6, 48, 48, 3) and data.labels.shape == (2, 6, 48, 48)
    for v in range(2):
        for t in range(6):
            inst = data.instances[v][t]
            union = inst.any(0) if inst.shape[0] else np.zeros((48, 48), dtype=bool)
            assert ((data.labels[v, t] > 0).numpy() == union).all()


def test_chain_offsets_within_five_frames():
    data = make_data(0, "train", 2, 12, 48, progress=False)
    g = torch.Generator().manual_seed(0)
    images, labels = sample_chains(data, 4, g)
    assert len(images) == 3 and images[0].shape == (4, 3, 48, 48)

    # Frame t of video v is filled with the value 16 v + t (pixels and labels), so the frame indices
    # of a chain can be read back (a constant frame is the same after a horizontal flip).
    V, T, S = 3, 12, 16
    code = 16 * torch.arange(V)[:, None] + torch.arange(T)[None, :]  # [V, T]
    frames = code[:, :, None, None, None].expand(V, T, S, S, 3).to(torch.uint8).contiguous()
    labels_vt = code[:, :, None, None].expand(V, T, S, S).contiguous()
    synthetic = FgSegData(frames, labels_vt, num_classes=64)
    g = torch.Generator().manual_seed(0)
    keys_seen = set()
    for _ in range(20):
        images, labels = sample_chains(synthetic, 16, g)
        assert len(images) == 3 and len(labels) == 3
        got = [lb.flatten(1) for lb in labels]  # per pass: [B, S*S]
        for lb in got:
            assert (lb == lb[:, :1]).all()  # one whole frame per sample
        codes = [lb[:, 0] for lb in got]
        for im, c in zip(images, codes):  # the images show the same frames as the labels
            pixel = torch.round((im * 0.25 + 0.5) * 255).long()  # undo `normalise`
            assert (pixel == c[:, None, None, None]).all()
        video = codes[2] // 16
        assert all((c // 16 == video).all() for c in codes)  # one video per chain
        refref, ref, key = (c % 16 for c in codes)
        d_refref, d_ref = refref - key, ref - key
        assert ((d_refref.abs() > 0) & (d_refref.abs() <= 5)).all()
        assert ((d_ref.abs() > 0) & (d_ref.abs() <= 5)).all()
        assert (d_refref != d_ref).all()  # two distinct offsets
        assert (d_refref.abs() >= d_ref.abs()).all()  # ref-ref is the farther one (ties: +-k, both k away)
        assert ((refref >= 0) & (refref < T) & (ref >= 0) & (ref < T)).all()  # clamped to the video
        keys_seen.update(key.tolist())
    assert keys_seen == set(range(T))  # the edges (few valid offsets) were exercised too


def test_dense_and_sparse_steps_reduce_their_loss():
    torch.manual_seed(0)
    data = make_data(0, "train", 2, 8, 48, progress=False)
    model = FgSegModel(FgSegConfig(img_size=48, dim=32, heads=2, depth=12, head_hidden=8))
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for i in range(12):
        loss = dense_step(model, data, 4, torch.Generator().manual_seed(0))["loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    pruner = build("vpp", model.backbone, 0.55).train()
    logs = sparse_step(model, pruner, data, 2, g)
    assert set(logs) >= {"loss", "seg", "sparsity", "pkr"}
    logs["loss"].backward()
    assert all(p.grad is not None for p in pruner.runner.policies.parameters())
    # stage 2 on one fixed chain batch (same frames and Gumbel noise every step) lowers its loss
    opt = torch.optim.AdamW(list(pruner.runner.policies.parameters()) + list(model.parameters()), lr=3e-3)
    first = None
    for i in range(12):
        torch.manual_seed(100)
        loss = sparse_step(model, pruner, data, 2, torch.Generator().manual_seed(0))["loss"]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first


def test_bench_uses_context_scenes_and_never_resumes_another_configuration():
    from dataclasses import replace

    from patchprune.fgseg.config import FgSegBenchConfig, training_fingerprint
    from patchprune.data.synth import Difficulty

    quick = FgSegBenchConfig.quick()
    assert quick.difficulty["foreground"] == "cue"
    Difficulty.from_kwargs(dict(quick.difficulty))  # valid generator options
    fp = training_fingerprint(quick)
    assert fp == training_fingerprint(replace(quick, seeds=(5,), threads=1))  # not part of training
    assert fp != training_fingerprint(replace(quick, difficulty={**quick.difficulty, "foreground": "appearance"}))
    assert fp != training_fingerprint(replace(quick, policy_eps=1e-9))


def test_finetune_resumes_a_partial_checkpoint_at_its_step(tmp_path, monkeypatch):
    from dataclasses import replace

    import patchprune.fgseg.training as fgseg_mod
    import patchprune.train.loop as loop_mod
    from patchprune.fgseg.config import DENSE_FT, FgSegBenchConfig, seg_config
    from patchprune.fgseg.training import finetune

    cfg = replace(FgSegBenchConfig.quick(), size=32, dim=16, heads=2, frames=6, finetune_steps=6, finetune_batch=2)
    data = make_data(0, "train", 3, cfg.frames, cfg.size, progress=False, **cfg.difficulty)
    torch.manual_seed(0)
    dense = FgSegModel(seg_config(cfg, data.num_classes)).eval()
    ref, _, ref_hist = finetune(cfg, 0, dense, data, DENSE_FT, 1.0, tmp_path / "ref", False)
    assert [h["step"] for h in ref_hist] == list(range(6))

    # an interrupted fine-tune that left a checkpoint at step 2 (period shortened from LoopConfig's 100)
    real_step, real_config, calls, crash_at = fgseg_mod.sparse_step, loop_mod.LoopConfig, [], [3]

    def counting_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == crash_at[0]:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(fgseg_mod, "sparse_step", counting_step)
    monkeypatch.setattr(loop_mod, "LoopConfig", lambda **kw: real_config(**{**kw, "checkpoint_every": 2}))
    with pytest.raises(KeyboardInterrupt):
        finetune(cfg, 0, dense, data, DENSE_FT, 1.0, tmp_path / "run", False)
    monkeypatch.setattr(loop_mod, "LoopConfig", real_config)
    crash_at[0] = None
    path = tmp_path / "run" / "dense-ft_100.safetensors"
    assert load_checkpoint(path, {})["step"] == 2

    calls.clear()
    model, pruner, hist = finetune(cfg, 0, dense, data, DENSE_FT, 1.0, tmp_path / "run", False)
    assert pruner is None and len(calls) == 4  # steps 2..5 only
    assert [h["step"] for h in hist] == list(range(6))
    for (name, a), b in zip(ref.state_dict().items(), model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    # a finished checkpoint is reused as is: no training, the saved history
    calls.clear()
    again, _, hist2 = finetune(cfg, 0, dense, data, DENSE_FT, 1.0, tmp_path / "run", False)
    assert calls == [] and hist2 == hist
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def test_config_eps_matches_the_runner_default():
    """fgseg/config.py spells the runner's policy eps as a literal (torch-free); it must stay equal."""
    from patchprune.fgseg.config import POLICY_ATTENTION_EPS as config_eps
    from patchprune.vit import POLICY_ATTENTION_EPS

    assert config_eps == POLICY_ATTENTION_EPS


def test_study_runs_one_tiny_seed_end_to_end(tmp_path):
    """The fgseg study's wiring (config -> training -> evaluation -> report) on a tiny configuration."""
    from dataclasses import replace

    from patchprune.fgseg.config import FgSegBenchConfig
    from patchprune.fgseg.study import aggregate, checks, run_seed, write_report

    cfg = replace(FgSegBenchConfig.quick(), size=32, dim=16, heads=2, frames=4, train_videos=4, valid_videos=2,
                  dense_steps=2, finetune_steps=2, dense_batch=2, finetune_batch=1, fgs_train_frames=8, fgs_steps=2,
                  timing_repeats=1, timing_batch=2, methods=("vpp",), targets=(0.55,))
    res = run_seed(cfg, 0, tmp_path / "runs", progress=False, quiet=True)
    summary = aggregate([res])
    readme = write_report(tmp_path / "out", cfg, summary, [res], 1.0, "quick", checks(summary))
    assert [r["method"] for r in summary["results"]] == ["dense", "dense-ft", "vpp"]
    assert summary["results"][0]["pkr"] == 1.0 and summary["results"][2]["pkr"] < 1.0
    assert (tmp_path / "out" / "results.json").is_file() and "vpp" in readme
    assert (tmp_path / "runs" / "dense.safetensors").is_file()
    assert "min of it training" in readme


def test_report_counts_only_the_training_done_in_this_invocation():
    from patchprune.fgseg.study import training_minutes

    seeds = [{"times_s": {"data": 600.0, "dense_train": 240.0, "finetune": 60.0, "speed": 30.0}},
             {"times_s": {"data": 600.0, "dense_train": 1.5, "finetune": 1.5, "speed": 30.0}}]  # loaded checkpoints
    assert training_minutes(seeds) == pytest.approx(5.05)
