"""Reference checkpoints shipped in the package (issue 11, item 1): names, size, hash check, loading,
and the export from a run folder."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import patchprune as pp
from patchprune.checkpoints import WEIGHTS_DIR, load_reference, read_manifest, reference_info, reference_names, sha256_file

NAMES = ["dense", "vpp-0.55", "vpp-0.40"]


def test_the_three_references_are_listed_with_their_method_and_target():
    assert reference_names() == NAMES
    assert pp.reference_names() == NAMES  # lazily re-exported
    for name, method, target in (("dense", "dense", None), ("vpp-0.55", "vpp", 0.55), ("vpp-0.40", "vpp", 0.40)):
        info = reference_info(name)
        assert (info["method"], info["target"]) == (method, target)
        assert info["data"]["generator"]["size"] == info["vis_config"]["img_size"]
        assert info["metrics_shipped"]["videos"] >= 1  # the fp16 file itself was evaluated


def test_shipped_files_match_the_manifest_and_stay_under_25_mb():
    entries = read_manifest()["checkpoints"]
    total = 0
    for entry in entries.values():
        for file, digest in entry["sha256"].items():
            path = WEIGHTS_DIR / file
            assert sha256_file(path) == digest
            total += path.stat().st_size
        assert entry["bytes"] == sum((WEIGHTS_DIR / f).stat().st_size for f in entry["sha256"])
    assert total <= 25 * 2**20


def test_weights_are_fp16_without_optimiser_state():
    from safetensors import safe_open

    entry = read_manifest()["checkpoints"]["vpp-0.40"]
    with safe_open(str(WEIGHTS_DIR / entry["weights"]), framework="pt") as fh:
        keys = list(fh.keys())
        dtypes = {fh.get_slice(k).get_dtype() for k in keys}
    assert not [k for k in keys if k.startswith("optim/")]
    assert any(k.startswith("module/policies/") for k in keys) and any(k.startswith("module/model/") for k in keys)
    assert dtypes <= {"F16", "I64", "BOOL"} and "F16" in dtypes


def test_load_reference_gives_an_eval_model_with_the_methods_pruner():
    dense = load_reference("dense")
    assert dense.encoder is None and not dense.model.training
    ref = pp.load_reference("vpp-0.40")
    assert ref.method == "vpp" and ref.target == 0.40
    assert not ref.model.training and not ref.encoder.training
    assert ref.encoder.config.method == "vpp"
    # the backbone the pruner runs is the model's own (one set of weights)
    assert ref.encoder.model is ref.model.backbone
    # weights are the shipped fp16 values, cast to fp32
    from safetensors.torch import load_file

    shipped = load_file(str(WEIGHTS_DIR / read_manifest()["checkpoints"]["vpp-0.40"]["weights"]))
    key = "module/model/backbone.blocks.0.attn.qkv.weight"
    assert torch.equal(ref.model.backbone.blocks[0].attn.qkv.weight, shipped[key].float())
    # it runs: two frames streamed, the second pruned (Map-SM needs the previous frame)
    side = ref.model.config.img_size
    frames = np.random.default_rng(0).integers(0, 256, (2, side, side, 3), dtype=np.uint8)
    pred = ref.predictor()
    torch.manual_seed(0)
    pkrs = [pred.frame(f).pkr for f in frames]
    assert pkrs[0] > pkrs[1] and pkrs[1] < 0.9


@pytest.fixture
def weights_copy(tmp_path):
    root = tmp_path / "weights"
    shutil.copytree(WEIGHTS_DIR, root)
    return root


def test_a_changed_weights_file_is_refused(weights_copy):
    entry = read_manifest(weights_copy)["checkpoints"]["vpp-0.55"]
    path = weights_copy / entry["weights"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit inside the tensors: the file still parses
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"vpp-0.55.*SHA-256.*changed or is damaged"):
        load_reference("vpp-0.55", weights_copy)
    load_reference("dense", weights_copy)  # the others still load


def test_a_changed_config_file_and_a_missing_file_are_refused(weights_copy):
    entry = read_manifest(weights_copy)["checkpoints"]["dense"]
    cfg = weights_copy / entry["config"]
    info = json.loads(cfg.read_text())
    info["target"] = 0.1
    cfg.write_text(json.dumps(info))
    with pytest.raises(ValueError, match="SHA-256"):
        reference_info("dense", weights_copy)
    (weights_copy / read_manifest(weights_copy)["checkpoints"]["vpp-0.40"]["weights"]).unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        load_reference("vpp-0.40", weights_copy)


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown reference checkpoint 'vpp-0.3'; available: dense, vpp-0.55, vpp-0.40"):
        load_reference("vpp-0.3")


def _tiny_run(root, method: str, data: str, options: dict | None = None):
    """A run folder as `train vis` writes it (config.json, train.json, checkpoint with optimiser);
    `options`: the learned method's builder options (`train vis --method-option`)."""
    from patchprune.train.checkpoint import save_checkpoint
    from patchprune.vis.config import named_config
    from patchprune.vis.model import VISModel
    from patchprune.vis.run import build_encoder, write_settings

    torch.manual_seed(0)
    cfg = named_config("tiny", categories=[1, 2, 3, 4, 5, 6], img_size=64, dim=64, heads=2)
    model = VISModel(cfg)
    modules = {"model": model}
    if method != "dense":
        modules["policies"] = build_encoder(model, method, 0.4, options=options).runner.policies
    params = [p for m in modules.values() for p in m.parameters()]
    opt = torch.optim.AdamW(params)
    params[0].grad = torch.zeros_like(params[0])
    opt.step()
    root.mkdir(parents=True)
    cfg.save(root)
    settings = {"data": data, "out": str(root), "config": "tiny", "method": method, "target": 0.4, "init": None,
                "steps": 3, "batch": 2, "lr": 1e-3, "warmup": 1, "clip": 0.01, "seed": 0, "threads": 1,
                "stage": 1 if method == "dense" else 2, "method_options": options}
    write_settings(root, settings)
    save_checkpoint(root / "checkpoint.safetensors", modules, opt, step=3,
                    meta={"vis_config": cfg.to_json(), "settings": settings,
                          "history": [{"step": 2, "cpu_minutes": 0.5, "minutes": 0.7}]})
    return model, modules


