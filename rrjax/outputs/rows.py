"""The results row: one cell of the paper's tables, its one constructor and its schema.

    row = rows.make_row(experiment="mask90", loss="st", method="ours", dataset="imagenet100",
                        train_corruption="mask(0.9)", eval_corruption="mask(0.9)",
                        label_fraction=0.1, draws=[79.2, 80.1, 79.8])
    row["top1_mean"], row["top1_std"], row["top1_stderr"]

A row is one (experiment, method, dataset, train corruption, eval corruption, label fraction)
cell: top-1 accuracy in percent over independent corruption draws, with its mean, standard
deviation (ddof=1; 0 for one draw) and standard error std / sqrt(K). Methods:
`teacher_clean` (the ceiling), `clean_probe_on_corrupted`, `teacher_corrupted`, `restored`,
`ours`, `baseline`, `teacher_zeroshot`, `zeroshot`, in `METHOD_ORDER`; any other name is
reported after those. Optional fields: `probe` (the probe's hyperparameters), `baseline` (the
baseline's: learning rate, steps, the step chosen on validation and its validation top-1),
`backbone_label_fraction` (a baseline's transfer rows: the label fraction its encoder was
fine-tuned with), and in a row aggregated over training seeds (`aggregate_seeds`) `seeds` (the
per-seed means) and `draw_stderr` (the mean over seeds of the standard error over draws).
"""

import collections
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

CEILING = "teacher_clean"
METHOD_ORDER = ("teacher_clean", "clean_probe_on_corrupted", "teacher_corrupted", "restored",
                "ours", "baseline", "baseline_teacher", "teacher_zeroshot", "zeroshot")
# Table headers and legends of the known methods.
COLUMN_NAMES = {
    "teacher_clean": "teacher (clean, ceiling)",
    "clean_probe_on_corrupted": "teacher, clean probe",
    "teacher_corrupted": "teacher (corrupted)",
    "ours": "ours",
    "baseline": "baseline",
    "baseline_teacher": "baseline (teacher fine-tuned)",
    "restored": "restored + teacher",
    "teacher_zeroshot": "teacher zero-shot",
    "zeroshot": "zero-shot",
}
LEGEND = {
    "teacher_clean": "frozen teacher + probe on clean images (ceiling).",
    "clean_probe_on_corrupted": "frozen teacher + the ceiling's probe (fitted on clean images) "
                                "applied to corrupted ones (the paper's naive row).",
    "teacher_corrupted": "frozen teacher + probe fitted on corrupted images (a stronger naive "
                         "route).",
    "ours": "robust student + probe on corrupted images.",
    "baseline": "pretrained encoder + new linear head fine-tuned end to end on corrupted images "
                "(`baseline.encoder`: the paper configs' ImageNet-supervised ResNet-101, or the "
                "teacher's architecture and weights).",
    "baseline_teacher": "the teacher + new linear head fine-tuned end to end on corrupted "
                        "images (a second baseline, `baseline.teacher_too`).",
    "restored": "classical restoration of the corrupted image (inpainting, Wiener filter), then "
                "the frozen teacher + probe (the pixel-space route).",
    "teacher_zeroshot": "frozen teacher's embeddings of corrupted images against the text "
                        "prompts, no probe, no labels.",
    "zeroshot": "zero-shot classifier from text prompts (\"A photo of a {class}\"), no probe.",
}

REQUIRED_FIELDS = ("experiment", "loss", "method", "dataset", "train_corruption",
                   "eval_corruption", "label_fraction", "top1_mean", "top1_std", "top1_stderr",
                   "draws")
OPTIONAL_FIELDS = ("probe", "baseline", "backbone_label_fraction", "seeds", "draw_stderr")
# What identifies a cell: two rows may not share all of these.
KEY_FIELDS = ("experiment", "method", "dataset", "train_corruption", "eval_corruption",
              "label_fraction")


