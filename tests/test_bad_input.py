"""Bad input, everywhere one rule (issue 13 item 3): a clear ValueError (FileNotFoundError for a
missing file) naming the argument, no raw torch error; at the command line one line
`patchprune: error: ...`, exit status 2, no traceback; nothing half-written.

One class per entry point. Each case asserts the error type and a word of its message.
"""
from __future__ import annotations

import pytest
import torch

from patchprune.cli import main as cli_main


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Run the command line in-process; return (exit status, stderr)."""
    capsys.readouterr()
    code = cli_main(argv)
    return code, capsys.readouterr().err


def assert_cli_error(argv: list[str], capsys, *words: str) -> str:
    """The command fails with exit 2 and one stderr line `patchprune: error: ...` holding `words`."""
    code, err = run_cli(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("patchprune: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------------------
# Runner: sparse_vit / SparseViT.forward / learned.build


@pytest.fixture(scope="module")
def tiny_vit():
    import timm

    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64,
                             depth=2).eval()


class TestRunner:
    def runner(self, model):
        from patchprune.vit import sparse_vit

        return sparse_vit(model, "1:0.5").eval()

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
    def test_non_finite_images_refused(self, tiny_vit, bad):
        x = torch.randn(2, 3, 64, 64)
        x[1, 0, 5, 7] = bad
        with pytest.raises(ValueError, match="images contains 1 NaN / Inf"):
            self.runner(tiny_vit)(x)

    @pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.uint8])
    def test_image_dtype_must_match_model(self, tiny_vit, dtype):
        with pytest.raises(ValueError, match=r"images are torch\.\w+ but the model is torch.float32"):
            self.runner(tiny_vit)(torch.zeros(1, 3, 64, 64, dtype=dtype))

    def test_empty_batch(self, tiny_vit):
        with pytest.raises(ValueError, match="images: the batch is empty"):
            self.runner(tiny_vit)(torch.zeros(0, 3, 64, 64))

    def test_not_a_tensor(self, tiny_vit):
        with pytest.raises(ValueError, match="images must be a"):
            self.runner(tiny_vit)([[0.0]])

    @pytest.mark.parametrize("name", ["random", "topk-norm", "evtp"])
    def test_schedule_entry_without_ratio(self, tiny_vit, name):
        from patchprune.vit import sparse_vit

        with pytest.raises(ValueError, match=rf"policy '{name}'.*give a keep ratio"):
            sparse_vit(tiny_vit, {1: (name, None)})

    def test_unknown_policy_option(self, tiny_vit):
        from patchprune.vit import sparse_vit

        with pytest.raises(ValueError, match="policy 'random'.*colour"):
            sparse_vit(tiny_vit, {1: ("random", 0.5, {"colour": 1})})

    @staticmethod
    def unsupported_models():
        from timm.models.beit import Beit
        from timm.models.eva import Eva
        from timm.models.vision_transformer_sam import VisionTransformerSAM

        small = dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2)
        return {
            "VisionTransformerSAM": VisionTransformerSAM(**small, window_size=2, global_attn_indexes=(),
                                                         neck_chans=16),
            "Beit": Beit(**small, num_classes=0),
            "Eva": Eva(**small, num_classes=0),
            "Linear": torch.nn.Linear(3, 3),
        }

    def test_unsupported_models_one_message(self):
        from patchprune import learned
        from patchprune.vit import SUPPORTED_FAMILIES, sparse_vit

        for cls, model in self.unsupported_models().items():
            for build in (lambda: sparse_vit(model, "1:0.5"), lambda: learned.build("vpp", model)):
                with pytest.raises(ValueError) as err:
                    build()
                msg = str(err.value)
                assert msg.startswith(f"model: sparse_vit cannot prune {cls} (") and SUPPORTED_FAMILIES in msg


# ------------------------------------------------------------------------------------------------
# Selection: select() with extreme but finite token magnitudes


class TestSelectRange:
    @staticmethod
    def tokens():
        g = torch.Generator().manual_seed(3)
        return torch.randn(2, 196, 48, generator=g)

    @pytest.mark.parametrize("method", ["evtp", "kcenter", "divprune"])
    @pytest.mark.parametrize("scale", [1e19, 1e30, 1e-30, 1e-38])
    def test_no_duplicate_picks_at_extreme_scale(self, method, scale):
        from patchprune.select import select

        res = select(self.tokens() * scale, 60, method=method, grid=(14, 14))
        for row in res.index:
            assert row.unique().numel() == 60
        assert torch.isfinite(res.tokens).all()

    @pytest.mark.parametrize("method", ["evtp", "kcenter", "divprune"])
    @pytest.mark.parametrize("exponent", [64, 120, -100, -120])
    def test_power_of_two_scale_changes_no_pick(self, method, exponent):
        # a power of two rescales every distance exactly, so the picks must be those of scale 1
        from patchprune.select import select

        x = self.tokens()
        ref = select(x, 60, method=method, grid=(14, 14)).order
        assert torch.equal(select(x * 2.0 ** exponent, 60, method=method, grid=(14, 14)).order, ref)

    def test_only_out_of_range_frames_are_rescaled(self):
        from patchprune.select.farthest import safe_scale

        x = self.tokens()
        x[1] *= 1e19
        sq = torch.linalg.vector_norm(x, dim=-1).square()
        factor = safe_scale(x, sq)
        assert factor[0] == 1 and 1 <= float((x[1] * factor[1]).abs().max()) < 2
        assert safe_scale(self.tokens(), torch.linalg.vector_norm(self.tokens(), dim=-1).square()) is None


# ------------------------------------------------------------------------------------------------
# Video state: VideoStream with the VPP runner


class TestVideoStream:
    @staticmethod
    def vpp(dim: int):
        import timm

        from patchprune import learned

        torch.manual_seed(0)
        vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=48, patch_size=8,
                                embed_dim=dim, depth=12, num_heads=2)
        return learned.build("vpp", vit, 0.55).eval()

    def test_video_ids_must_match_the_batch(self):
        from patchprune.video import VideoStream

        pruner, stream = self.vpp(32), VideoStream()
        stream.start_frame(["a", "b", "c"])
        with pytest.raises(ValueError, match="video_ids: start_frame got 3 ids but the batch has 2"), torch.no_grad():
            pruner(torch.randn(2, 3, 48, 48), stream=stream)

    def test_one_stream_shared_by_models_of_different_width(self):
        from patchprune.video import VideoStream

        a, b, stream = self.vpp(32), self.vpp(48), VideoStream()
        x = torch.randn(1, 3, 48, 48)
        with torch.no_grad():
            stream.start_frame()
            a(x, stream=stream)
            stream.start_frame()
            with pytest.raises(ValueError, match="one VideoStream per model"):
                b(x, stream=stream)


# ------------------------------------------------------------------------------------------------
# Video files: patchprune.data.video


def _frames(n: int = 60, size: int = 32):
    import numpy as np

    rng = np.random.default_rng(0)
    return (rng.random((n, size, size, 3)) * 255).astype(np.uint8)


class TestVideoFiles:
    @pytest.mark.parametrize("suffix", [".avi", ".mkv", ".webm", ".mp4"])
    @pytest.mark.parametrize("keep", [0.3, 0.6, 0.9])
    def test_truncated_video_raises(self, tmp_path, suffix, keep):
        from patchprune.data.video import read_video, write_video

        full = write_video(tmp_path / f"v{suffix}", _frames(), fps=10)
        assert len(read_video(full)) == 60  # the intact file reads whole
        data = full.read_bytes()
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(data[: int(len(data) * keep)])
        with pytest.raises(ValueError, match="corrupt|truncated") as err:
            read_video(cut)
        assert str(cut) in str(err.value)

    @pytest.mark.parametrize("suffix", [".mkv", ".webm", ".avi"])
    def test_fractional_frame_rate_reads_whole(self, tmp_path, suffix):
        from patchprune.data.video import read_video, write_video

        path = write_video(tmp_path / f"v{suffix}", _frames(45), fps=30000 / 1001)
        assert len(read_video(path)) == 45

    def test_max_frames_zero(self, tmp_path):
        from patchprune.data.video import read_video, write_video

        path = write_video(tmp_path / "v.avi", _frames(4), fps=10)
        with pytest.raises(ValueError, match="max_frames must be >= 1"):
            read_video(path, max_frames=0)
        with pytest.raises(ValueError, match="stride must be >= 1"):
            read_video(path, stride=0)

    @pytest.mark.parametrize("fps", [0, -5, float("nan"), float("inf")])
    def test_write_video_bad_fps_writes_nothing(self, tmp_path, fps):
        from patchprune.data.video import write_video

        with pytest.raises(ValueError, match="fps must be > 0"):
            write_video(tmp_path / "v.mp4", _frames(4), fps=fps)
        assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# Checkpoints: patchprune.train.checkpoint / Trainer


class TestCheckpoints:
    @staticmethod
    def saved(tmp_path):
        from patchprune.train.checkpoint import save_checkpoint

        net = torch.nn.Linear(4, 3)
        return net, save_checkpoint(tmp_path / "c.safetensors", {"net": net}, step=7)

    def test_pickle_is_refused(self, tmp_path):
        from patchprune.train.checkpoint import load_checkpoint

        net = torch.nn.Linear(4, 3)
        torch.save(net.state_dict(), tmp_path / "c.pt")
        with pytest.raises(ValueError, match=r"is a pickle .*pickles are\s+refused"):
            load_checkpoint(tmp_path / "c.pt", {"net": net})

    @pytest.mark.parametrize("keep", [0.5, 0.9, 8 / 1e9, 0])
    def test_truncated_file(self, tmp_path, keep):
        from patchprune.train.checkpoint import load_checkpoint

        net, path = self.saved(tmp_path)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
        with pytest.raises(ValueError, match="is not a safetensors file"):
            load_checkpoint(path, {"net": net})

    def test_missing_file(self, tmp_path):
        from patchprune.train.checkpoint import load_checkpoint

        with pytest.raises(FileNotFoundError, match="no checkpoint"):
            load_checkpoint(tmp_path / "none.safetensors", {})

    def test_checkpoint_of_another_model(self, tmp_path):
        from patchprune.train.checkpoint import load_checkpoint

        _, path = self.saved(tmp_path)
        with pytest.raises(ValueError, match="does not fit module 'net'"):
            load_checkpoint(path, {"net": torch.nn.Linear(5, 3)})

    def test_stale_temp_files_are_removed_on_the_next_run(self, tmp_path):
        from patchprune.train.loop import LoopConfig, Trainer

        ckpt = tmp_path / "run.safetensors"
        stale = [tmp_path / ".run.safetensors.abc123.tmp", tmp_path / ".run.safetensors.x9.tmp"]
        other = tmp_path / ".other.safetensors.abc.tmp"  # another file's temp: not ours to remove
        for p in stale + [other]:
            p.write_bytes(b"half-written")
        net = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        Trainer({"net": net}, opt, LoopConfig(steps=1, lr=0.1, checkpoint=str(ckpt), progress=False)).maybe_resume()
        assert not any(p.exists() for p in stale) and other.exists()

    def test_every_stage_saves_periodically_by_default(self, tmp_path):
        # a run killed after 150 of 300 steps resumes from step 100 (default period), not from 0
        from patchprune.train.checkpoint import load_checkpoint
        from patchprune.train.loop import LoopConfig, Trainer

        ckpt = tmp_path / "ft.safetensors"
        net = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(net.parameters(), lr=0.01)

        def step(i):
            if i == 150:
                raise KeyboardInterrupt
            return {"loss": net(torch.ones(1, 2)).square().sum()}

        with pytest.raises(KeyboardInterrupt):
            Trainer({"net": net}, opt, LoopConfig(steps=300, lr=0.01, checkpoint=str(ckpt), progress=False)).fit(step)
        assert LoopConfig(steps=1, lr=0.1).checkpoint_every == 100
        assert load_checkpoint(ckpt, {"net": net})["step"] == 100


# ------------------------------------------------------------------------------------------------
# Command line: every option validated before any work starts; one line, exit 2


class TestCliBenchSpeed:
    BASE = ["bench", "speed", "--model", "vit_tiny_patch16_224", "--img-size", "64", "--repeats", "1",
            "--warmup", "0"]

    @pytest.mark.parametrize("args,words", [
        (["--model", "nosuch_model"], ["--model 'nosuch_model' is not a timm model"]),
        (["--model", "resnet18"], ["cannot prune ResNet", "supported"]),
        (["--device", "tpu"], ["--device 'tpu'", "cpu or cuda"]),
        (["--threads", "-1"], ["--threads must be >= 1"]),
        (["--threads", "0"], ["--threads must be >= 1"]),
        (["--batch", "0"], ["--batch must be >= 1"]),
        (["--repeats", "0"], ["--repeats must be >= 1"]),
        (["--warmup", "-1"], ["--warmup must be >= 0"]),
        (["--img-size", "0"], ["--img-size must be >= 1"]),
        (["--keep", "1:1.5"], ["--keep:", "(0, 1]"]),
        (["--keep", "1-0.5"], ["--keep:", "POSITION:RATIO"]),
        (["--policy", "nosuch"], ["--policy:", "available"]),
    ])
    def test_bad_option(self, capsys, args, words):
        assert_cli_error(self.BASE + args, capsys, *words)

    def test_cuda_without_gpu(self, capsys):
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        assert_cli_error(self.BASE + ["--device", "cuda"], capsys, "CUDA is not available", "--device cpu")

    def test_validation_happens_before_any_work(self, capsys, monkeypatch):
        import patchprune.bench.speed as speed

        def no_work(*a, **k):
            raise AssertionError("work started before the options were validated")

        monkeypatch.setattr(speed, "run_speed_bench", no_work)
        assert_cli_error(self.BASE + ["--threads", "-1"], capsys, "--threads")


class TestCliBenchSelect:
    @pytest.mark.parametrize("args,words", [
        (["--frames", "0"], ["--frames must be >= 1"]),
        (["--side", "0"], ["--side must be >= 1"]),
        (["--dim", "-3"], ["--dim must be >= 1"]),
        (["--repeats", "0"], ["--repeats"]),
        (["--threads", "-1"], ["--threads"]),
        (["--ratios", "0.5,x"], ["--ratios"]),
        (["--ratios", "0"], ["--ratios must be > 0"]),
        (["--methods", "evtp,nosuch"], ["--methods:", "nosuch"]),
        (["--texture", "1"], ["--texture"]),
        (["--texture", "0.5,0.1"], ["--texture"]),
    ])
    def test_bad_option(self, capsys, monkeypatch, args, words):
        import patchprune.bench.select as bench_select

        monkeypatch.setattr(bench_select, "run_bench", lambda **kw: pytest.fail("work started"))
        assert_cli_error(["bench", "select"] + args, capsys, *words)


class TestCliData:
    def test_synth_vis_out_is_an_existing_file(self, tmp_path, capsys):
        out = tmp_path / "taken"
        out.write_text("keep me")
        for cmd in ("synth-vis", "synth-refer"):
            assert_cli_error(["data", cmd, "--out", str(out), "--no-progress"], capsys, "--out", "existing file")
            assert_cli_error(["data", cmd, "--out", str(out / "sub"), "--no-progress"], capsys, "existing file")
        assert out.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["taken"]

    @pytest.mark.parametrize("args,words", [
        (["synth-vis", "--videos", "0"], ["--videos must be >= 1"]),
        (["synth-vis", "--frames", "0"], ["--frames must be >= 1"]),
        (["synth-vis", "--size", "8"], ["--size must be >= 16"]),
        (["synth-vis", "--quality", "101"], ["--quality"]),
        (["synth-vis", "--videos", "2", "--valid-videos", "3"], ["--valid-videos"]),
        (["synth-vis", "--min-objects", "5", "--max-objects", "2"], ["min_objects"]),
        (["synth-refer", "--images", "0", "--videos", "0"], ["--images and --videos"]),
        (["synth-refer", "--frames", "1"], ["--frames must be >= 2"]),
    ])
    def test_bad_generator_option_writes_nothing(self, tmp_path, capsys, args, words):
        out = tmp_path / "ds"
        assert_cli_error(["data", args[0], "--out", str(out), "--no-progress", *args[1:]], capsys, *words)
        assert not out.exists()

    def test_corrupt_json_input(self, tmp_path, capsys):
        ann = tmp_path / "ann.json"
        ann.write_text('{"videos": [')
        assert_cli_error(["data", "gt-as-pred", str(ann), str(tmp_path / "p.json")], capsys, "corrupt")
        assert_cli_error(["data", "gt-as-pred", str(tmp_path / "none.json"), str(tmp_path / "p.json")], capsys,
                         "not found")


class TestCliDataFiles:
    @staticmethod
    def dataset(tmp_path):
        from patchprune.data.synth_vis import write_synth_vis

        return write_synth_vis(tmp_path / "ds", videos=2, valid_videos=1, frames=2, size=32, progress=False)["valid"]

    def test_output_paths_and_numbers(self, tmp_path, capsys):
        ann = str(self.dataset(tmp_path))
        (tmp_path / "file").write_text("x")
        cases = [
            (["data", "gt-as-pred", ann, str(tmp_path / "file" / "p.json")], ["existing file"]),
            (["data", "gt-as-pred", ann, str(tmp_path)], ["existing folder"]),
            (["data", "gt-as-pred", ann, str(tmp_path / "p.json"), "--score", "nan"], ["--score"]),
            (["data", "contact-sheet", "--ann", ann, "--out", str(tmp_path / "c.png"), "--videos", "0"], ["--videos"]),
            (["data", "contact-sheet", "--ann", ann, "--out", str(tmp_path / "c.png"), "--tile", "0"], ["--tile"]),
        ]
        for argv, words in cases:
            assert_cli_error(argv, capsys, *words)
        assert not (tmp_path / "p.json").exists() and not (tmp_path / "c.png").exists()


class TestCliMain:
    def test_user_errors_are_one_line(self, capsys, monkeypatch):
        import argparse

        import patchprune.cli as cli

        for err in (ValueError("bad\nvalue"), FileNotFoundError(2, "No such file", "/x/y"),
                    PermissionError(13, "Permission denied", "/root/z"), IsADirectoryError(21, "Is a directory", "/t")):
            parser = argparse.ArgumentParser()
            parser.set_defaults(func=lambda args, err=err: (_ for _ in ()).throw(err))
            monkeypatch.setattr(cli, "build_parser", lambda parser=parser: parser)
            assert_cli_error([], capsys)

    def test_bugs_keep_their_traceback(self, monkeypatch):
        import argparse

        import patchprune.cli as cli

        parser = argparse.ArgumentParser()
        parser.set_defaults(func=lambda args: {}["missing"])
        monkeypatch.setattr(cli, "build_parser", lambda: parser)
        with pytest.raises(KeyError):
            cli.main([])

    def test_real_process_prints_no_traceback(self):
        import subprocess
        import sys

        proc = subprocess.run([sys.executable, "-m", "patchprune.cli", "bench", "select", "--frames", "0"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines() == ["patchprune: error: --frames must be >= 1, got 0"]

    @pytest.mark.parametrize("argv, words", [
        (["bench", "select", "--frames", "abc"], ("bench select", "--frames", "invalid int")),
        (["bench"], ("patchprune bench", "required")),
        (["data", "synth-vis"], ("synth-vis", "--out")),
        (["nosuch"], ("invalid choice",)),
    ])
    def test_argparse_errors_are_one_line(self, capsys, argv, words):
        """Errors argparse raises itself (bad type, missing option, unknown command): one line, exit 2."""
        with pytest.raises(SystemExit) as exit_info:
            cli_main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("patchprune"), err
        assert "usage:" not in err
        for w in words:
            assert w in lines[0], lines[0]

    def test_output_piped_into_a_closed_reader_stops_quietly(self):
        """`patchprune ... | head -c 1` on a command with long output: no BrokenPipeError traceback."""
        import subprocess
        import sys

        script = (
            "import argparse, sys\n"
            "import patchprune.cli as cli\n"
            "def chatty(args):\n"
            "    for i in range(200000):\n"
            "        print('row', i)\n"
            "parser = argparse.ArgumentParser()\n"
            "parser.set_defaults(func=chatty)\n"
            "cli.build_parser = lambda: parser\n"
            "sys.exit(cli.main([]))\n"
        )
        proc = subprocess.run(f"{sys.executable} -c \"$SCRIPT\" | head -c 1", shell=True, capture_output=True,
                              text=True, timeout=120, env={**__import__('os').environ, "SCRIPT": script})
        assert "BrokenPipeError" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------------------------
# eval ytvis: ytvis_eval input validation (before anything is scored)


def _ytvis_pair():
    import numpy as np

    from patchprune.data.rle import encode

    m = np.zeros((8, 10), dtype=bool)
    m[2:5, 3:7] = True
    seg = encode(m)
    gt = {"videos": [{"id": 1, "height": 8, "width": 10, "length": 2}],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "annotations": [{"id": 1, "video_id": 1, "category_id": 1, "segmentations": [seg, None], "iscrowd": 0}]}
    preds = [{"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": [dict(seg), None]}]
    return gt, preds


class TestYtvisInput:
    def check(self, gt, preds, *words):
        from patchprune.metrics.ytvis import ytvis_eval

        with pytest.raises(ValueError) as err:
            ytvis_eval(gt, preds)
        for w in words:
            assert w in str(err.value), str(err.value)

    def test_valid_pair_scores(self):
        from patchprune.metrics.ytvis import ytvis_eval

        gt, preds = _ytvis_pair()
        assert ytvis_eval(gt, preds)["AP"] == pytest.approx(1.0)

    @pytest.mark.parametrize("counts", ["garbage", "PPYo1", "5", "", "\u00e9\u00e9"])
    def test_garbage_compressed_rle(self, counts):
        gt, preds = _ytvis_pair()
        preds[0]["segmentations"][1] = {"size": [8, 10], "counts": counts}
        self.check(gt, preds, "result 0, frame 1", "corrupt compressed RLE")

    def test_truncated_compressed_rle_in_ground_truth(self):
        gt, preds = _ytvis_pair()
        seg = gt["annotations"][0]["segmentations"][0]
        gt["annotations"][0]["segmentations"][0] = {**seg, "counts": seg["counts"][:-1]}
        self.check(gt, preds, "ground-truth annotation 1, frame 0", "corrupt compressed RLE")

    def test_rle_of_another_size(self):
        gt, preds = _ytvis_pair()
        preds[0]["segmentations"][0]["size"] = [10, 8]
        self.check(gt, preds, "result 0, frame 0", "does not match")

    def test_category_absent_from_ground_truth(self):
        gt, preds = _ytvis_pair()
        preds[0]["category_id"] = 7
        self.check(gt, preds, "result 0", "category_id 7", "not a ground-truth category")

    def test_video_without_width(self):
        gt, preds = _ytvis_pair()
        del gt["videos"][0]["width"]
        self.check(gt, preds, "ground-truth video 0", "'width'")

    @pytest.mark.parametrize("key", ["segmentations", "video_id", "category_id"])
    def test_annotation_without_field(self, key):
        gt, preds = _ytvis_pair()
        del gt["annotations"][0][key]
        self.check(gt, preds, "ground-truth annotation 1", repr(key))

    @pytest.mark.parametrize("score", [float("nan"), "high", None])
    def test_bad_score(self, score):
        gt, preds = _ytvis_pair()
        preds[0]["score"] = score
        self.check(gt, preds, "result 0 'score'")

    def test_cli_one_line(self, tmp_path, capsys):
        import json

        gt, preds = _ytvis_pair()
        del gt["videos"][0]["width"]
        (tmp_path / "gt.json").write_text(json.dumps(gt))
        (tmp_path / "pred.json").write_text(json.dumps(preds))
        assert_cli_error(["eval", "ytvis", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json")], capsys, "'width'")
        (tmp_path / "pred.json").write_text("[{")
        assert_cli_error(["eval", "ytvis", "--gt", str(tmp_path / "gt.json"), "--pred", str(tmp_path / "pred.json")], capsys, "corrupt")


class TestRleCounts:
    def test_run_sums_match_pycocotools(self):
        import numpy as np
        from pycocotools import mask as mask_utils

        from patchprune.data.rle import compressed_run_sums

        rng = np.random.default_rng(0)
        strings, pixels = [], []
        for t in range(200):
            h, w = (int(v) for v in rng.integers(1, 60, 2))
            m = rng.random((h, w)) < rng.random()
            m = np.zeros_like(m) if t % 4 == 0 else (np.ones_like(m) if t % 5 == 0 else m)
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            strings.append(rle["counts"])
            pixels.append(h * w)
        assert compressed_run_sums(strings).tolist() == pixels
        # a bad string between good ones is flagged alone
        assert compressed_run_sums([strings[1], b"garbage", strings[2]]).tolist() == [pixels[1], -1, pixels[2]]


# ------------------------------------------------------------------------------------------------
# CLI: bench fgseg (every option checked before any data or training; helper H1)


class TestCliBenchFgseg:
    @pytest.fixture(autouse=True)
    def no_work(self, monkeypatch, tmp_path):
        import patchprune.fgseg.study as study

        def refuse(*args, **kwargs):
            raise AssertionError("bench fgseg started work before validating its options")

        monkeypatch.setattr(study, "run_seed", refuse)
        self.base = ["bench", "fgseg", "--quick", "--no-progress", "--workdir", str(tmp_path / "runs"),
                     "--out", str(tmp_path / "out")]
        self.tmp = tmp_path
        yield
        assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()

    @pytest.mark.parametrize("argv,words", [
        (["--dense-steps", "-5"], ("--dense-steps", ">= 1")),
        (["--finetune-steps", "0"], ("--finetune-steps",)),
        (["--train-videos", "0"], ("--train-videos", ">= 1")),
        (["--valid-videos", "0"], ("--valid-videos",)),
        (["--threads", "-1"], ("--threads", ">= 0")),
        (["--targets", "0.3"], ("--targets", "0.55")),
        (["--targets", "1.5"], ("--targets", "(0, 1)")),
        (["--methods", "nosuch"], ("--methods", "nosuch")),
        (["--policy-eps", "0"], ("--policy-eps",)),
        (["--seeds", "-1"], ("--seeds",)),
    ])
    def test_bad_option_is_one_line_before_any_work(self, argv, words, capsys):
        assert_cli_error(self.base + argv, capsys, *words)

    def test_out_or_workdir_that_is_a_file(self, capsys):
        (self.tmp / "file").write_text("x")
        argv = ["bench", "fgseg", "--quick", "--workdir", str(self.tmp / "runs"), "--out", str(self.tmp / "file")]
        assert_cli_error(argv, capsys, "--out", "existing file")
        (self.tmp / "file").unlink()

    def test_targets_other_than_the_tabled_ones_are_fine_for_svit(self):
        from patchprune.cli import build_parser
        from patchprune.fgseg.commands import config_from_args

        args = build_parser().parse_args(self.base + ["--methods", "svit", "--targets", "0.3", "0.3"])
        cfg = config_from_args(args)
        assert cfg.methods == ("svit",) and cfg.targets == (0.3,)


class TestCliBenchSoak:
    @pytest.mark.parametrize("argv,words", [
        (["--frames", "0"], ("--frames", ">= 1")),
        (["--every", "-1"], ("--every",)),
        (["--threads", "0"], ("--threads", ">= 1")),
    ])
    def test_bad_option_is_one_line(self, argv, words, capsys):
        assert_cli_error(["bench", "soak"] + argv, capsys, *words)