def test_export_ships_fp16_weights_a_manifest_and_a_card_that_load_back(tmp_path):
    from patchprune.checkpoints_export import export_reference
    from patchprune.data.synth_vis import write_synth_vis

    data = tmp_path / "data"
    write_synth_vis(data, videos=2, valid_videos=1, frames=3, size=64, seed=3, progress=False, min_objects=1,
                    max_objects=2, texture_scale=2.0)
    model, modules = _tiny_run(tmp_path / "run_vpp", "vpp", str(data))
    out, cards = tmp_path / "w", tmp_path / "cards"
    info = export_reference(tmp_path / "run_vpp", "vpp-x", out=out, card_dir=cards, machine="test box")
    assert reference_names(out) == ["vpp-x"]
    assert info["data"]["generator"]["difficulty"]["texture_scale"] == 2.0
    assert info["training"]["cpu_minutes"] == 0.5 and info["training"]["steps_done"] == 3
    assert 0 < info["metrics_shipped"]["pkr"] < 1 and info["metrics"] is None
    ref = load_reference("vpp-x", out)
    for key, value in modules["model"].state_dict().items():
        assert torch.equal(ref.model.state_dict()[key], value.half().float() if value.is_floating_point() else value)
    for key, value in modules["policies"].state_dict().items():
        assert torch.equal(ref.encoder.runner.policies.state_dict()[key], value.half().float())
    card = (cards / "vpp-x.md").read_text()
    assert "test box" in card and "--texture-scale 2.0" in card and "patchprune train vis --data" in card
    assert "0.5 CPU minutes" in card and "pp.load_reference('vpp-x')" in card
    # a second export of another name keeps the first entry
    _tiny_run(tmp_path / "run_dense", "dense", str(data))
    export_reference(tmp_path / "run_dense", "dense", out=out, check=False)
    assert reference_names(out) == ["vpp-x", "dense"]
    assert load_reference("dense", out).encoder is None


def test_a_reference_trained_with_method_options_is_rebuilt_with_them(tmp_path):
    from patchprune.checkpoints_export import export_reference
    from patchprune.learned.mapsm import MapSM

    _tiny_run(tmp_path / "run", "vpp", str(tmp_path / "no_data"), options={"smooth_kernel": 5, "noise": False})
    export_reference(tmp_path / "run", "vpp-k5", out=tmp_path / "w", check=False)
    ref = load_reference("vpp-k5", tmp_path / "w")
    maps = [m for m in ref.encoder.runner.policies.modules() if isinstance(m, MapSM)]
    assert len(maps) == 1 and maps[0].smooth_kernel == 5 and not maps[0].noise  # not the defaults (9, noisy)


