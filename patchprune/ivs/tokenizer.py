"""Word-level tokenizer over the data set's expressions (`tokenizers` WordLevel), saved with the run.

Why word level: the generated vocabulary is a few dozen words, so every word is one token and the
language model needs no sub-word merges. Special tokens mark the prompt's parts: <image> (the key
frame's tokens), <temporal> (the perceiver tokens), <refer> (start of the instruction), [SEG], <seg>
(the query slots), plus [PAD] and [UNK].
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

PAD, UNK, IMAGE, TEMPORAL, REFER, SEG, SEG_SLOT = "[PAD]", "[UNK]", "<image>", "<temporal>", "<refer>", "[SEG]", "<seg>"
SPECIAL_TOKENS = (PAD, UNK, IMAGE, TEMPORAL, REFER, SEG, SEG_SLOT)
PROMPT_WORDS = ("please", "segment", "the", "object", "in", "this", "frame", "given", "reference", "frames", "and",
                "key", "instruction", ":", "sure", ",", "segmentation", "result", "is")
TOKENIZER_FILE = "tokenizer.json"


def build_tokenizer(texts: Iterable[str]) -> Tokenizer:
    """WordLevel tokenizer: special tokens first (ids 0..6), then the prompt words, then every other
    word of `texts` in first-seen order (lower-cased, split on whitespace and punctuation)."""
    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    norm = normalizers.Lowercase()
    vocab: dict[str, int] = {}
    for tok in SPECIAL_TOKENS:
        vocab[tok] = len(vocab)
    for text in (" ".join(PROMPT_WORDS), *texts):
        for word, _ in pre.pre_tokenize_str(norm.normalize_str(text)):
            vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = norm
    tok.pre_tokenizer = pre
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


def save_tokenizer(tok: Tokenizer, folder: str | Path) -> Path:
    """Write `folder/tokenizer.json` atomically."""
    from patchprune.data.io import atomic_path

    path = Path(folder) / TOKENIZER_FILE
    with atomic_path(path) as tmp:
        tok.save(str(tmp))
    return path


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """Read `folder/tokenizer.json` (FileNotFoundError naming it when missing)."""
    path = Path(folder) / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass a run folder written by `patchprune train ivs`")
    return Tokenizer.from_file(str(path))


def encode_words(tok: Tokenizer, text: str) -> list[int]:
    """Token ids of `text` (no special tokens added)."""
    return tok.encode(text, add_special_tokens=False).ids


PROMPT_HEAD = ("instruction", ":", REFER)
ANSWER = ("sure", ",", "the", "segmentation", "result", "is")


def encode_prompt(tok: Tokenizer, expression: str) -> tuple[list[int], list[bool]]:
    """Ids of "instruction : <refer> {expression} [SEG] sure , the segmentation result is" and the
    <refer> span mask (the expression's words and [SEG]: what the target head averages and the
    perceiver reads)."""
    vocab = tok.get_vocab()
    words = encode_words(tok, expression)
    if not words:
        raise ValueError(f"expression {expression!r} has no words; give the instruction text")
    head = [vocab[w] for w in PROMPT_HEAD]
    tail = [vocab[w] for w in ANSWER]
    ids = head + words + [vocab[SEG]] + tail
    refer = [False] * len(head) + [True] * (len(words) + 1) + [False] * len(tail)
    return ids, refer
