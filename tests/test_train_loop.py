"""Training utilities: safetensors checkpoints (atomic, with optimiser state), exact resume,
the stage-2 recipe (param groups, lr drop), gloo gradient averaging, and one fgseg stage-2 step."""
import os

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from patchprune.train import LoopConfig, Trainer, load_checkpoint, param_groups, save_checkpoint, step_lr


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.norm = nn.LayerNorm(3)


def _make(seed=0):
    torch.manual_seed(seed)
    net = Net()
    opt = torch.optim.AdamW(param_groups({"net": (net.named_parameters(), 1.0)}), lr=0.1)
    return net, opt


def _step_fn(net, gen):
    def step(i):
        x = torch.randn(8, 4, generator=gen)
        return {"loss": net.norm(net.lin(x)).square().mean() + net.lin.weight.abs().mean()}
    return step


def test_checkpoint_round_trip_and_atomic_write(tmp_path):
    net, opt = _make()
    _step_fn(net, torch.Generator().manual_seed(0))(0)["loss"].backward()
    opt.step()
    path = save_checkpoint(tmp_path / "c.safetensors", {"net": net}, opt, step=7, meta={"note": "x"})
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temp file left behind
    net2, opt2 = _make(seed=1)
    info = load_checkpoint(path, {"net": net2}, opt2)
    assert info == {"step": 7, "meta": {"note": "x"}}
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for pid in s1["state"]:
        for k in s1["state"][pid]:
            assert torch.equal(torch.as_tensor(s1["state"][pid][k]), torch.as_tensor(s2["state"][pid][k]))
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.safetensors", {"net": net2})
    with pytest.raises(ValueError, match="no module"):
        load_checkpoint(path, {"other": net2})


def test_resume_reproduces_an_uninterrupted_run(tmp_path):
    net_a, opt_a = _make()
    Trainer({"net": net_a}, opt_a, LoopConfig(steps=6, lr=0.1, clip=1.0, progress=False)).fit(
        _step_fn(net_a, torch.Generator().manual_seed(0)))
    ckpt = str(tmp_path / "r.safetensors")
    net_b, opt_b = _make()
    gen = torch.Generator().manual_seed(0)
    inner = _step_fn(net_b, gen)

    def crashing(i):
        if i == 4:
            raise KeyboardInterrupt
        return inner(i)

    with pytest.raises(KeyboardInterrupt):
        Trainer({"net": net_b}, opt_b, LoopConfig(steps=6, lr=0.1, clip=1.0, checkpoint=ckpt, checkpoint_every=2,
                                                  progress=False)).fit(crashing)
    net_c, opt_c = _make(seed=5)
    tr = Trainer({"net": net_c}, opt_c, LoopConfig(steps=6, lr=0.1, clip=1.0, checkpoint=ckpt, progress=False))
    # the data stream must continue where the crash happened: replay 4 batches of the generator
    gen_c = torch.Generator().manual_seed(0)
    for _ in range(4):
        torch.randn(8, 4, generator=gen_c)
    history = tr.fit(_step_fn(net_c, gen_c))
    assert tr.start_step == 4 and [h["step"] for h in history] == list(range(6))
    for a, b in zip(net_a.state_dict().values(), net_c.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)


def test_param_groups_and_lr_schedule():
    net = Net()
    extra = nn.Linear(2, 2)
    groups = param_groups({"backbone": (net.named_parameters(), 0.1), "modules": (extra.named_parameters(), 1.0)})
    by_name = {g["name"]: g for g in groups}
    assert by_name["backbone"]["weight_decay"] == 0.05 and by_name["backbone"]["lr_mult"] == 0.1
    assert by_name["backbone/no_decay"]["weight_decay"] == 0.0
    assert len(by_name["backbone/no_decay"]["params"]) == 3  # bias, norm weight, norm bias
    assert step_lr(0, 30, 1.0) == 1.0 and step_lr(19, 30, 1.0) == 1.0 and step_lr(20, 30, 1.0) == pytest.approx(0.1)
    assert step_lr(0, 30, 1.0, warmup=4) == pytest.approx(0.25)


def _worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank))
    from patchprune.train.distributed import average_gradients, init_distributed, shard

    info = init_distributed("gloo")
    p = nn.Parameter(torch.zeros(3))
    q = nn.Parameter(torch.zeros(2))  # unused on this rank: counts as a zero gradient
    p.grad = torch.full((3,), float(rank + 1))
    average_gradients([p, q], info)
    out[rank] = (p.grad.tolist(), q.grad.tolist(), shard(list(range(5)), info))
    torch.distributed.destroy_process_group()


