"""`train_and_evaluate(config, workdir)`: every stage of a run, in one process.

  1. teacher embeddings of clean images (and, with `train.teacher="cache"`, a disk cache),
  2. student training (`train.py`), per experiment,
  3. linear probes on frozen features of corrupted training images, per label fraction,
  4. the supervised baseline, per label fraction (`baseline.py`),
  5. evaluation over seeded corruption draws of the test split,
  6. the report (`report.py`): results.json, report.md, metrics.jsonl, plots.

Rows: `teacher_clean` (frozen teacher + probe on clean images: the ceiling),
`teacher_corrupted` (frozen teacher + probe fitted on corrupted images: the naive approach),
`ours` (robust student + probe) and `baseline` (fine-tuned end to end), when enabled; with
`eval.restored`, `restored` (the pixel-space route: classical restoration of A(x), see
`restoration.py`, then the frozen teacher + probe fitted on restored images); with
`eval.zeroshot` (a CLIP teacher, `zeroshot.TEACHERS`), `zeroshot` (the student's embeddings
against the text tower's class prompts, no probe and no labels: the same accuracy at every
label fraction) and `teacher_zeroshot` (the frozen teacher's, on the same corrupted images).
Hyperparameters of the probes are chosen on `data.val_split`, never on the test split. Every
row carries its `experiment` name and `loss`. The teacher rows depend only on the operators,
the splits and the probe settings: experiments that share them (a loss ablation) share one
computation.

Two optional evaluations reuse the trained encoders (paper Tables 2 and 3):
  * label shift, `eval.data.name`: the probes and baseline fitted on `data.*` are also scored
    on `eval.data.split` of that dataset, whose labels are in the training label space (same
    classes, same order); its rows carry `dataset=<eval.data.name>` (`<name>:<split>` when it
    is `data.name` itself).
  * transfer, `transfer.<key>` (an experiment may override `transfer` with a subset, `{}` for
    none): after training, `teacher_clean`, `teacher_corrupted` and `ours`
    probes are fitted on the key's dataset (corrupted by `train.corruption`, as on `data.*`) and
    scored on its test split; rows carry `dataset=<key>`. The baseline's transfer rows probe
    the features of its fine-tuned encoder without its head (the one fine-tuned with the
    largest label fraction), like the student's; they carry `backbone_label_fraction`.
"""

import dataclasses
import json
import os
import time

import jax
import numpy as np
from absl import logging
from etils import epath

from rrjax import (baseline, configuration, corruptions, data, evaluate, experiment, models,
                   probe, report, restoration, sharding, train)


class Timer:
  """Wall seconds per stage, summed over experiments."""

  def __init__(self):
    self.seconds = {}
    self._start = time.perf_counter()

  def add(self, stage: str, since: float) -> None:
    self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - since

  def summary(self) -> dict:
    return {**{k: round(v, 1) for k, v in self.seconds.items()},
            "total": round(time.perf_counter() - self._start, 1)}


def train_and_evaluate(config, workdir: str) -> dict:
  """Runs the stages of `config` into `workdir`; returns the results dict."""
  configuration.validate(config)
  configuration.claim_workdir(config, workdir)
  timer = Timer()
  mesh = sharding.make_mesh(config.mesh.data)
  logging.info("mesh: %d device(s) on the data axis", mesh.devices.size)

  t = time.perf_counter()
  sources, tasks = _load_sources(config)
  arrays = {k: data.load_arrays(s) for k, s in sources.items()}
  timer.add("data", t)

  t = time.perf_counter()
  teacher, teacher_vars = models.load_from_config(config.teacher, head="embed")
  features = lambda module, variables, split, op=None, key=None: probe.extract_features(
      module, variables, arrays[split][0], corruption=op, key=key,
      batch_size=config.eval.batch_size, mesh=mesh)
  clean = {k: features(teacher, teacher_vars, k) for k in arrays}
  timer.add("teacher_features", t)

  classifier = _zeroshot_classifier(config, sources["train"].class_names)
  rows, shared = [], {}
  for name, rc in experiment.expand(config):
    logging.info("experiment %s: train %s, eval %s", name, rc.train.corruption,
                 list(rc.eval.corruptions))
    rows += _run_experiment(rc, name, os.path.join(workdir, name), mesh=mesh, teacher=teacher,
                            teacher_vars=teacher_vars, sources=sources, arrays=arrays,
                            clean=clean, features=features, tasks=tasks, timer=timer,
                            classifier=classifier, shared=shared)

  metrics = _merge_metrics(workdir, [n for n, _ in experiment.expand(config)])
  results = report.write_results(workdir, config.to_dict(), rows, timer.summary())
  logging.info("wrote %s (%d rows, %d metrics lines)", os.path.join(workdir, "results.json"),
               len(rows), metrics)
  return results


