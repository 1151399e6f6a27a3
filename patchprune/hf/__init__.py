"""Visual token pruning for Hugging Face multimodal models, without patching (see docs/hf.md).

`VisualTokenPruner(model, method="evtp", ratio=0.2)` wraps a covered model (`FAMILIES`); `tiny_llava`
and `bench_llava` build random-weight LLaVA models for tests, examples and the benchmark.
"""
from patchprune.hf.families import FAMILIES, NOT_COVERED, resolve_family
from patchprune.hf.pruner import PrunedInputs, VisualTokenPruner
from patchprune.hf.factory import bench_llava, bench_llava_config, llava_prompt, tiny_llava, tiny_llava_config, tiny_video_llava

__all__ = ["VisualTokenPruner", "PrunedInputs", "FAMILIES", "NOT_COVERED", "resolve_family", "tiny_llava",
           "tiny_llava_config", "tiny_video_llava", "bench_llava", "bench_llava_config", "llava_prompt"]