def test_export_refuses_a_bad_name(tmp_path):
    from patchprune.checkpoints_export import export_reference

    with pytest.raises(ValueError, match="short identifier"):
        export_reference(tmp_path, "a/b")


def test_export_run_folder_ships_a_weights_only_fp16_run_that_every_reader_accepts(tmp_path):
    from safetensors import safe_open

    from patchprune.checkpoints_export import export_run_folder
    from patchprune.learned.mapsm import MapSM
    from patchprune.vis.model import VISModel
    from patchprune.vis.run import load_run
    from patchprune.vis.train import initialise

    _, modules = _tiny_run(tmp_path / "run", "vpp", str(tmp_path / "no_data"), options={"smooth_kernel": 5})
    (tmp_path / "run" / "eval.json").write_text('{"AP": 0.5}')
    out = export_run_folder(tmp_path / "run", tmp_path / "shipped")
    assert json.loads((out / "eval.json").read_text()) == {"AP": 0.5}
    with safe_open(str(out / "checkpoint.safetensors"), framework="pt") as fh:
        keys = list(fh.keys())
        assert fh.metadata()["step"] == "3" and json.loads(fh.metadata()["meta"])["history"][0]["step"] == 2
    assert keys and not [k for k in keys if k.startswith("optim/")]  # and fp16: half the fp32 weights
    assert (out / "checkpoint.safetensors").stat().st_size < 0.55 * (tmp_path / "run" / "checkpoint.safetensors").stat().st_size
    loaded = load_run(out)  # eval vis / segment read it like the run
    assert loaded.step == 3 and loaded.settings["method_options"] == {"smooth_kernel": 5}
    for key, value in modules["model"].state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value.half().float() if value.is_floating_point() else value)
    assert [m.smooth_kernel for m in loaded.encoder.runner.policies.modules() if isinstance(m, MapSM)] == [5]
    fresh = VISModel(loaded.model.config)
    initialise(fresh, str(out))  # train vis --init
    assert torch.equal(fresh.backbone.blocks[0].attn.qkv.weight, loaded.model.backbone.blocks[0].attn.qkv.weight)
    with pytest.raises(FileExistsError, match="exists"):
        export_run_folder(tmp_path / "run", out)


def test_ship_run_folders_script(tmp_path, capsys):
    from script_loader import load_script

    script = load_script("scripts/ship_run_folders.py")
    _tiny_run(tmp_path / "run", "dense", str(tmp_path / "no_data"))
    assert script.main([f"{tmp_path / 'run'}={tmp_path / 'out'}"]) == 0
    assert "MB)" in capsys.readouterr().out and (tmp_path / "out" / "checkpoint.safetensors").is_file()
    assert script.main([f"{tmp_path / 'run'}={tmp_path / 'out32'}", "--fp32"]) == 0
    from patchprune.vis.run import load_run

    exact, run = load_run(tmp_path / "out32").model.state_dict(), load_run(tmp_path / "run").model.state_dict()
    assert all(torch.equal(exact[k], v) for k, v in run.items())  # fp32: the run's very weights
    with pytest.raises(SystemExit, match="expected RUN=OUT"):
        script.main([str(tmp_path / "run")])


def test_a_shipped_reference_name_works_wherever_a_run_folder_does(tmp_path):
    from patchprune.vis.run import load_run

    run = load_run("vpp-0.40")  # eval vis --run vpp-0.40, segment --run vpp-0.40
    ref = load_reference("vpp-0.40")
    assert run.settings["method"] == "vpp" and run.settings["target"] == 0.40 and run.settings["reference"] == "vpp-0.40"
    for (k, a), b in zip(run.model.state_dict().items(), ref.model.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(run.encoder.runner.policies.state_dict().values(), ref.encoder.runner.policies.state_dict().values()):
        assert torch.equal(a, b)
    assert load_run("dense", method="evtp", target=0.4).encoder is not None  # a training-free policy on it
    from patchprune.vis.model import VISModel
    from patchprune.vis.train import initialise

    fresh = VISModel(ref.model.config)
    assert initialise(fresh, "dense") == "model"  # train vis --init dense
    assert torch.equal(fresh.backbone.blocks[3].mlp.fc1.weight, load_reference("dense").model.backbone.blocks[3].mlp.fc1.weight)
    with pytest.raises(FileNotFoundError, match="shipped reference name"):
        initialise(fresh, str(tmp_path / "dense-x"))
    with pytest.raises(FileNotFoundError, match=r"nor is it a shipped reference: dense, vpp-0.55, vpp-0.40"):
        load_run(tmp_path / "nothing")