@dataclasses.dataclass(frozen=True)
class _Task:
  """A dataset probes are fitted on: its splits' keys in `arrays`, and where they are scored.

  `prefix`: of its splits' keys ("train", "val", "test" for data.*); `tests`: `(dataset name
  for the rows, key of a test split in arrays)`, each in this task's label space.
  """
  prefix: str
  num_classes: int
  tests: tuple[tuple[str, str], ...]

  def key(self, split: str) -> str:
    return self.prefix + split


def _load_sources(config) -> tuple[dict, list[_Task]]:
  """The sources of every split the run reads, by key, and the probe tasks over them.

  Raises:
    ValueError: naming `config.eval.data.name` when its label space is not `data.name`'s.
  """
  def load(dc, split):
    return data.load(dc.name, split, data_dir=dc.data_dir or None,
                     image_size=dc.image_size or None)

  dc = config.data
  sources = {"train": load(dc, dc.train_split), "val": load(dc, dc.val_split),
             "test": load(dc, dc.test_split)}
  num_classes = sources["train"].num_classes
  tests = [(dc.name, "test")]
  shift = config.eval.get("data")
  if shift and shift.name:
    # The label-shift set is measured at the training data's resolution, like the test split.
    sources["shift"] = data.load(shift.name, shift.split, data_dir=shift.data_dir or None,
                                 image_size=dc.image_size or None)
    # The probes and the baseline score it with heads trained on data.*: label i must name
    # the same class in both.
    if sources["shift"].class_names != sources["train"].class_names:
      raise ValueError(
          f"config.eval.data.name: {shift.name!r} must have the classes of data.name "
          f"{dc.name!r}, in the same order; it has {sources['shift'].num_classes} classes "
          f"({', '.join(sources['shift'].class_names[:3])}, ...), data.name {num_classes} "
          f"({', '.join(sources['train'].class_names[:3])}, ...)")
    # Another split of the training dataset is told apart from its test split by the split.
    tests.append((shift.name if shift.name != dc.name else f"{shift.name}:{shift.split}",
                  "shift"))
  tasks = [_Task("", num_classes, tuple(tests))]
  for name, tc in sorted((config.get("transfer") or {}).items()):
    prefix = f"transfer/{name}/"
    for split in ("train", "val", "test"):
      sources[prefix + split] = load(tc, tc[f"{split}_split"])
    tasks.append(_Task(prefix, sources[prefix + "train"].num_classes,
                       ((name, prefix + "test"),)))
  return sources, tasks


