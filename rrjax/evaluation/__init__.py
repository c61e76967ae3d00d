"""Evaluation of frozen encoders on corrupted images.

Modules: `features` (an encoder's features in batches, corrupted on device), `probe` (label
subsets, the optax linear probe, its hyperparameter selection), `scoring` (top-1 over seeded
corruption draws: how every results row is measured), `zeroshot` (CLIP text-prompt heads),
`restoration` (classical pixel-space restorers, the appendix's route).
"""
