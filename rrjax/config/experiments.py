"""Sub-runs of a config: `config.experiments.<name>` holds the fields that experiment sets.

    c.experiments.mask90 = schema.experiment("mask(0.9)")
    # = {"train": {"corruption": "mask(0.9)"}, "eval": {"corruptions": ("mask(0.9)",)}, ...}
    for name, sub in experiments.expand(c):   # sub: c with mask90's fields set
      ...

A config without experiments is one run named after its train corruption. `config.only`
("mask90,noise05") restricts a run to some of the experiments.

Overrides on the command line. An experiment's own field is overridden by its own path:

    --config.experiments.mask90.train.corruption=noise(0.3)

A field of the config itself (`--config.probe.lr=1e-2`) reaches every experiment that does not
set it. Where a chosen experiment sets that field itself, the command-line value would not reach
it, so `check_overrides` stops the run before any compute and names the flag to use instead.
"""

import re
import shlex
from collections.abc import Iterable, Mapping

import ml_collections

from rrjax import errors

_NAME = re.compile(r"[A-Za-z0-9_\-]+")
# The nested sections of a config (ConfigDict is no collections.abc.Mapping).
_SECTIONS = (Mapping, ml_collections.ConfigDict)


def expand(config: ml_collections.ConfigDict) -> list[tuple[str, ml_collections.ConfigDict]]:
  """`[(name, config with the experiment's fields set)]` of the chosen experiments, in order.

  Raises:
    rrjax.errors.UserError: an experiment name that is no directory name, a field the config
      does not have, or a name in `config.only` that no experiment has.
  """
  entries = config.get("experiments") or {}
  if not entries:
    return [(slug(config.train.corruption), config)]
  only = [n for n in config.get("only", "").split(",") if n]
  runs = []
  for name, entry in entries.items():
    if not _NAME.fullmatch(name):
      raise errors.UserError(f"config.experiments.{name}: name experiments by letters, digits, "
                             "'_' and '-'")
    sub = ml_collections.ConfigDict(config.to_dict())
    sub.experiments = {}
    for path, value in leaves(entry):
      _set(sub, path, value, f"config.experiments.{name}.{path}")
    runs.append((name, sub))
  unknown = sorted(set(only) - set(entries))
  if unknown:
    raise errors.UserError(f"config.only: no experiment named {unknown[0]!r}; names: "
                           f"{', '.join(entries)}")
  return [(n, sub) for n, sub in runs if not only or n in only]


def check_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> None:
  """Refuses a command-line override that a chosen experiment would silently replace.

  Args:
    config: the config, with the overrides applied.
    overrides: the dotted paths given on the command line (`--config.<path>=...`).

  Raises:
    rrjax.errors.UserError: one line naming the flag, the experiments that set the field
      themselves, and the flag that overrides it in each.
  """
  entries = config.get("experiments") or {}
  chosen = [name for name, _ in expand(config)] if entries else []
  for path in overrides:
    value = _format(_get(config, path))
    flag = _flag(path, value)
    if path == "experiments" or path.startswith("experiments."):
      name = path.split(".")[1] if "." in path else ""
      if name and name not in chosen:
        raise errors.UserError(f"{flag} would not reach any experiment that runs: config.only "
                               f"chooses {', '.join(chosen)}")
      continue
    setters = {name: field for name in chosen for field, _ in leaves(entries[name])
               if _overlaps(field, path)}
    if not setters:
      continue
    names = list(setters)
    fields = sorted(set(setters.values()))
    there = " ".join(_flag(f"experiments.{n}.{setters[n]}", value) for n in names)
    who = (f"experiment {names[0]} sets {fields[0]} itself; override it there:" if len(names) == 1
           else f"experiments {', '.join(names)} set {', '.join(fields)} themselves; override "
                "it in each:")
    raise errors.UserError(f"{flag} would not reach every experiment: {who} {there}")


def leaves(entry, prefix: str = "") -> list[tuple[str, object]]:
  """`[(dotted path, value)]` of the fields an experiment sets (an empty mapping is a value)."""
  out = []
  for key, value in entry.items():
    path = f"{prefix}{key}"
    if isinstance(value, _SECTIONS) and value:
      out += leaves(value, path + ".")
    else:
      out.append((path, value))
  return out


def slug(spec: str) -> str:
  """A directory name for a corruption spec: 'mask(0.5,0.95)' -> 'mask_0.5_0.95'."""
  return re.sub(r"[^A-Za-z0-9.]+", "_", spec).strip("_")


def _overlaps(a: str, b: str) -> bool:
  """Whether setting one of two dotted paths replaces (part of) the other."""
  return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _get(config, path: str):
  node = config
  for part in path.split("."):
    node = node[part]
  return node


def _format(value) -> str:
  return value if isinstance(value, str) else repr(value)


def _flag(path: str, value: str) -> str:
  """`--config.<path>=<value>`, quoted for a shell where it needs to be."""
  return shlex.quote(f"--config.{path}={value}")


def _set(config, path: str, value, where: str) -> None:
  *parents, leaf = path.split(".")
  node = config
  for p in parents:
    if not isinstance(node, _SECTIONS) or p not in node:
      raise errors.UserError(f"{where}: config has no field {path!r}")
    node = node[p]
  if not isinstance(node, _SECTIONS) or leaf not in node:
    raise errors.UserError(f"{where}: config has no field {path!r}")
  if isinstance(node[leaf], tuple) and isinstance(value, list):
    value = tuple(value)  # Sequence fields are tuples, so flags can override them.
  node[leaf] = value