def make_row(*, experiment: str, loss: str, method: str, dataset: str, train_corruption: str,
             eval_corruption: str, label_fraction: float, draws: Sequence[float],
             probe: Mapping | None = None, baseline: Mapping | None = None,
             backbone_label_fraction: float | None = None) -> dict:
  """A results row from the per-draw top-1 accuracies in percent (module docstring).

  Raises:
    ValueError: naming the first field that does not fit the schema.
  """
  values = np.asarray([float(d) for d in draws], np.float64)
  if not values.size:
    raise ValueError("a results row needs at least one draw")
  std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
  row = {"experiment": experiment, "loss": loss, "method": method, "dataset": dataset,
         "train_corruption": train_corruption, "eval_corruption": eval_corruption,
         "label_fraction": float(label_fraction), "top1_mean": float(values.mean()),
         "top1_std": std, "top1_stderr": std / math.sqrt(values.size),
         "draws": [float(v) for v in values]}
  if probe is not None:
    row["probe"] = dict(probe)
  if baseline is not None:
    row["baseline"] = dict(baseline)
  if backbone_label_fraction is not None:
    row["backbone_label_fraction"] = float(backbone_label_fraction)
  validate_row(row)
  return row


def is_number(x: Any) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool)


def validate_row(row: Mapping) -> None:
  """Raises ValueError naming the first problem of a results row (missing or ill-typed field)."""
  if not isinstance(row, Mapping):
    raise ValueError(f"a results row must be a dict, got {type(row).__name__}")
  missing = [f for f in REQUIRED_FIELDS if f not in row]
  if missing:
    raise ValueError(f"results row is missing field(s) {', '.join(missing)}: {dict(row)!r}")
  unknown = sorted(set(row) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
  if unknown:
    raise ValueError(f"results row has unknown field(s) {', '.join(unknown)}")
  for field in ("experiment", "loss", "method", "dataset", "train_corruption",
                "eval_corruption"):
    if not isinstance(row[field], str):
      raise ValueError(f"results row field {field} must be a string, got {row[field]!r}")
  for field in ("top1_mean", "top1_std", "top1_stderr"):
    if not is_number(row[field]):
      raise ValueError(f"results row field {field} must be a number, got {row[field]!r}")
  fraction = row["label_fraction"]
  if not is_number(fraction) or not 0 < fraction <= 1:
    raise ValueError(f"results row field label_fraction must be in (0, 1], got {fraction!r}")
  draws = row["draws"]
  if (isinstance(draws, (str, bytes)) or not isinstance(draws, Sequence | np.ndarray)
      or len(draws) == 0 or not all(is_number(d) for d in draws)):
    raise ValueError(f"results row field draws must be a non-empty list of accuracies in "
                     f"percent, got {draws!r}")


def check_rows(rows: Sequence[Mapping]) -> None:
  """Validates every row; raises ValueError for two rows of the same cell (`KEY_FIELDS`)."""
  seen = set()
  for row in rows:
    validate_row(row)
    key = tuple(row.get(f) for f in KEY_FIELDS)
    if key in seen:
      raise ValueError(f"two results rows for {dict(zip(KEY_FIELDS, key))}")
    seen.add(key)


def run_of(row: Mapping) -> tuple[str, str]:
  """What tells a row's training run apart: its experiment and train corruption."""
  return row.get("experiment") or "", row["train_corruption"]


def methods(rows: Iterable[Mapping]) -> list[str]:
  """The methods of `rows` in table order: METHOD_ORDER, then others as they first appear."""
  present = list(dict.fromkeys(r["method"] for r in rows))
  return ([m for m in METHOD_ORDER if m in present]
          + [m for m in present if m not in METHOD_ORDER])


def group(rows: Iterable, key) -> dict[Any, list]:
  """`rows` by `key(row)`, groups and their members in first-seen order."""
  groups = collections.defaultdict(list)
  for row in rows:
    groups[key(row)].append(row)
  return dict(groups)


def format_fraction(fraction: float) -> str:
  """0.001 -> "0.1%", 0.1 -> "10%", 1.0 -> "100%"."""
  return f"{fraction * 100:g}%"


def aggregate_seeds(per_seed: Mapping[int, Sequence[Mapping]]) -> list[dict]:
  """One row per cell from the rows of runs that differ only in their training seed.

  A cell's `top1_mean` is the mean over seeds of each seed's mean over draws, `top1_std` the
  standard deviation (ddof=1) of those per-seed means and `top1_stderr` its standard error
  std / sqrt(S): the spread of the whole training-and-evaluation pipeline. `seeds` keeps the
  per-seed means (by seed, as strings), `draws` every draw of every seed, and `draw_stderr` the
  mean over seeds of the standard error over draws (the evaluation's own spread). Other fields
  are the first seed's, except the hyperparameters chosen per seed (`probe`, `baseline`), which
  are dropped (each seed's results.json keeps them).

  Raises:
    ValueError: fewer than two seeds, or a cell that not every seed has.
  """
  if len(per_seed) < 2:
    raise ValueError(f"aggregating seeds needs at least 2 runs, got {len(per_seed)}")
  cells = {}
  for seed, rows in per_seed.items():
    check_rows(rows)
    for row in rows:
      cells.setdefault(tuple(row[f] for f in KEY_FIELDS), {})[seed] = row
  out = []
  for key, by_seed in cells.items():
    if len(by_seed) != len(per_seed):
      missing = sorted(set(per_seed) - set(by_seed))
      raise ValueError(f"cell {dict(zip(KEY_FIELDS, key))} is missing from seed(s) {missing}")
    means = np.asarray([by_seed[s]["top1_mean"] for s in per_seed], np.float64)
    std = float(np.std(means, ddof=1))
    first = by_seed[next(iter(per_seed))]
    row = {k: v for k, v in first.items() if k not in ("probe", "baseline")}
    row.update(top1_mean=float(means.mean()), top1_std=std,
               top1_stderr=std / math.sqrt(means.size),
               draws=[float(d) for s in per_seed for d in by_seed[s]["draws"]],
               seeds={str(s): float(m) for s, m in zip(per_seed, means)},
               draw_stderr=float(np.mean([by_seed[s]["top1_stderr"] for s in per_seed])))
    validate_row(row)
    out.append(row)
  return out


def paired_difference(a: Mapping, b: Mapping) -> tuple[float, float]:
  """`(mean, standard error)` over seeds of `a`'s per-seed mean minus `b`'s, for two
  aggregated rows (`aggregate_seeds`) of the same seeds: the seeds pair them (one seed, one
  labelled subset and data order for both)."""
  seeds = sorted(a["seeds"])
  if sorted(b["seeds"]) != seeds:
    raise ValueError(f"rows of different seeds: {seeds} and {sorted(b['seeds'])}")
  diff = np.asarray([a["seeds"][s] - b["seeds"][s] for s in seeds], np.float64)
  return float(diff.mean()), float(np.std(diff, ddof=1) / math.sqrt(diff.size))


def gap_recovered(ours: Mapping, naive: Mapping, ceiling: Mapping) -> tuple[float, float] | None:
  """`(mean, standard error)` over seeds of (ours - naive) / (ceiling - naive), for aggregated
  rows of the same seeds; None when the ceiling is not above the naive row in some seed (the
  share is then meaningless)."""
  seeds = sorted(ours["seeds"])
  shares = []
  for s in seeds:
    top, low = ceiling["seeds"][s], naive["seeds"][s]
    if top <= low:
      return None
    shares.append((ours["seeds"][s] - low) / (top - low))
  shares = np.asarray(shares, np.float64)
  return float(shares.mean()), float(np.std(shares, ddof=1) / math.sqrt(shares.size))
