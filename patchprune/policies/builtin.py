"""Importing this module registers the built-in policies (one file per method)."""
from patchprune.policies import keep_all, random, topk_norm  # noqa: F401
