"""Figure 1 of the paper for a finished run: corrupted test images and what each method predicts.

    python -m rrjax.outputs.gallery --workdir=runs/demo [--experiment=mask90] [--num=8]

Each row is one test image: the clean image (true class), the corrupted one, the top-3 classes
of ours (robust student + linear probe) and of the baseline (fine-tuned end to end), with their
probabilities; a top-1 that is right is green, wrong red.

What is reused and what is refitted:
  * the student and the baseline are the run's checkpoints (`<exp>/checkpoints`, and the
    baseline's for the largest label fraction f: `<exp>/baseline_<f>/checkpoints`, or the best
    on validation of its chosen learning rate, `baseline_<f>/lr_<lr>/best`), restored as raw
    pytrees of which only params and batch_stats are used;
  * the run does not store its probes, so ours' probe is refitted at the same label fraction,
    on one corruption draw of at most `--probe_images` training images, with the hyperparameters
    that results.json records for the `ours` row (the config's when none is recorded). It is a
    quick stand-in for the run's probe, good enough to show predictions, not to report accuracy;
  * the test images are `--num` evenly spaced ones of the test split, corrupted with
    `--corruption` (default: the experiment's first eval corruption) under a key derived from
    the run's seed.
"""

import argparse
import io
import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from matplotlib.figure import Figure

from rrjax import corruptions, data, errors, models
from rrjax.config import experiments
from rrjax.evaluation import probe, tasks
from rrjax.evaluation.features import extract_features
from rrjax.io import files
from rrjax.outputs import rows
from rrjax.training import baseline as baseline_lib
from rrjax.training import checkpoint, student


