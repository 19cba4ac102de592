"""Learning from the shop's own data: ``retrieval train`` (docs/training.md).

Kept tiny on purpose: the modules below import torch and sentence-transformers only when a
run needs them, so ``retrieval --help`` stays fast.
"""
