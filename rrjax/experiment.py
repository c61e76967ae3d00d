"""Sub-runs of a config: each entry of `config.experiments` overrides fields of the base config.

    c.experiments = [{"name": "mask90", "train.corruption": "mask(0.9)",
                      "eval.corruptions": ["mask(0.9)"]}, ...]

A config without experiments is one run named after its train corruption. `config.only`
("mask90,noise05") restricts a run to some of the experiments.
"""

import re

import ml_collections


def expand(config: ml_collections.ConfigDict) -> list[tuple[str, ml_collections.ConfigDict]]:
  """`[(name, config_with_overrides)]`; names are unique directory names."""
  entries = list(config.get("experiments") or [])
  if not entries:
    return [(slug(config.train.corruption), config)]
  only = [n for n in config.get("only", "").split(",") if n]
  runs, seen = [], set()
  for i, entry in enumerate(entries):
    entry = dict(entry)
    sub = ml_collections.ConfigDict(config.to_dict())
    sub.experiments = []
    name = entry.pop("name", None)
    for path, value in entry.items():
      _set(sub, path, value, f"experiments[{i}].{path}")
    name = name or slug(sub.train.corruption)
    if name in seen or not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
      raise ValueError(f"experiments[{i}].name {name!r} must be unique and use only letters, "
                       "digits, '_', '-' and '.'")
    seen.add(name)
    runs.append((name, sub))
  unknown = sorted(set(only) - seen)
  if unknown:
    raise ValueError(f"config.only: no experiment named {unknown[0]!r}; names: "
                     f"{', '.join(sorted(seen))}")
  return [(n, sub) for n, sub in runs if not only or n in only]


def slug(spec: str) -> str:
  """A directory name for a corruption spec: 'mask(0.5,0.95)' -> 'mask_0.5_0.95'."""
  return re.sub(r"[^A-Za-z0-9.]+", "_", spec).strip("_")


def _set(config, path: str, value, where: str) -> None:
  *parents, leaf = path.split(".")
  node = config
  for p in parents:
    if p not in node:
      raise ValueError(f"{where}: config has no field {p!r}")
    node = node[p]
  if leaf not in node:
    raise ValueError(f"{where}: config has no field {path!r}")
  if isinstance(node[leaf], tuple) and isinstance(value, list):
    value = tuple(value)  # Sequence fields are tuples, so flags can override them.
  node[leaf] = value
