"""The fgseg task: data from the synthetic generator, dense and stage-2 steps that learn."""
import numpy as np
import torch

from patchprune.learned import build
from patchprune.models.fgseg import FgSegConfig, FgSegModel
from patchprune.train.fgseg import dense_step, make_data, sample_chains, sparse_step


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


def test_bench_uses_context_scenes_and_never_resumes_another_configuration():
    from dataclasses import replace

    from patchprune.bench.fgseg import FgSegBenchConfig, training_fingerprint
    from patchprune.data.synth import Difficulty

    quick = FgSegBenchConfig.quick()
    assert quick.difficulty["foreground"] == "cue"
    Difficulty.from_kwargs(dict(quick.difficulty))  # valid generator options
    fp = training_fingerprint(quick)
    assert fp == training_fingerprint(replace(quick, seeds=(5,), threads=1))  # not part of training
    assert fp != training_fingerprint(replace(quick, difficulty={**quick.difficulty, "foreground": "appearance"}))
    assert fp != training_fingerprint(replace(quick, policy_eps=1e-9))