def _zeroshot_classifier(config, class_names) -> np.ndarray | None:
  """The `[D, C]` text head of `eval.zeroshot`, from the teacher's own CLIP checkpoint."""
  if not config.eval.get("zeroshot", False):
    return None
  from rrjax import zeroshot  # Imports transformers' text tower: only when asked for.
  name = config.teacher.name
  if name not in zeroshot.TEACHERS:
    raise ValueError(f"config.eval.zeroshot needs a CLIP teacher with a text tower "
                     f"({', '.join(sorted(zeroshot.TEACHERS))}); teacher.name is {name!r}")
  if config.teacher.weights == "random":
    raise ValueError("config.eval.zeroshot needs the teacher's CLIP checkpoint (its text "
                     "tower); teacher.weights is 'random'")
  return zeroshot.classifier_for_teacher(
      name, config.teacher.weights, class_names, config.eval.zeroshot_template,
      tokenizer=config.eval.get("zeroshot_tokenizer") or None)


def _teacher_key(rc) -> str:
  """What the teacher rows of an experiment depend on, as a string."""
  fields = {"train": rc.train.corruption, "eval": list(rc.eval.corruptions),
            "draws": rc.eval.draws, "probe": rc.probe.to_dict(), "seed": rc.seed,
            "restored": bool(rc.eval.get("restored", False)), "transfer": sorted(rc.transfer),
            "stages": list(rc.stages)}
  return json.dumps(fields, sort_keys=True, default=str)


