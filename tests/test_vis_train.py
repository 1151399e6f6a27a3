"""train vis -> resume -> eval vis round trip on a tiny generated set, stage 2 from the dense run,
results accepted by `eval ytvis`, bad input (missing folders / keys, a checkpoint of another config)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from patchprune.cli import main
from patchprune.data.synth_vis import write_synth_vis
from patchprune.vis.train import TrainSettings, run_training

SMALL = dict(img_size=64, dim=32, depth=12, heads=2, fpn_dim=32, hidden_dim=32, decoder_layers=2, decoder_heads=2,
             decoder_ffn=64, pixel_ffn=64, num_queries=5, points=64)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vis") / "data"
    write_synth_vis(root, videos=4, valid_videos=2, frames=4, size=64, seed=3, progress=False,
                    min_radius=0.2, max_radius=0.3, max_objects=2)
    return root


def settings(data_dir: Path, out: Path, **kw) -> TrainSettings:
    base = dict(data=str(data_dir), out=str(out), steps=4, batch=2, lr=1e-3, warmup=1, checkpoint_every=2,
                progress=False, threads=1, overrides=SMALL)
    base.update(kw)
    return TrainSettings(**base)


def tensors(path: Path, prefix: str = "module/") -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys() if k.startswith(prefix)}


def crashing(real, on_call: int = 3):
    """`real` that raises KeyboardInterrupt on its on_call-th call (a run dying mid-training)."""
    calls = {"n": 0}

    def wrapped(*args, **kw):
        calls["n"] += 1
        if calls["n"] == on_call:
            raise KeyboardInterrupt
        return real(*args, **kw)

    return wrapped


@pytest.fixture(scope="module")
def dense_run(data_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "dense"
    run_training(settings(data_dir, out))
    return out


def test_resume_is_exact(data_dir: Path, dense_run: Path, tmp_path: Path, monkeypatch) -> None:
    import patchprune.vis.train as vis_train

    part = tmp_path / "part"
    s = settings(data_dir, part)
    real = vis_train.sample_frames
    monkeypatch.setattr(vis_train, "sample_frames", crashing(real))  # dies in step 2, after its checkpoint
    with pytest.raises(KeyboardInterrupt):
        run_training(s)
    monkeypatch.setattr(vis_train, "sample_frames", real)
    summary = run_training(s)
    assert summary["resumed_from"] == 2
    a, b = tensors(dense_run / "checkpoint.safetensors"), tensors(part / "checkpoint.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    saved = json.loads((dense_run / "config.json").read_text())
    assert saved["dim"] == 32 and saved["categories"] == [1, 2, 3, 4, 5, 6]
    assert json.loads((dense_run / "train.json").read_text())["stage"] == 1


def test_eval_and_ytvis_results(data_dir: Path, dense_run: Path, capsys) -> None:
    assert main(["eval", "vis", "--run", str(dense_run), "--data", str(data_dir), "--json", "--timing-frames", "2",
                 "--timing-batch", "0"]) == 2
    assert "--timing-batch must be" in capsys.readouterr().err
    assert main(["eval", "vis", "--run", str(dense_run), "--data", str(data_dir), "--json", "--timing-frames", "2",
                 "--timing-batch", "2"]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for k in ("AP", "AP50", "AP75", "AR1", "AR10", "AP_bbox", "AP_segm"):
        assert 0.0 <= m[k] <= 1.0, k
    assert m["pkr"] == 1.0 and m["frames"] == 8
    assert set(m["gmacs"]) == {"backbone", "pyramid_pixel_decoder", "transformer_decoder", "total"}
    assert m["gmacs"]["backbone"] > 0 and m["fps"]["backbone"] > m["fps"]["model"] > 0
    assert m["fps_batched"]["batch"] == 2 and m["fps_batched"]["backbone"] > m["fps_batched"]["model"] > 0
    results = dense_run / "results_valid.json"
    assert results.is_file()
    entries = json.loads(results.read_text())
    assert entries and all(len(e["segmentations"]) == 4 for e in entries)
    assert main(["eval", "ytvis", "--gt", str(data_dir / "valid.json"), "--pred", str(results), "--json"]) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["AP"] == pytest.approx(m["AP"])


@pytest.mark.parametrize("policy", ["evtp", "random"])
def test_eval_training_free_policy_on_a_dense_run(data_dir: Path, dense_run: Path, tmp_path: Path, policy: str,
                                                  capsys) -> None:
    from patchprune.vis.run import training_free_schedule

    assert training_free_schedule(policy, 0.40, 12) == {1: (policy, 0.6), 3: (policy, 0.7), 6: (policy, 0.7),
                                                        9: (policy, 0.7)}
    assert main(["eval", "vis", "--run", str(dense_run), "--data", str(data_dir), "--json", "--timing-frames", "0",
                 "--method", policy, "--target", "0.40", "--results", str(tmp_path / "r.json")]) == 0
    m = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # VPP's 40 % schedule: (1 + 2 x 0.6 + 3 x 0.42 + 3 x 0.294 + 3 x 0.206) / 12 = 0.413, up to token rounding
    assert m["method"] == policy and abs(m["pkr"] - 0.413) < 0.03
    kept = m["keep_ratio_per_block"]
    assert kept[0] == 1.0 and kept[1] < 0.7 and kept[-1] < kept[3] < kept[1]
    assert main(["train", "vis", "--data", str(data_dir), "--out", str(tmp_path / "x"), "--method", policy,
                 "--init", str(dense_run)]) == 2
    assert "eval vis --run DENSE_RUN --method POLICY" in capsys.readouterr().err


def test_stage2_vpp_from_dense(data_dir: Path, dense_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "vpp"
    summary = run_training(settings(data_dir, out, method="vpp", target=0.4, init=str(dense_run), steps=2,
                                    overrides=None))
    assert summary["stage"] == 2
    keys = tensors(out / "checkpoint.safetensors")
    assert any(k.startswith("module/policies/") for k in keys)
    from patchprune.vis.evaluate import evaluate_folder

    m = evaluate_folder(out, data_dir, timing_frames=0)
    assert m["method"] == "vpp" and m["pkr"] < 1.0
    # segment's page shows the pruned run's kept patches and its PKR per frame (a folder of frames in)
    from patchprune.vis.segment import segment_video

    seg = segment_video(data_dir / "valid" / "JPEGImages" / "valid_00000", out, tmp_path / "seg", threshold=0,
                        progress=False)
    page = (tmp_path / "seg" / "index.html").read_text()
    assert seg["pkr"] < 1.0 and all(f'src="{f}"' in page for f in ("kept.gif", "keep_ratio.png", "pkr_per_frame.png"))
    frames = json.loads((tmp_path / "seg" / "frames.json").read_text())
    assert frames[1]["keep_ratio_per_block"]["1"] < 1.0  # Map-SM prunes from the second frame
    # --keep-aspect: a 2:1 video is fed at 64 x 32 (a 8 x 4 patch grid through Map-SM and the SMs), not squashed
    from patchprune.data.images import read_image
    from patchprune.data.video import write_video
    import numpy as np

    folder = data_dir / "valid" / "JPEGImages" / "valid_00000"
    square = np.stack([read_image(p) for p in sorted(folder.iterdir())])
    write_video(tmp_path / "wide.mp4", np.concatenate([square, square[:, :, ::-1]], axis=2), fps=5)
    wide = segment_video(tmp_path / "wide.mp4", out, tmp_path / "wide", threshold=0, progress=False, keep_aspect=True)
    assert wide["model_size"] == [64, 32] and seg["model_size"] == [64, 64]
    tiles = read_image(tmp_path / "wide" / "keep" / "00001.png")
    assert tiles.shape[0] == 4 * 4  # keep_picture's scale 4 x the grid's 4 rows
    wide_frames = json.loads((tmp_path / "wide" / "frames.json").read_text())
    assert wide_frames[1]["keep_ratio_per_block"]["1"] < 1.0 and wide_frames[1]["tracks"]
    assert {len(r["segmentation"]["size"]) for f in wide_frames for r in f["tracks"]} == {2}
    assert all(r["segmentation"]["size"] == [64, 128] for f in wide_frames for r in f["tracks"])
    # benchmarks/vis/margin_probe.py: one margin per token each SM scored (blocks 3 / 6 / 9), a dense run refused
    from script_loader import load_script

    probe = load_script("benchmarks/vis/margin_probe.py")
    margins = probe.sm_margins(str(out), str(data_dir), videos=1)
    assert len(margins) == 3 and all(np.isfinite(v).all() for v in margins.values())
    # the SM at block 3 scores exactly the tokens block 2 processed (Map-SM's count is a fixed top-k: no noise)
    assert margins["runner.policies.3"].size == round(sum(f["keep_ratio_per_block"]["2"] * 64 for f in frames))
    with pytest.raises(ValueError, match="dense run"):
        probe.sm_margins(str(dense_run), str(data_dir), videos=1)
    # eval vis --timing-batch 3: three videos streamed side by side, every slot's frames counted
    from patchprune.vis.data import load_split, square_size
    from patchprune.vis.evaluate import streaming_fps
    from patchprune.vis.run import load_run

    loaded = load_run(out)
    clip = load_split(data_dir, "valid", square_size(loaded.model.config.img_size), loaded.model.config.categories).clips[0]
    seen = []
    hook = loaded.model.backbone.patch_embed.register_forward_hook(lambda mod, inp, o: seen.append(inp[0].shape[0]))
    fps = streaming_fps(loaded.model, loaded.encoder, clip, frames=2, warmup=1, batch=3)
    hook.remove()
    # both rates measured (no timed comparison: which is faster is a benchmark's business)
    assert set(seen) == {3} and len(seen) == 6 and all(0 < fps[k] < float("inf") for k in ("backbone", "model"))
    assert m["gmacs"]["backbone"] < json.loads(json.dumps(m))["gmacs"]["total"]
    # VPP draws Gumbel noise at inference; eval seeds it per video, so a rerun from another RNG state agrees
    torch.manual_seed(12345)
    torch.rand(100)
    again = evaluate_folder(out, data_dir, timing_frames=0)
    assert again["keep_ratio_per_block"] == m["keep_ratio_per_block"] and again["results"] == m["results"]


def test_stage2_policy_lr_mult_scales_the_modules_steps(data_dir: Path, dense_run: Path, tmp_path: Path) -> None:
    """--policy-lr-mult reaches the pruning modules' optimizer group: one AdamW step moves them about
    mult times as far (the first Adam step is lr x sign), from the same seeded initialisation."""
    def policies(mult: float) -> dict[str, torch.Tensor]:
        out = tmp_path / f"plr{mult:g}"
        run_training(settings(data_dir, out, method="vpp", init=str(dense_run), steps=1, overrides=None,
                              policy_lr_mult=mult))
        return {k: v for k, v in tensors(out / "checkpoint.safetensors").items() if k.startswith("module/policies/")}

    still, one, hundred = policies(1e-6), policies(1.0), policies(100.0)
    moved = lambda other: sum(float((other[k] - still[k]).abs().sum()) for k in still)  # noqa: E731
    assert moved(one) > 0
    assert moved(hundred) > 20 * moved(one)


def test_stage2_head_lr_mult_scales_the_head_not_the_backbone(data_dir: Path, dense_run: Path, tmp_path: Path) -> None:
    """--head-lr-mult reaches the pyramid + head group only: one AdamW step from the same dense run moves
    the head about mult times as far, the backbone (x0.1) alike in both runs."""
    start = tensors(dense_run / "checkpoint.safetensors")

    def moved(mult: float) -> tuple[float, float]:
        out = tmp_path / f"hlr{mult:g}"
        run_training(settings(data_dir, out, method="vpp", init=str(dense_run), steps=1, overrides=None,
                              head_lr_mult=mult))
        after = tensors(out / "checkpoint.safetensors")
        dist = lambda prefix: sum(float((after[k] - start[k]).abs().sum()) for k in start  # noqa: E731
                                  if k.startswith(prefix) and k in after)
        return dist("module/model/head."), dist("module/model/backbone.")

    head_small, backbone_small = moved(0.1)
    head_one, backbone_one = moved(1.0)
    assert head_small > 0 and head_one > 5 * head_small
    assert backbone_one == pytest.approx(backbone_small, rel=0.2)


def test_bad_inputs(data_dir: Path, dense_run: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(FileNotFoundError, match="train.json"):
        run_training(settings(tmp_path, tmp_path / "x"))
    broken = tmp_path / "broken"
    shutil.copytree(data_dir, broken)
    shutil.rmtree(broken / "train" / "JPEGImages")
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        run_training(settings(broken, tmp_path / "y"))
    ann = json.loads((data_dir / "train.json").read_text())
    del ann["videos"][0]["file_names"]
    shutil.copytree(data_dir, tmp_path / "nokey")
    (tmp_path / "nokey" / "train.json").write_text(json.dumps(ann))
    with pytest.raises(ValueError, match="file_names"):
        run_training(settings(tmp_path / "nokey", tmp_path / "z"))
    with pytest.raises(ValueError, match="stage 2"):
        run_training(settings(data_dir, tmp_path / "w", method="vpp"))
    with pytest.raises(ValueError, match="--method"):
        run_training(settings(data_dir, tmp_path / "w", method="nope"))
    with pytest.raises(ValueError, match="--policy-lr-mult"):
        run_training(settings(data_dir, tmp_path / "w", method="vpp", init=str(dense_run), policy_lr_mult=0.0))
    with pytest.raises(ValueError, match="--head-lr-mult"):
        run_training(settings(data_dir, tmp_path / "w", method="vpp", init=str(dense_run), head_lr_mult=-1.0))
    # a checkpoint of another config: a run folder whose config.json differs from its checkpoint
    other = tmp_path / "other"
    shutil.copytree(dense_run, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["hidden_dim"] = 64
    (other / "config.json").write_text(json.dumps(cfg))
    assert main(["eval", "vis", "--run", str(other), "--data", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert "another config" in err and "hidden_dim" in err and len(err.strip().splitlines()) == 1
    assert main(["eval", "vis", "--run", str(tmp_path / "missing"), "--data", str(data_dir)]) == 2


def test_segment_video_file_and_errors(data_dir: Path, dense_run: Path, tmp_path: Path, capsys) -> None:
    from patchprune.data.images import read_image
    from patchprune.data.video import write_video
    import numpy as np

    folder = data_dir / "valid" / "JPEGImages" / "valid_00000"
    frames = np.stack([read_image(p) for p in sorted(folder.iterdir())])
    write_video(tmp_path / "clip.mp4", frames, fps=5)
    out = tmp_path / "seg"
    assert main(["segment", str(tmp_path / "clip.mp4"), "--run", str(dense_run), "--out", str(out),
                 "--threshold", "0", "--no-progress"]) == 0
    per_frame = json.loads((out / "frames.json").read_text())
    assert len(per_frame) == 4 and (out / "overlay.mp4").stat().st_size > 0
    assert all(f["tracks"] for f in per_frame)  # threshold 0 shows every non-empty track
    ids = [{t["track_id"] for t in f["tracks"]} for f in per_frame]
    assert ids[0] & ids[-1]  # the same ids carry over frames
    assert min(min(i) for i in ids) == 1  # numbered from 1, as on the page and in the video
    page = (out / "index.html").read_text()
    assert 'src="overlay.gif"' in page and "kept.gif" not in page  # a dense run prunes nothing
    drawn = {i for f in ids for i in f}
    assert page.count("<tr><td>#") == len(drawn) and all(f"<td>#{i}</td>" in page for i in drawn)
    from PIL import Image

    with Image.open(out / "overlay.gif") as gif:
        assert gif.n_frames == 4
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    assert main(["segment", str(tmp_path / "bad.mp4"), "--run", str(dense_run), "--out", str(out)]) == 2
    assert "corrupt or unsupported" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "none.mkv"), "--run", str(dense_run), "--out", str(out)]) == 2


def test_rovis_pair_training_and_tracking(data_dir: Path, tmp_path: Path) -> None:
    from patchprune.vis.evaluate import evaluate_folder

    out = tmp_path / "rovis"
    summary = run_training(settings(data_dir, out, steps=2, tracker="rovis", overrides={**SMALL, "depth": 2}))
    assert summary["stage"] == 1 and summary["loss"] > 0
    history = json.loads((out / "train.json").read_text())
    assert history["tracker"] == "rovis"
    m = evaluate_folder(out, data_dir, tracker="rovis", timing_frames=0)
    assert m["tracker"] == "rovis" and 0.0 <= m["AP"] <= 1.0


def test_rovis_assignment_follows_instance_ids() -> None:
    from patchprune.vis.config import named_config
    from patchprune.vis.loss import FrameTargets, SetLoss
    from patchprune.vis.rovis_train import track_assignment
    from patchprune.vis.head import HeadOutput

    cfg = named_config("tiny", categories=[1, 2], num_queries=3, hidden_dim=32, decoder_heads=2, points=16)
    crit = SetLoss(cfg)
    masks = torch.zeros(3, 8, 8)
    masks[0, :2], masks[1, 4:], masks[2, :, :2] = 1, 1, 1
    tg = FrameTargets(masks, torch.tensor([0, 1, 0]), ids=torch.tensor([4, 7, 9]))
    out = HeadOutput([torch.randn(1, 5, 3)], [torch.randn(1, 5, 8, 8)], torch.randn(1, 5, 32), torch.randn(1, 5, 32))
    (pred, gt), = track_assignment(crit, out, [tg], follow=[[7, -1]], num_queries=3)
    pairs = dict(zip(pred.tolist(), gt.tolist()))
    assert pairs[3] == 1  # track slot 0 (row 3) follows instance 7 = target row 1
    assert 4 not in pairs  # the false-positive slot gets no target (no-object)
    assert sorted(v for k, v in pairs.items() if k < 3) == [0, 2]  # the rest matched among learned queries


def test_augmented_training_resumes_exactly_and_the_cli_passes_augment(data_dir: Path, tmp_path: Path, capsys,
                                                                       monkeypatch) -> None:
    """--augment reaches the run (train.json), and its draws come from the step's generator: a run
    that dies after its step-2 checkpoint and is resumed ends with the weights of an unbroken run."""
    import patchprune.vis.train as vis_train

    whole, part = tmp_path / "whole", tmp_path / "part"
    run_training(settings(data_dir, whole, augment="colour,crop"))
    real = vis_train.sample_frames
    monkeypatch.setattr(vis_train, "sample_frames", crashing(real))
    with pytest.raises(KeyboardInterrupt):
        run_training(settings(data_dir, part, augment="colour,crop"))
    monkeypatch.setattr(vis_train, "sample_frames", real)
    assert run_training(settings(data_dir, part, augment="colour,crop"))["resumed_from"] == 2
    a, b = tensors(whole / "checkpoint.safetensors"), tensors(part / "checkpoint.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    plain = tensors(run_training(settings(data_dir, tmp_path / "plain"))["run"] + "/checkpoint.safetensors")
    assert not all(torch.equal(a[k], plain[k]) for k in a)  # the augmentation changed the batches
    assert main(["train", "vis", "--data", str(data_dir), "--out", str(tmp_path / "cli"), "--steps", "1", "--batch", "2",
                 "--augment", "crop", "--no-progress", "--threads", "1"]) == 0
    assert json.loads((tmp_path / "cli" / "train.json").read_text())["augment"] == "crop"
    assert main(["train", "vis", "--data", str(data_dir), "--out", str(tmp_path / "bad"), "--augment", "blur"]) == 2
    assert "--augment" in capsys.readouterr().err
