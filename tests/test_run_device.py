"""`run_device`: the device train / eval / segment commands run on (CPU by default, CUDA opted into)."""
import pytest
import torch

from patchprune.train.distributed import run_device


def test_default_and_cpu_are_the_cpu():
    assert run_device(None) == torch.device("cpu")
    assert run_device("cpu") == torch.device("cpu")


def test_auto_is_cuda_only_where_there_is_one():
    assert run_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("bad", ["tpu", "gpu0", "cuda:x"])
def test_unknown_devices_are_refused_naming_the_argument(bad):
    with pytest.raises(ValueError, match="--device"):
        run_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ValueError, match="--device 'cuda': CUDA is not available"):
        run_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bare_cuda_is_this_ranks_gpu(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert run_device("cuda") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="--device"):
        run_device(f"cuda:{torch.cuda.device_count()}")
