"""`patchprune bench fgseg --device` on the CPU: the explicit CPU is the default bit for bit, a device
this machine lacks is one line naming --device before any work, and the stages take a torch.device.
The GPU runs themselves are in tests/test_cuda_fgseg.py."""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from patchprune.cli import main as cli_main
from patchprune.fgseg.config import FgSegBenchConfig
from patchprune.fgseg.model import FgSegModel, module_device
from patchprune.learned import available_methods
from patchprune.train.checkpoint import checkpoint_meta

TINY = replace(FgSegBenchConfig.quick(), size=32, dim=16, heads=2, frames=4, train_videos=4, valid_videos=2,
               dense_steps=2, finetune_steps=2, dense_batch=2, finetune_batch=1, fgs_train_frames=8, fgs_steps=2,
               timing_repeats=1, timing_batch=2, methods=("vpp",), targets=(0.55,), dense_finetune=False)
TIMED = ("latency_ms", "speedup", "batch_ms", "speedup_batch")  # wall-clock figures differ run to run


def _figures(res: dict) -> dict:
    """A seed's result without its wall-clock figures."""
    rows = [{k: v for k, v in r.items() if k not in TIMED} for r in res["results"]]
    return {**{k: v for k, v in res.items() if k != "times_s"}, "results": rows}