def test_gloo_gradient_averaging_two_processes():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(2, port, out), nprocs=2, join=True)
    assert out[0][0] == [1.5, 1.5, 1.5] and out[1][0] == [1.5, 1.5, 1.5]
    assert out[0][1] == [0.0, 0.0]
    assert out[0][2] == [0, 2, 4] and out[1][2] == [1, 3]


def test_maybe_resume_is_idempotent_and_fit_continues_from_it(tmp_path, monkeypatch):
    import patchprune.train.loop as loop_mod

    ckpt = str(tmp_path / "i.safetensors")
    net, opt = _make()
    Trainer({"net": net}, opt, LoopConfig(steps=3, lr=0.1, checkpoint=ckpt, progress=False)).fit(
        _step_fn(net, torch.Generator().manual_seed(0)))
    loads = []
    real_load = loop_mod.load_checkpoint
    monkeypatch.setattr(loop_mod, "load_checkpoint", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    net2, opt2 = _make(seed=3)
    tr = Trainer({"net": net2}, opt2, LoopConfig(steps=5, lr=0.1, checkpoint=ckpt, progress=False))
    assert tr.maybe_resume() == 3 and len(loads) == 1 and [h["step"] for h in tr.history] == [0, 1, 2]
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        assert torch.equal(a, b)
    with torch.no_grad():
        net2.lin.weight.zero_()  # a second call must not reload (it would undo this)
    assert tr.maybe_resume() == 3 and len(loads) == 1
    assert torch.count_nonzero(net2.lin.weight) == 0
    steps = []
    inner = _step_fn(net2, torch.Generator().manual_seed(0))
    history = tr.fit(lambda i: steps.append(i) or inner(i))
    assert steps == [3, 4] and len(loads) == 1  # fit continues from the resumed step, no reload
    assert [h["step"] for h in history] == list(range(5)) and tr.start_step == 3
    # no checkpoint at all: still one look only, and a fresh start
    fresh, fopt = _make()
    tr2 = Trainer({"net": fresh}, fopt, LoopConfig(steps=2, lr=0.1, checkpoint=str(tmp_path / "none.safetensors"),
                                                     progress=False))
    assert tr2.maybe_resume() == 0 and tr2.maybe_resume() == 0 and tr2.history == []


def test_partial_checkpoint_resumes_at_its_step_finetune_style(tmp_path):
    # Fine-tunes keep only final checkpoints, but one with step < steps must continue at its step
    # (not train again from step 0 on the loaded weights).
    net_a, opt_a = _make()
    Trainer({"net": net_a}, opt_a, LoopConfig(steps=6, lr=0.1, clip=1.0, progress=False)).fit(
        _step_fn(net_a, torch.Generator().manual_seed(0)))
    ckpt = tmp_path / "ft.safetensors"
    net_b, opt_b = _make()
    inner = _step_fn(net_b, torch.Generator().manual_seed(0))

    def crashing(i):
        if i == 3:
            raise KeyboardInterrupt
        return inner(i)

    with pytest.raises(KeyboardInterrupt):
        Trainer({"net": net_b}, opt_b, LoopConfig(steps=6, lr=0.1, clip=1.0, checkpoint=str(ckpt), checkpoint_every=2,
                                                  progress=False)).fit(crashing)
    assert load_checkpoint(ckpt, {"net": Net()})["step"] == 2
    net_c, opt_c = _make(seed=5)
    tr = Trainer({"net": net_c}, opt_c, LoopConfig(steps=6, lr=0.1, clip=1.0, checkpoint=str(ckpt), progress=False))
    start = tr.maybe_resume()  # as `patchprune.fgseg.training.finetune` does: resume, check, replay the data, fit
    assert start == 2
    gen_c = torch.Generator().manual_seed(0)
    for _ in range(start):
        torch.randn(8, 4, generator=gen_c)
    steps = []
    inner_c = _step_fn(net_c, gen_c)
    history = tr.fit(lambda i: steps.append(i) or inner_c(i))
    assert steps == [2, 3, 4, 5] and [h["step"] for h in history] == list(range(6))
    for a, b in zip(net_a.state_dict().values(), net_c.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    assert load_checkpoint(ckpt, {"net": Net()})["step"] == 6
