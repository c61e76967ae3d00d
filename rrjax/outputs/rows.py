"""The results row: one cell of the paper's tables, its one constructor and its schema.

    row = rows.make_row(experiment="mask90", loss="st", method="ours", dataset="imagenet100",
                        train_corruption="mask(0.9)", eval_corruption="mask(0.9)",
                        label_fraction=0.1, draws=[79.2, 80.1, 79.8])
    row["top1_mean"], row["top1_std"], row["top1_stderr"]

A row is one (experiment, method, dataset, train corruption, eval corruption, label fraction)
cell: top-1 accuracy in percent over independent corruption draws, with its mean, standard
deviation (ddof=1; 0 for one draw) and standard error std / sqrt(K). Methods:
`teacher_clean` (the ceiling), `teacher_corrupted`, `restored`, `ours`, `baseline`,
`teacher_zeroshot`, `zeroshot`, in `METHOD_ORDER`; any other name is reported after those.
Optional fields: `probe` (the probe's hyperparameters) and `backbone_label_fraction` (a
baseline's transfer rows: the label fraction its encoder was fine-tuned with).
"""

import collections
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

CEILING = "teacher_clean"
METHOD_ORDER = ("teacher_clean", "teacher_corrupted", "restored", "ours", "baseline",
                "teacher_zeroshot", "zeroshot")
# Table headers and legends of the known methods.
COLUMN_NAMES = {
    "teacher_clean": "teacher (clean, ceiling)",
    "teacher_corrupted": "teacher (corrupted)",
    "ours": "ours",
    "baseline": "baseline",
    "restored": "restored + teacher",
    "teacher_zeroshot": "teacher zero-shot",
    "zeroshot": "zero-shot",
}
LEGEND = {
    "teacher_clean": "frozen teacher + probe on clean images (ceiling).",
    "teacher_corrupted": "frozen teacher + probe fitted on corrupted images (naive).",
    "ours": "robust student + probe on corrupted images.",
    "baseline": "encoder + linear head fine-tuned end to end on corrupted images.",
    "restored": "classical restoration of the corrupted image (inpainting, Wiener filter), then "
                "the frozen teacher + probe (the pixel-space route).",
    "teacher_zeroshot": "frozen teacher's embeddings of corrupted images against the text "
                        "prompts, no probe, no labels.",
    "zeroshot": "zero-shot classifier from text prompts (\"A photo of a {class}\"), no probe.",
}

REQUIRED_FIELDS = ("experiment", "loss", "method", "dataset", "train_corruption",
                   "eval_corruption", "label_fraction", "top1_mean", "top1_std", "top1_stderr",
                   "draws")
OPTIONAL_FIELDS = ("probe", "backbone_label_fraction")
# What identifies a cell: two rows may not share all of these.
KEY_FIELDS = ("experiment", "method", "dataset", "train_corruption", "eval_corruption",
              "label_fraction")


def make_row(*, experiment: str, loss: str, method: str, dataset: str, train_corruption: str,
             eval_corruption: str, label_fraction: float, draws: Sequence[float],
             probe: Mapping | None = None,
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