def _run_experiment(rc, name, rundir, *, mesh, teacher, teacher_vars, sources, arrays, clean,
                    features, tasks, timer, classifier, shared):
  epath.Path(rundir).mkdir(parents=True, exist_ok=True)  # Local or a bucket (gs://).
  # An experiment may drop transfer datasets (`"transfer": {}` in its overrides).
  tasks = [t for t in tasks if not t.prefix or t.prefix.split("/")[1] in rc.transfer]
  metrics_path = os.path.join(rundir, "metrics.jsonl")
  op_train = corruptions.build(rc.train.corruption)
  labels = {k: a[1] for k, a in arrays.items()}
  fractions = [float(f) for f in rc.probe.label_fractions]
  subsets = {(task.prefix, f): probe.label_fraction_indices(labels[task.key("train")], f,
                                                            task.num_classes, rc.seed)
             for task in tasks for f in fractions}
  base = {"experiment": name, "loss": rc.train.loss, "train_corruption": str(op_train)}
  rows = []

  def probe_rows(method, module, variables, task, wrap=lambda op: op, extra=None):
    """Probes on corrupted-train features at each fraction, evaluated over the eval draws.

    `wrap(op)`: the operator the encoder sees for operator `op` (the restored route wraps it).
    """
    t = time.perf_counter()
    train_key, val_key = task.key("train"), task.key("val")
    sub = {f: subsets[task.prefix, f] for f in fractions}
    keys = [jax.random.fold_in(jax.random.key(rc.seed), 1000 + d)
            for d in range(rc.probe.feature_draws if op_train.random else 1)]
    seen = wrap(op_train)
    train_feats = [features(module, variables, train_key, seen, k) for k in keys]
    hparams = _select(rc, train_feats, labels[train_key],
                      features(module, variables, val_key, seen, jax.random.key(rc.seed + 1)),
                      labels[val_key], task.num_classes)
    probes = {f: _fit(rc, [x[sub[f]] for x in train_feats], labels[train_key][sub[f]],
                      task.num_classes, hparams) for f in fractions}
    timer.add("probe", t)
    t = time.perf_counter()
    out = []
    for dataset, test in task.tests:
      for spec in rc.eval.corruptions:
        op = corruptions.build(spec)
        accs = {f: [] for f in fractions}
        for key in evaluate.draw_keys(rc.seed, str(op), rc.eval.draws if op.random else 1):
          test_feats = features(module, variables, test, wrap(op), key)
          for f in fractions:
            accs[f].append(probe.accuracy(probes[f], test_feats, labels[test]))
        out += [dict(base, dataset=dataset, method=method, eval_corruption=str(op),
                     label_fraction=f, probe=hparams, **(extra or {}),
                     **evaluate.summarize(accs[f]))
                for f in fractions]
    timer.add("evaluate", t)
    return out

  def zeroshot_rows(method, module, variables):
    """Top-1 of the text head on the encoder's embeddings of corrupted test images."""
    t = time.perf_counter()
    out = []
    for dataset, test in tasks[0].tests:
      for spec in rc.eval.corruptions:
        op = corruptions.build(spec)
        accs = [_top1(np.asarray(zeroshot_logits(features(module, variables, test, op, key),
                                                 classifier)), labels[test])
                for key in evaluate.draw_keys(rc.seed, str(op),
                                              rc.eval.draws if op.random else 1)]
        out += [dict(base, dataset=dataset, method=method, eval_corruption=str(op),
                     label_fraction=f, **evaluate.summarize(accs)) for f in fractions]
    timer.add("evaluate", t)
    return out

  def teacher_rows():
    """The ceiling (probe fitted and tested on clean images), the naive and restored routes."""
    out = []
    t = time.perf_counter()
    for task in tasks:
      train_key, val_key = task.key("train"), task.key("val")
      hparams = _select(rc, [clean[train_key]], labels[train_key], clean[val_key],
                        labels[val_key], task.num_classes)
      for f in fractions:
        sub = subsets[task.prefix, f]
        p = _fit(rc, [clean[train_key][sub]], labels[train_key][sub], task.num_classes, hparams)
        for dataset, test in task.tests:
          acc = probe.accuracy(p, clean[test], labels[test])
          out.append(dict(base, dataset=dataset, method="teacher_clean",
                          eval_corruption="identity", label_fraction=f, probe=hparams,
                          **evaluate.summarize([acc])))
    timer.add("probe", t)
    if "probe" in rc.stages:
      for task in tasks:
        out += probe_rows("teacher_corrupted", teacher, teacher_vars, task)
        if rc.eval.get("restored", False):
          out += probe_rows("restored", teacher, teacher_vars, task, wrap=restoration.Restored)
    if classifier is not None:
      out += zeroshot_rows("teacher_zeroshot", teacher, teacher_vars)
    return out

  if classifier is not None:
    from rrjax.zeroshot import zeroshot_logits  # pylint: disable=g-import-not-at-top

  teacher_key = _teacher_key(rc)
  if teacher_key in shared:
    # The same teacher rows as an earlier experiment's (e.g. a loss ablation): relabelled.
    rows += [dict(r, **base) for r in shared[teacher_key]]
  else:
    rows += teacher_rows()
    shared[teacher_key] = [dict(r) for r in rows]

  if "train" in rc.stages:
    student, student_vars = _student(rc, teacher, teacher_vars)
    t = time.perf_counter()
    student_vars = train.train_student(rc, rundir, mesh=mesh, teacher=teacher,
                                       teacher_vars=teacher_vars, student=student,
                                       student_vars=student_vars,
                                       train_source=sources["train"],
                                       metrics_path=metrics_path)
    timer.add("train", t)
    if "probe" in rc.stages:
      for task in tasks:
        rows += probe_rows("ours", student, student_vars, task)
    if classifier is not None:
      rows += zeroshot_rows("zeroshot", student, student_vars)

  if "baseline" in rc.stages and rc.baseline.enabled:
    task = tasks[0]  # The baseline's head is in data.*'s label space.
    backbone_vars = None
    for f in fractions:
      t = time.perf_counter()
      bdir = os.path.join(rundir, f"baseline_{f:g}")
      model, variables = baseline.train_baseline(
          rc, bdir, mesh=mesh, train_source=data.subset(sources["train"], subsets["", f]),
          num_classes=task.num_classes, metrics_path=os.path.join(bdir, "metrics.jsonl"))
      timer.add("baseline", t)
      if f == max(fractions):
        backbone_vars = variables
      t = time.perf_counter()
      for dataset, test in task.tests:
        for spec in rc.eval.corruptions:
          op = corruptions.build(spec)
          accs = [_top1(features(model, variables, test, op, key), labels[test])
                  for key in evaluate.draw_keys(rc.seed, str(op),
                                                rc.eval.draws if op.random else 1)]
          rows.append(dict(base, dataset=dataset, method="baseline", eval_corruption=str(op),
                           label_fraction=f, **evaluate.summarize(accs)))
      timer.add("evaluate", t)
    if "probe" in rc.stages and len(tasks) > 1:
      # Transfer: probes on the features of the encoder fine-tuned with the most labels.
      encoder = _backbone(model)
      for task in tasks[1:]:
        rows += probe_rows("baseline", encoder, backbone_vars, task,
                           extra={"backbone_label_fraction": max(fractions)})
  return rows


