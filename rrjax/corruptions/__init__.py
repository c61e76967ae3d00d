"""Forward operators A (corruptions), built from spec strings.

    A = rrjax.corruptions.build("mask(0.5,0.95)|noise(0.1)")
    y = A(key, images)                 # float [B, H, W, C] in [0, 1] -> same shape and dtype

Modules: `spec` (the grammar, the registry of names, `build`), `operators` (mask, noise, blur,
down, box, poisson, motion, identity, oneof, composition: what each does and how its randomness
is drawn), `jpeg` (JPEG compression as libjpeg does it), `kernels` (the random draws and the
mask's selection, written for XLA:CPU's speed), `imagenet_c` (the 15 ImageNet-C corruptions in
NumPy) and `host_ops` (them as operators, run on the host inside jit; the `imagenet_c` grid of
eval specs).

Paper settings (Ravula et al., NeurIPS 2021): mask 50/75/90% (`mask(0.5)`, `mask(0.75)`,
`mask(0.9)`); noise std 0.1/0.3/0.5 (`noise(0.1)` ...); blur `blur(21,5)` and `blur(37,9)`;
unknown-severity training with `mask(0.5,0.95)` and `noise(0.1,0.3)`.
"""

from rrjax.corruptions import host_ops
from rrjax.corruptions.jpeg import Jpeg
from rrjax.corruptions.operators import (Blur, Box, Compose, Down, Identity, Mask, Motion, Noise,
                                         OneOf, Operator, Poisson)
from rrjax.corruptions.spec import OPERATORS, SpecError, build

__all__ = ["Blur", "Box", "Compose", "Down", "Identity", "Jpeg", "Mask", "Motion", "Noise",
           "OneOf", "OPERATORS", "Operator", "Poisson", "SpecError", "build"]
