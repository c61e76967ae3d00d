"""The labelled datasets of a run: the splits it reads, and the probe tasks over them.

    sources = tasks.hold_small(tasks.load_sources(config), max_bytes)  # "train", "val", ...
    splits = {k: tasks.Split(s, s.labels(), teacher.features(s)) for k, s in sources.items()}
    run_tasks = tasks.build(config, sources, splits)   # data.* first, then transfer datasets

A task is a labelled dataset that probes are fitted on (its train and val splits) and the
splits they are scored on, all in one label space: `data.*` is scored on its test split and the
label-shift set (`eval.data`), each transfer dataset (`config.transfer.<key>`) on its own test
split.
"""

import dataclasses

import numpy as np

from rrjax import data, errors


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """A split: its images (a source, streamed by every stage that reads them), labels int32
  `[N]`, and the frozen teacher's features of the clean images `[N, D]`."""
  source: data.Source
  labels: np.ndarray
  clean: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
  """A labelled dataset that probes are fitted on, and the splits they are scored on.

  `name`: None for `data.*`, else its key in `config.transfer`; `tests`: `(dataset name in the
  rows, split)`, each in this task's label space.
  """
  name: str | None
  num_classes: int
  train: Split
  val: Split
  tests: tuple[tuple[str, Split], ...]


def load_split(section, split: str) -> data.Source:
  """Split `split` of the dataset of a config section with `name`, `data_dir`, `image_size`
  (`config.data`)."""
  return data.load(section.name, split, data_dir=section.data_dir or None,
                   image_size=section.image_size or None)


def load_sources(config) -> dict[str, data.Source]:
  """The source of every split the run reads: "train", "val", "test", "shift" (label shift),
  "transfer/<name>/<split>".

  Raises:
    rrjax.errors.UserError: naming `config.eval.data.name` when its label space is not
      `data.name`'s.
  """
  dc = config.data
  sources = {"train": load_split(dc, dc.train_split), "val": load_split(dc, dc.val_split),
             "test": load_split(dc, dc.test_split)}
  shift = config.eval.get("data")
  if shift and shift.name:
    # The label-shift set is measured at the training data's resolution, like the test split.
    sources["shift"] = data.load(shift.name, shift.split, data_dir=shift.data_dir or None,
                                 image_size=dc.image_size or None)
    # The probes and the baseline score it with heads trained on data.*: label i must name
    # the same class in both.
    if sources["shift"].class_names != sources["train"].class_names:
      names = lambda s: f"{s.num_classes} classes ({', '.join(s.class_names[:3])}, ...)"
      raise errors.UserError(f"config.eval.data.name: {shift.name!r} must have the classes of "
                             f"data.name {dc.name!r}, in the same order; it has "
                             f"{names(sources['shift'])}, data.name {names(sources['train'])}")
  # A transfer dataset is measured (corrupted) at the run's measurement size unless its entry
  # names its own: CIFAR's 32 px images are resized to ImageNet's 224 before the operator acts,
  # as in the paper, not corrupted at 32 px and upsampled after.
  measurement = sources["train"].image_size
  for name, tc in sorted((config.get("transfer") or {}).items()):
    for split in ("train", "val", "test"):
      sources[f"transfer/{name}/{split}"] = data.load(
          tc.name, tc[f"{split}_split"], data_dir=tc.data_dir or None,
          image_size=tc.image_size or measurement)
  return sources


def hold_small(sources: dict[str, data.Source], max_bytes: int) -> dict[str, data.Source]:
  """The sources, each held in memory by `data.in_memory` while the decoded bytes of those held
  stay within `max_bytes`, in the order given; the others stream from their files."""
  held, out = 0, {}
  for key, source in sources.items():
    out[key] = data.in_memory(source, max_bytes=max_bytes - held)
    if out[key] is not source:
      held += data.source.decoded_bytes(source)
  return out


def build(config, sources, splits) -> tuple[Task, ...]:
  """The probe tasks of the run: data.* (scored on its test split and the label-shift set),
  then each transfer dataset (scored on its own test split)."""
  tests = [(config.data.name, splits["test"])]
  if "shift" in splits:
    shift = config.eval.data
    # Another split of the training dataset is told apart from its test split by the split.
    tests.append((shift.name if shift.name != config.data.name else
                  f"{shift.name}:{shift.split}", splits["shift"]))
  tasks = [Task(None, sources["train"].num_classes, splits["train"], splits["val"],
                tuple(tests))]
  for name in sorted(config.get("transfer") or {}):
    prefix = f"transfer/{name}/"
    tasks.append(Task(name, sources[prefix + "train"].num_classes, splits[prefix + "train"],
                      splits[prefix + "val"], ((name, splits[prefix + "test"]),)))
  return tuple(tasks)