def _tensors(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {f.name: load_file(str(f)) for f in sorted(folder.glob("*.safetensors"))}


def test_help_text_is_the_shared_one():
    from patchprune.fgseg.commands import DEVICE_HELP as used
    from patchprune.validate import DEVICE_HELP

    assert used is DEVICE_HELP


@pytest.fixture(scope="module")
def default_run(tmp_path_factory) -> tuple[dict, Path]:
    """One tiny seed with no device given (the CPU), and its work folder."""
    from patchprune.fgseg.study import run_seed

    folder = tmp_path_factory.mktemp("default")
    return run_seed(TINY, 0, folder, progress=False, quiet=True), folder


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_explicit_cpu_gives_the_default_run_bit_for_bit(tmp_path, device, default_run):
    from patchprune.fgseg.study import run_seed

    default, folder = default_run
    explicit = run_seed(TINY, 0, tmp_path / "explicit", progress=False, quiet=True, device=device)
    assert _figures(explicit) == _figures(default)
    a, b = _tensors(folder), _tensors(tmp_path / "explicit")
    assert list(a) == list(b) == ["dense.safetensors", "vpp_55.safetensors"]
    for name in a:
        assert a[name].keys() == b[name].keys()
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name
    assert checkpoint_meta(tmp_path / "explicit" / "vpp_55.safetensors")["device"] == "cpu"


def test_report_of_an_explicit_cpu_run_is_the_default_one(tmp_path, default_run):
    import json

    from patchprune.fgseg.study import aggregate, write_report

    res = default_run[0]
    args = (TINY, aggregate([res]), [res], 1.0, "quick")
    default = write_report(tmp_path / "default", *args)
    assert write_report(tmp_path / "cpu", *args, device=torch.device("cpu")) == default
    assert "| CPU speed-up (batch 1) |" in default and "--device" not in default
    env = json.loads((tmp_path / "cpu" / "results.json").read_text())["environment"]
    assert env["device"].startswith("CPU (")


def test_stages_take_a_torch_device_and_a_finished_dense_stage_is_reused_as_written(tmp_path):
    from patchprune.fgseg.training import finetune, make_data, train_dense

    data = make_data(0, "train", 3, TINY.frames, TINY.size, progress=False, **TINY.difficulty)
    cpu = torch.device("cpu")
    dense, hist = train_dense(TINY, 0, data, tmp_path, False, device=cpu)
    assert module_device(dense) == cpu and len(hist) == TINY.dense_steps
    ckpt = tmp_path / "dense.safetensors"
    written = ckpt.read_bytes()
    assert checkpoint_meta(ckpt)["device"] == "cpu"
    again, hist2 = train_dense(TINY, 0, data, tmp_path, False, device="cpu")  # finished: loaded, not re-saved
    assert ckpt.read_bytes() == written and hist2 == hist
    assert all(torch.equal(a, b) for a, b in zip(dense.state_dict().values(), again.state_dict().values()))
    model, pruner, _ = finetune(TINY, 0, dense, data, "vpp", 0.55, tmp_path, False)  # default: dense's device
    assert module_device(model) == cpu and module_device(pruner) == cpu
    assert checkpoint_meta(tmp_path / "vpp_55.safetensors")["device"] == "cpu"


def test_timing_refuses_models_on_two_devices():
    from patchprune.fgseg.config import seg_config
    from patchprune.fgseg.evaluation import timing
    from patchprune.fgseg.training import make_data

    data = make_data(0, "valid", 1, 2, TINY.size, progress=False)
    on_cpu = FgSegModel(seg_config(TINY, data.num_classes)).eval()
    on_meta = FgSegModel(seg_config(TINY, data.num_classes)).to("meta").eval()  # a second device, no GPU needed
    with pytest.raises(ValueError, match="several devices"):
        timing({"a": (on_cpu, None), "b": (on_meta, None)}, data, repeats=1, progress=False)


@pytest.mark.parametrize("method", available_methods())
def test_the_cuda_comparison_has_no_near_tie_on_the_cpu(method):
    """tests/test_cuda_fgseg.py asks the GPU to keep exactly the tokens the CPU keeps: meaningful only
    where no decision of its inputs sits within rounding of flipping. Float64 on the CPU keeps the
    same tokens as float32 for them (another seed of the clip does not, for DynamicViT)."""
    from test_cuda_fgseg import eval_pruner, keep_lists, learned_clip, stream_clip

    clip = learned_clip()
    pruner = eval_pruner(method)
    fp32 = stream_clip(pruner, clip)
    fp64 = stream_clip(copy.deepcopy(pruner).double(), [x.double() for x in clip])
    assert [keep_lists(o) for o in fp64] == [keep_lists(o) for o in fp32]
    if method == "vpp":  # the Map-SM acts from the second frame on (its prior is the previous frame)
        assert fp32[0].aux["sparsity"][1].prob_mean is None and fp32[1].aux["sparsity"][1].prob_mean is not None


def test_module_device_of_a_module_without_parameters_is_the_cpu():
    assert module_device(torch.nn.Identity()) == torch.device("cpu")


class TestCli:
    @pytest.fixture(autouse=True)
    def spy(self, monkeypatch, tmp_path):
        """Stop at the first seed, recording the device it was given."""
        import patchprune.fgseg.study as study

        self.devices: list[torch.device] = []

        class Stop(Exception):
            pass

        def first_seed(*args, device=None, **kwargs):
            self.devices.append(device)
            raise Stop

        monkeypatch.setattr(study, "run_seed", first_seed)
        self.stop = Stop
        self.base = ["bench", "fgseg", "--quick", "--no-progress", "--workdir", str(tmp_path / "runs"),
                     "--out", str(tmp_path / "out")]
        self.tmp = tmp_path

    @pytest.mark.parametrize("extra,expected", [([], "cpu"), (["--device", "cpu"], "cpu"),
                                                (["--device", "auto"], "cuda" if torch.cuda.is_available() else "cpu")])
    def test_the_seeds_get_the_chosen_device(self, extra, expected):
        with pytest.raises(self.stop):
            cli_main(self.base + extra)
        assert len(self.devices) == 1 and isinstance(self.devices[0], torch.device)
        assert self.devices[0].type == expected

    @pytest.mark.parametrize("device", ["tpu", "cuda:x"] + ([] if torch.cuda.is_available() else ["cuda"]))
    def test_a_device_this_machine_lacks_is_one_line_before_any_work(self, device, capsys):
        capsys.readouterr()
        code = cli_main(self.base + ["--device", device])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert lines[0].startswith("patchprune: error: --device"), lines[0]
        assert self.devices == [] and not (self.tmp / "runs").exists() and not (self.tmp / "out").exists()