def top_k(probs: np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
  """The `k` most probable classes of `probs` `[N, C]`, most probable first.

  Returns:
    (classes int `[N, k]`, probabilities float `[N, k]`).
  """
  order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
  return order, np.take_along_axis(probs, order, axis=-1)


def _probe_hparams(results: dict, rc, train_corruption: str, fraction: float) -> dict:
  """`probe.fit` arguments: the `ours` row's of results.json at `fraction`, else the config's.

  As in the run, at least `probe.min_steps` optimiser steps, which matters more here since the
  probe sees fewer images than the run's.
  """
  hparams = probe.configured(rc.probe)
  for row in results.get("rows", []):
    if (row.get("method") == "ours" and row.get("train_corruption") == train_corruption
        and row.get("label_fraction") == fraction and row.get("probe")):
      hparams = {k: row["probe"][k] for k in hparams}
  return dict(hparams, epochs=int(hparams["epochs"]), batch_size=rc.probe.batch_size,
              min_steps=rc.probe.min_steps, seed=rc.seed)


def _baseline_lr(results: dict, rc, train_corruption: str, fraction: float) -> float:
  """The learning rate of the `baseline` row at `fraction` (chosen on validation), else the
  config's."""
  for row in results.get("rows", []):
    if (row.get("method") == "baseline" and row.get("train_corruption") == train_corruption
        and row.get("label_fraction") == fraction and row.get("baseline")):
      return float(row["baseline"]["lr"])
  return float(rc.baseline.lr)


def _read_json(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise errors.UserError(f"cannot read {path} ({e}): pass the workdir of a finished run as "
                           "--workdir") from None


def predictions(workdir: str, experiment_name: str | None = None, *, num: int = 8,
                corruption: str | None = None, probe_images: int = 1000) -> dict:
  """Clean and corrupted test images and both methods' class probabilities.

  Returns:
    dict with `clean`, `corrupted` float `[num, H, W, 3]`, `labels` int `[num]`, `ours` and
    `baseline` float `[num, C]` probabilities (fewer rows if the split is smaller),
    `class_names`, `experiment`, `corruption`, `label_fraction`.
  """
  config = ml_collections.ConfigDict(_read_json(os.path.join(workdir, "config.json")))
  results = _read_json(os.path.join(workdir, "results.json"))
  runs = dict(experiments.expand(config))
  name = experiment_name or next(iter(runs))
  if name not in runs:
    raise errors.UserError(f"no experiment {name!r} in {workdir}; names: {', '.join(runs)}")
  rc = runs[name]
  rundir = os.path.join(workdir, name)
  op = corruptions.build(corruption or rc.eval.corruptions[0])
  op_train = corruptions.build(rc.train.corruption)
  fraction = max(float(f) for f in rc.probe.label_fractions)

  train_source = tasks.load_split(rc.data, rc.data.train_split)
  test_source = tasks.load_split(rc.data, rc.data.test_split)
  num_classes = train_source.num_classes
  labelled = probe.label_fraction_indices(train_source.labels(), fraction, num_classes,
                                          rc.seed)
  # A seeded random subset, not the first ones: a split may be sorted by class.
  indices = np.sort(np.random.default_rng(rc.seed).permutation(labelled)[:probe_images])
  train_images, train_labels = _eval_views(data.subset(train_source, indices))
  # Evenly spaced over the split, which may be sorted by class (image folders are).
  shown = np.unique(np.linspace(0, len(test_source) - 1, num).astype(int))
  clean, labels = _eval_views(data.subset(test_source, shown))

  teacher, teacher_vars = models.load_from_config(rc.teacher, head="embed")
  encoder, _ = student.student_model(rc, teacher, teacher_vars)
  encoder_vars = checkpoint.read_variables(os.path.join(rundir, "checkpoints"))
  key = jax.random.fold_in(jax.random.key(rc.seed), 7)  # any fixed stream: a seeded figure
  feats = extract_features(encoder, encoder_vars, train_images, corruption=op_train,
                           key=jax.random.fold_in(key, 0), batch_size=rc.eval.batch_size)
  ours_probe = probe.fit(feats, train_labels, num_classes,
                         **_probe_hparams(results, rc, str(op_train), fraction))

  corrupted = np.asarray(op(jax.random.fold_in(key, 1), jnp.asarray(clean)))
  ours_logits = probe.logits(ours_probe, encoder.apply(encoder_vars, corrupted, train=False))
  baseline_model, _ = models.load_from_config(baseline_lib.encoder_section(rc), head="logits",
                                              num_classes=num_classes)
  baseline_vars = checkpoint.read_variables(baseline_lib.checkpoint_dir(
      rc, os.path.join(rundir, f"baseline_{fraction:g}"),
      _baseline_lr(results, rc, str(op_train), fraction)))
  baseline_logits = baseline_model.apply(baseline_vars, corrupted, train=False)
  softmax = lambda z: np.asarray(jax.nn.softmax(jnp.asarray(z, jnp.float32), axis=-1))
  return {"clean": np.asarray(clean), "corrupted": corrupted, "labels": np.asarray(labels),
          "ours": softmax(ours_logits), "baseline": softmax(baseline_logits),
          "class_names": list(train_source.class_names), "experiment": name,
          "corruption": str(op), "label_fraction": fraction}


def _text_panel(ax, title: str, probs: np.ndarray, label: int, class_names: list[str]) -> None:
  """Writes the top-3 classes of one image's `probs` `[C]` into `ax`."""
  classes, values = top_k(probs[None])
  ax.axis("off")
  ax.set_title(title, fontsize=8)
  for rank, (c, p) in enumerate(zip(classes[0], values[0])):
    color = ("green" if c == label else "red") if rank == 0 else "black"
    ax.text(0.0, 0.8 - 0.3 * rank, f"{class_names[c]}  {p:.2f}", color=color, fontsize=8,
            transform=ax.transAxes)


def figure(pred: dict) -> Figure:
  """The gallery of `predictions(...)`: one row per image, four columns."""
  n = len(pred["labels"])
  fig = Figure(figsize=(8, 1.7 * n + 0.5))
  axes = fig.subplots(n, 4, squeeze=False)
  names = pred["class_names"]
  for i in range(n):
    label = int(pred["labels"][i])
    # Corrupted images are unclipped (noise leaves [0, 1]); clip only for display.
    for ax, image, title in ((axes[i, 0], pred["clean"][i], f"clean: {names[label]}"),
                             (axes[i, 1], pred["corrupted"][i], pred["corruption"])):
      ax.imshow(np.clip(image, 0, 1), interpolation="nearest")
      ax.set_title(title, fontsize=8)
      ax.axis("off")
    _text_panel(axes[i, 2], "ours (top-3)", pred["ours"][i], label, names)
    _text_panel(axes[i, 3], "baseline (top-3)", pred["baseline"][i], label, names)
  fig.suptitle(f"{pred['experiment']}: eval {pred['corruption']}, "
               f"labels {rows.format_fraction(pred['label_fraction'])}", fontsize=10)
  fig.tight_layout()
  return fig


def write_gallery(workdir: str, experiment_name: str | None = None, *, num: int = 8,
                  out: str | None = None, **kwargs) -> str:
  """Writes the gallery PNG (default `<workdir>/gallery_<experiment>.png`); returns its path."""
  pred = predictions(workdir, experiment_name, num=num, **kwargs)
  buffer = io.BytesIO()
  figure(pred).savefig(buffer, format="png", dpi=100)
  path = out or os.path.join(workdir, f"gallery_{pred['experiment']}.png")
  files.atomic_write(path, buffer.getvalue())
  return path


def main(argv: list[str] | None = None) -> str:
  parser = argparse.ArgumentParser(prog="python -m rrjax.outputs.gallery",
                                   description="Figure 1 of the paper for a finished run.")
  parser.add_argument("--workdir", required=True, help="a finished run's workdir")
  parser.add_argument("--experiment", default=None, help="default: the first experiment")
  parser.add_argument("--num", type=int, default=8, help="test images (rows)")
  parser.add_argument("--out", default=None, help="default: <workdir>/gallery_<experiment>.png")
  parser.add_argument("--corruption", default=None,
                      help="eval corruption spec; default: the experiment's first")
  parser.add_argument("--probe_images", type=int, default=1000,
                      help="training images the quick probe is fitted on")
  args = parser.parse_args(argv)
  try:
    path = write_gallery(args.workdir, args.experiment, num=args.num, out=args.out,
                         corruption=args.corruption, probe_images=args.probe_images)
  except errors.UserError as e:
    parser.exit(2, f"{parser.prog}: error: {e}\n")
  print(path)
  return path


def _eval_views(source) -> tuple[np.ndarray, np.ndarray]:
  """The eval views of a few images, float32 `[n, S, S, 3]` in [0, 1], and their labels."""
  batch = next(data.batches(source, len(source), train=False, seed=0, process_index=0,
                            process_count=1))
  return batch["image"].astype(np.float32) / 255, batch["label"]


if __name__ == "__main__":  # Last: main uses every function above.
  main(sys.argv[1:])
