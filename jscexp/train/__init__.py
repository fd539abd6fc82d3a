"""Training stage: the Lightning module, its trainer and callbacks."""

import warnings

# Lightning 2.6 trips over its own deprecation on torch >= 2.10; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=Warning)
