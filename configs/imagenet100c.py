r"""ImageNet-100-C: a student trained on masks of 50% to 95%, tested on the 15 ImageNet-C
corruptions at severities 1 to 5 (the authors' own evaluation, not in the paper's tables).

  python -m rrjax.main --config=configs/imagenet100c.py --workdir=runs/imagenet100c
  python -m rrjax.main --config=configs/imagenet100c.py:smoke --workdir=/tmp/smoke
      # CPU, tiny random teacher; the grid's first and last cells (gaussian_noise(1),
      # jpeg_compression(5)) as every smoke keeps its first and last eval corruptions

`eval.corruptions = ("imagenet_c",)` expands to the 75 specs `gaussian_noise(1)` ...
`jpeg_compression(5)` (`rrjax.corruptions.host_ops`); the report adds a table per label
fraction: each corruption's top-1 averaged over its severities, the mean over the 75 cells, and
the mean corruption error relative to the frozen teacher (`rrjax.outputs.corruption_grid`).
One draw per cell, as ImageNet-C is one fixed corrupted copy of each test image.

The authors' result files (their repository, not the paper; quoted in the project's
METHOD.md, not checked here): ImageNet-100-C mean top-1 46.0 over the 75 cells, for their
mask-trained CLIP RN101 student. Ours differ in how frost is made
(a procedural texture, not ImageNet-C's photographs) and in the random draws; see
`rrjax/corruptions/imagenet_c.py`, "differs from the reference".

Cost (an estimate, not measured as a whole): the paper run's 2.5 to 4 hours on one H100 for
training, plus the evaluation: 75 cells x 5,000 validation images corrupted on the host by
NumPy, each cell one forward pass of the student, the teacher and the baseline. Per 224 px image
at the most severe level, one core (2026-11-27, load 2.6): zoom_blur 70 ms, pixelate 23, frost
16, the others 1 to 6 ms; 150 ms for one image through all 15, so about an hour of one host
core per pass over the grid, and the evaluation makes about four (the teacher's two probe rows,
the student, the baseline each corrupt the images again). The corruption runs serially, one
batch per `jax.pure_callback`, while the accelerator waits: about four hours of evaluation on
one host core, untested at that scale. On several devices the callback gathers each global
batch to one host.
"""

from rrjax.config import schema, smoke

TRAIN = "mask(0.5,0.95)"
EVAL = ("imagenet_c",)


def get_config(arg: str | None = None):
  c = schema.base()
  c.experiments.mask50_95 = schema.experiment(TRAIN, EVAL)
  c.eval.draws = 1
  return smoke.variant(c, arg, "imagenet100c")
