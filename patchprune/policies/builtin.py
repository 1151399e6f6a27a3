"""Importing this module registers the built-in policies (one file per method, found by `import_family`)."""
from patchprune.registry import import_family

import_family("patchprune.policies")
