"""Random-weight LLaVA models and prompts for tests, documentation examples and `bench mllm`.

No weights are downloaded: every model is built from a config with random initialisation.
`tiny_llava` is seconds-fast (tests, examples); `bench_llava` is the realistic benchmark size:
a SigLIP-so400m-like tower at 384 px (27 x 27 = 729 tokens, 1152 wide, 27 layers) and a
Qwen2-0.5B-like language model (896 wide, 24 layers, 14 heads / 2 KV heads, FFN 4864).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def tiny_llava_config(text: str = "llama", vision: str = "siglip", image_size: int = 32, patch_size: int = 8,
                      vocab_size: int = 100):
    """Config of a few-layer LLaVA (SigLIP or CLIP tower, Llama or Qwen2 text model); image token = vocab - 1."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, Qwen2Config, SiglipVisionConfig

    vision_kwargs = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         image_size=image_size, patch_size=patch_size)
    if vision == "siglip":
        vc, strategy = SiglipVisionConfig(**vision_kwargs), "full"
    elif vision == "clip":
        vc, strategy = CLIPVisionConfig(**vision_kwargs, projection_dim=32), "default"
    else:
        raise ValueError(f"vision must be 'siglip' or 'clip', got {vision!r}")
    text_kwargs = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=512, pad_token_id=0)
    tc = {"llama": LlamaConfig, "qwen2": Qwen2Config}.get(text)
    if tc is None:
        raise ValueError(f"text must be 'llama' or 'qwen2', got {text!r}")
    return LlavaConfig(vision_config=vc, text_config=tc(**text_kwargs), image_token_id=vocab_size - 1,
                       vision_feature_layer=-1, vision_feature_select_strategy=strategy, projector_hidden_act="gelu")


def tiny_video_llava(seed: int = 0, vocab_size: int = 100):
    """A few-layer random Video-LLaVA (CLIP towers, "default" strategy, Llama); image token = vocab - 2,
    video token = vocab - 1 (so `llava_prompt`'s text tokens, drawn below the image token, avoid both)."""
    from transformers import CLIPVisionConfig, LlamaConfig, VideoLlavaConfig, VideoLlavaForConditionalGeneration

    vc = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          image_size=32, patch_size=8, projection_dim=32)
    tc = LlamaConfig(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=512, pad_token_id=0)
    config = VideoLlavaConfig(vision_config=vc, text_config=tc, image_token_id=vocab_size - 2,
                              video_token_id=vocab_size - 1, vision_feature_layer=-2,
                              vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    return VideoLlavaForConditionalGeneration(config).eval()


def tiny_llava(text: str = "llama", vision: str = "siglip", image_size: int = 32, patch_size: int = 8,
               vocab_size: int = 100, seed: int = 0):
    """A few-layer random LLaVA (`tiny_llava_config`), eval mode."""
    from transformers import LlavaForConditionalGeneration

    config = tiny_llava_config(text, vision, image_size, patch_size, vocab_size)
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config).eval()


def bench_llava_config(tiny: bool = False):
    """LlavaConfig of the benchmark model (see `bench_llava`); building it allocates no weights."""
    from transformers import LlavaConfig, Qwen2Config, SiglipVisionConfig

    if tiny:
        return tiny_llava_config(text="qwen2", vision="siglip", image_size=48, patch_size=8)
    vc = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                            image_size=384, patch_size=14)
    tc = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                     num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
                     tie_word_embeddings=True, pad_token_id=0)
    return LlavaConfig(vision_config=vc, text_config=tc, image_token_id=151646, vision_feature_layer=-1,
                       vision_feature_select_strategy="full", projector_hidden_act="gelu")


def bench_llava(tiny: bool = False, seed: int = 0):
    """The benchmark model: SigLIP-so400m-like at 384 px + Qwen2-0.5B-like LLM (random weights, fp32, eval).

    tiny=True gives a seconds-fast stand-in with the same structure (for tests of the command).
    """
    from transformers import LlavaForConditionalGeneration

    config = bench_llava_config(tiny)
    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(config).eval()


def llava_prompt(images_per_sample: Sequence[int], tokens_per_image: int, image_token_id: int,
                 text_lengths: Sequence[int] | None = None, padding_side: str = "left", pad_token_id: int = 0,
                 seed: int = 0) -> tuple[Tensor, Tensor]:
    """(input_ids [B, S], attention_mask [B, S]): per sample, a text prefix, one placeholder run of
    `tokens_per_image` per image (each followed by a separator token), a text suffix; padded.

    Text tokens are drawn from [1, image_token_id) (0 is padding).
    """
    g = torch.Generator().manual_seed(seed)
    B = len(images_per_sample)
    text_lengths = list(text_lengths) if text_lengths is not None else [6] * B
    rows = []
    for n_img, n_text in zip(images_per_sample, text_lengths):
        text = torch.randint(1, image_token_id, (n_text + n_img,), generator=g)
        head = max(1, n_text // 2)
        parts = [text[:head]]
        for i in range(n_img):
            parts += [torch.full((tokens_per_image,), image_token_id), text[head + i: head + i + 1]]
        parts.append(text[head + n_img:])
        rows.append(torch.cat(parts))
    width = max(len(r) for r in rows)
    ids = torch.full((B, width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((B, width), dtype=torch.long)
    for b, r in enumerate(rows):
        sl = slice(width - len(r), width) if padding_side == "left" else slice(0, len(r))
        ids[b, sl], mask[b, sl] = r, 1
    return ids, mask