def _backbone(model):
  """The encoder of a `head="logits"` model: the same module and variables, `head="embed"`."""
  if getattr(model, "head", None) != "logits":
    raise TypeError(f"{type(model).__name__} has no `head` attribute set to 'logits'")
  return model.clone(head="embed")


def _student(rc, teacher, teacher_vars):
  """The student: the teacher's architecture and weights (paper), or another encoder."""
  if not rc.student.name or rc.student.name == rc.teacher.name:
    return teacher, jax.tree.map(np.array, teacher_vars)
  return models.load(rc.student.name, pretrained=False, head="embed", seed=rc.seed,
                     **({"resolution": rc.teacher.resolution} if rc.teacher.resolution else {}))


def _fit(rc, feats, labels, num_classes, hparams) -> probe.Probe:
  """A probe with `hparams`, trained for at least `probe.min_steps` optimiser steps.

  Epoch counts chosen on the full training set would give a 1%-label probe only a handful of
  updates; the floor keeps small label fractions from being under-trained.
  """
  steps_per_epoch = -(-len(labels) // rc.probe.batch_size)
  epochs = max(hparams["epochs"], -(-rc.probe.min_steps // steps_per_epoch))
  return probe.fit(feats, labels, num_classes, seed=rc.seed, batch_size=rc.probe.batch_size,
                   **dict(hparams, epochs=epochs))


def _select(rc, train_feats, train_labels, val_feats, val_labels, num_classes) -> dict:
  """Probe hyperparameters: the config's, or the best on the validation split."""
  default = {"lr": rc.probe.lr, "epochs": rc.probe.epochs, "weight_decay": rc.probe.weight_decay}
  if not rc.probe.select:
    return default
  grid = {"lr": [rc.probe.lr, 3 * rc.probe.lr, 10 * rc.probe.lr],
          "epochs": [rc.probe.epochs, 3 * rc.probe.epochs],
          "weight_decay": [rc.probe.weight_decay]}
  best, acc = probe.select(train_feats, train_labels, val_feats, val_labels, num_classes,
                           grid=grid, seed=rc.seed, batch_size=rc.probe.batch_size)
  logging.info("probe hyperparameters chosen on validation: %s (val top-1 %.2f)", best, acc)
  return best


def _top1(logits: np.ndarray, labels: np.ndarray) -> float:
  """Top-1 accuracy in percent of `[N, C]` logits."""
  return float(100 * np.mean(np.argmax(logits, -1) == labels))


def _merge_metrics(workdir: str, names: list[str]) -> int:
  """Concatenates the experiments' metrics lines into `<workdir>/metrics.jsonl`."""
  lines = []
  for name in names:
    # The student's log and its baselines' (`baseline_<fraction>/`): two levels, no
    # recursive glob (which buckets do not support).
    rundir = epath.Path(workdir, name)
    found = [*rundir.glob("metrics.jsonl"), *rundir.glob("*/metrics.jsonl")]
    for path in sorted(str(p) for p in found):
      for row in report.read_metrics(path):
        lines.append(json.dumps(dict(row, experiment=name), sort_keys=True))
  report.atomic_write(os.path.join(workdir, "metrics.jsonl"), "".join(l + "\n" for l in lines))
  return len(lines)
