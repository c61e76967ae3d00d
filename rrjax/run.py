"""`train_and_evaluate(config, workdir)`: the whole run, top to bottom, in one process.

  1. the config is checked; the data sources, the teacher's weights and the zero-shot head are
     read (a bad file stops the run before the workdir is touched); the workdir is claimed
     (`rrjax.config`);
  2. data: every split the run reads, as a source streamed in batches (small ones read once into
     memory, `data.cache_mb`); the frozen teacher's features of them, clean;
  3. per experiment (`config.experiments`):
     a. the teacher rows: the clean ceiling, the naive and the restored routes, zero-shot;
     b. the student: trained (`rrjax.training.student`), then probed;
     c. the baseline: fine-tuned per label fraction (`rrjax.training.baseline`), then scored;
  4. the outputs (`rrjax.outputs`): metrics.jsonl, results.json, report.md, plots.

Every row is measured the same way (`rrjax.evaluation.scoring.accuracy_over_draws`): an
encoder's features of the test images under seeded corruption draws, a head per label fraction
(a probe, the baseline's own classifier, a zero-shot text head), top-1 in percent, and one row
per cell (`rrjax.outputs.rows.make_row`).

The rows (`rrjax.outputs.rows.LEGEND` says what each method is): `teacher_clean`,
`teacher_corrupted`, `ours`, `baseline`, and with `eval.restored` / `eval.zeroshot` (a CLIP
teacher) `restored`, `zeroshot` and `teacher_zeroshot`. Probe hyperparameters are chosen on
`data.val_split`, never on the test split. Experiments whose teacher rows would be the same (a
loss ablation) share one computation of them.

Two optional evaluations reuse the trained encoders (paper Tables 2 and 3):
  * label shift, `eval.data.name`: the probes and baseline fitted on `data.*` are also scored
    on `eval.data.split` of that dataset, whose labels are in the training label space (same
    classes, same order); its rows carry `dataset=<eval.data.name>` (`<name>:<split>` when it
    is `data.name` itself).
  * transfer, `transfer.<key>`, in the stage "transfer": `teacher_clean`, `teacher_corrupted`
    and `ours` probes are fitted on the key's dataset (corrupted by `train.corruption`, as on
    `data.*`) and scored on its test split; rows carry `dataset=<key>`. The baseline's transfer
    rows probe the features of its fine-tuned encoder without its head (the one fine-tuned with
    the largest label fraction), like the student's; they carry `backbone_label_fraction`.
"""

import contextlib
import copy
import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable, Mapping

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from rrjax import corruptions, data, errors, models
from rrjax.config import experiments, inputs, validate, workdir as workdir_lib
from rrjax.evaluation import probe, restoration, scoring
from rrjax.evaluation import tasks as tasks_lib
from rrjax.evaluation.features import Draws, Encoder
from rrjax.io import metrics
from rrjax.outputs import products, report
from rrjax.outputs import rows as rows_lib
from rrjax.parallel import multiprocess, preemption, sharding
from rrjax.training import baseline, student

CLEAN = corruptions.build("identity")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       overrides: tuple[str, ...] = ()) -> list[dict]:
  """Runs every stage of `config` into `workdir`; returns the results rows.

  `overrides`: the fields given on the command line (`--config.<path>`), which
  `rrjax.config.validate` checks against the experiments before anything runs.
  """
  workdir_lib.check_same_config(config)  # Every process was given process 0's config.
  validate.validate(config, overrides)  # As the user wrote it: errors quote their values.
  config = expand_grids(config)
  # SIGTERM at any stage stops every process at one point (`rrjax.parallel.preemption`).
  with preemption.watch():
    if not config.get("seeds"):
      return _train_and_evaluate(config, workdir)
    return _over_seeds(config, workdir)


def expand_grids(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of `config` whose `eval.corruptions` (its own and each experiment's) have the
  ImageNet-C grid tokens (`imagenet_c`, `imagenet_c(s)`) replaced by their specs
  (`rrjax.corruptions.host_ops.expand`); `config` itself when it has none."""
  sections = [config] + list((config.get("experiments") or {}).values())
  if not any(corruptions.host_ops.is_grid(spec) for section in sections
             for spec in (section.get("eval") or {}).get("corruptions", ())):
    return config
  order = list(config.get("experiments") or {})
  config = copy.deepcopy(config)
  if order:  # deepcopy (as to_dict()) sorts a ConfigDict's keys: keep the run order.
    ordered = ml_collections.ConfigDict(sort_keys=False)
    for name in order:
      ordered[name] = config.experiments[name]
    config.experiments = ordered
  for section in [config] + list((config.get("experiments") or {}).values()):
    if "corruptions" in (section.get("eval") or {}):
      section.eval.corruptions = corruptions.host_ops.expand(section.eval.corruptions)
  return config


def _over_seeds(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  """One whole run per training seed in `<workdir>/seed_<s>`, then the rows aggregated over
  the seeds (`rows.aggregate_seeds`) in `<workdir>`. A seed whose run finished (its
  results.json, of the same config) is read back, so an interrupted sweep resumes at the seed
  it stopped in, and that seed's run resumes from its checkpoints."""
  workdir_lib.claim_workdir(config, workdir)
  per_seed, timing = {}, {}
  for seed in config.seeds:
    seed_config = config.copy_and_resolve_references()
    seed_config.seed, seed_config.seeds = int(seed), ()
    seed_dir = os.path.join(workdir, f"seed_{seed}")
    # Taken as finished only when every process sees it so (each would skip it alone).
    if multiprocess.all_true(workdir_lib.finished(seed_config, seed_dir)):
      logging.info("seed %d: finished earlier, reading %s/results.json", seed, seed_dir)
      saved = json.loads((epath.Path(seed_dir) / "results.json").read_text())
      per_seed[seed], seconds = saved["rows"], saved["timing"].get("total", 0.0)
    else:
      logging.info("seed %d of %s", seed, list(config.seeds))
      start = time.perf_counter()
      per_seed[seed] = _train_and_evaluate(seed_config, seed_dir)
      seconds = round(time.perf_counter() - start, 1)
    timing[f"seed_{seed}"] = seconds
  rows = rows_lib.aggregate_seeds(per_seed)
  report.write_results(workdir, config.to_dict(), rows, timing)
  metrics.write_accuracy_events(workdir, rows)
  logging.info("wrote %s (%d cells over seeds %s)", os.path.join(workdir, "results.json"),
               len(rows), list(config.seeds))
  return rows


def _train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> list[dict]:
  timer = Timer()
  # What the user's files give (the teacher's weights, the datasets, the zero-shot head from the
  # teacher's checkpoint and tokenizer) is read before the workdir is touched: a bad file
  # leaves no trace of the run.
  # Every process agrees on the outcome (a file only some of them can read would otherwise
  # stop those and leave the others waiting at the next collective).
  teacher_model, sources, classifier = multiprocess.agreed(lambda: _read_inputs(config, timer))
  workdir_lib.claim_workdir(config, workdir)
  mesh = sharding.make_mesh(config.mesh.data)
  logging.info("mesh: %d device(s) on the data axis", mesh.devices.size)

  with timer.stage("data"):
    sources = tasks_lib.hold_small(sources, config.data.cache_mb << 20)
  with timer.stage("teacher_features"):
    teacher = _encoder(config, *teacher_model, mesh)
    splits = {k: tasks_lib.Split(s, s.labels(), teacher.features(s)) for k, s in sources.items()}
  run = Run(mesh=mesh, teacher=teacher, train_source=sources["train"],
            tasks=tasks_lib.build(config, sources, splits),
            classifier=classifier)

  results, shared = [], {}
  for name, rc in experiments.expand(config):
    logging.info("experiment %s: train %s, eval %s", name, rc.train.corruption,
                 list(rc.eval.corruptions))
    preemption.check(f"experiment {name}")
    exp = _experiment(run, rc, name, workdir)
    key = _teacher_key(exp)
    if key not in shared:
      shared[key] = teacher_rows(run, exp, timer)
    # An earlier experiment's teacher rows (e.g. a loss ablation's) are this one's: relabelled.
    results += [dict(r, experiment=name, loss=rc.train.loss) for r in shared[key]]
    results += student_rows(run, exp, timer)
    results += baseline_rows(run, exp, timer)

  count = metrics.merge_runs(workdir, [n for n, _ in experiments.expand(config)])
  report.write_results(workdir, config.to_dict(), results, timer.summary())
  metrics.write_accuracy_events(workdir, results)
  logging.info("wrote %s (%d rows, %d metrics lines)", os.path.join(workdir, "results.json"),
               len(results), count)
  return results


# ----------------------------------------------------------------------------- the context


@dataclasses.dataclass(frozen=True, eq=False)
class Run:
  """What every experiment of a run reads: loaded once, never changed."""
  mesh: jax.sharding.Mesh
  teacher: Encoder
  train_source: data.Source
  tasks: tuple[tasks_lib.Task, ...]  # data.* first, then the transfer datasets by name
  classifier: np.ndarray | None     # The `[D, C]` zero-shot head of `eval.zeroshot`.


@dataclasses.dataclass(frozen=True, eq=False)
class Experiment:
  """One sub-run: its config, its directory, its tasks and labelled subsets."""
  name: str
  config: ml_collections.ConfigDict
  rundir: str
  tasks: tuple[tasks_lib.Task, ...]  # data.* first, then the transfer datasets it probes
  fractions: tuple[float, ...]
  subsets: Mapping[tuple[str | None, float], np.ndarray]  # (task, fraction) -> indices
  op_train: corruptions.Operator
  ops: tuple[corruptions.Operator, ...]  # The eval corruptions.


class Timer:
  """Wall seconds per stage, summed over experiments."""

  def __init__(self):
    self.seconds = {}
    self._start = time.perf_counter()

  @contextlib.contextmanager
  def stage(self, name: str):
    start = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

  def summary(self) -> dict:
    return {**{k: round(v, 1) for k, v in self.seconds.items()},
            "total": round(time.perf_counter() - self._start, 1)}


# ----------------------------------------------------------------------------- the stages


def teacher_rows(run: Run, exp: Experiment, timer: Timer) -> list[dict]:
  """The ceiling (probe fitted and tested on clean images), the naive and restored routes, and
  the teacher's zero-shot rows."""
  rc = exp.config
  out = []
  clean_heads, clean_hparams = {}, {}
  with timer.stage("probe"):
    for task in exp.tasks:
      hparams = _probe_hparams(rc, [task.train.clean], task.train.labels,
                               lambda task=task: task.val.clean, task.val.labels,
                               task.num_classes)
      for f in exp.fractions:
        idx = exp.subsets[task.name, f]
        fitted = _fit(rc, [task.train.clean[idx]], task.train.labels[idx], task.num_classes,
                      hparams)
        clean_heads[task.name, f] = functools.partial(probe.logits, fitted)
        clean_hparams[task.name] = hparams
        out += scored_rows(exp, "teacher_clean", task.tests, (CLEAN,), _clean_features,
                           {f: clean_heads[task.name, f]}, probe=hparams)
  if "probe" in rc.stages:
    for task in exp.tasks:
      # The paper's naive route: the ceiling's probes, fitted on clean images, applied to
      # corrupted ones.
      with timer.stage("evaluate"):
        out += scored_rows(exp, "clean_probe_on_corrupted", task.tests, exp.ops,
                           _features_of(run.teacher),
                           {f: clean_heads[task.name, f] for f in exp.fractions},
                           probe=clean_hparams[task.name])
      out += probe_rows(exp, "teacher_corrupted", run.teacher, task, timer)
      if rc.eval.get("restored", False):
        out += probe_rows(exp, "restored", run.teacher, task, timer,
                          route=restoration.Restored)
  if run.classifier is not None:
    out += zeroshot_rows(run, exp, "teacher_zeroshot", run.teacher, timer)
  return out


def student_rows(run: Run, exp: Experiment, timer: Timer) -> list[dict]:
  """Trains the robust student, then its probe (and zero-shot) rows."""
  rc = exp.config
  if "train" not in rc.stages:
    return []
  module, variables = student.student_model(rc, run.teacher.module, run.teacher.variables)
  with timer.stage("train"):
    variables = student.train_student(rc, exp.rundir, mesh=run.mesh,
                                      teacher=run.teacher.module,
                                      teacher_vars=run.teacher.variables, student=module,
                                      student_vars=variables, train_source=run.train_source)
  name, kwargs = student.architecture(rc)
  products.save_student(exp.rundir, variables, name=name, kwargs=kwargs,
                        measurement_size=run.train_source.image_size)
  encoder = _encoder(rc, module, variables, run.mesh)
  out = []
  if "probe" in rc.stages:
    # data.*'s probes are the exported encoder's classifiers (`rrjax.outputs.products`).
    task, *transfers = exp.tasks
    hparams, fitted = fit_probes(exp, encoder, task, timer)
    class_names = run.train_source.class_names
    for f, p in fitted.items():
      products.save_probe(exp.rundir, f, p, class_names, hparams)
    dataset, test = task.tests[0]
    with timer.stage("evaluate"):
      products.save_examples(exp.rundir, encoder, test, exp.ops, fitted, class_names,
                             seed=rc.seed, dataset=dataset)
      out += scored_rows(exp, "ours", task.tests, exp.ops, _features_of(encoder),
                         {f: functools.partial(probe.logits, p) for f, p in fitted.items()},
                         probe=hparams)
    for transfer in transfers:
      out += probe_rows(exp, "ours", encoder, transfer, timer)
  if run.classifier is not None:
    out += zeroshot_rows(run, exp, "zeroshot", encoder, timer)
  return out


def baseline_rows(run: Run, exp: Experiment, timer: Timer) -> list[dict]:
  """Fine-tunes the baseline per label fraction and scores its classifier; on transfer
  datasets, probes its encoder fine-tuned with the most labels."""
  rc = exp.config
  if "baseline" not in rc.stages:
    return []
  task = exp.tasks[0]  # The baseline's head is in data.*'s label space.
  out, most = [], max(exp.fractions)
  for method, encoder in baseline.rows(rc):
    backbone = None
    for f in exp.fractions:
      with timer.stage("baseline"):
        model, variables, chosen = baseline.train_baseline(
            rc, os.path.join(exp.rundir, f"{method}_{f:g}"), mesh=run.mesh,
            train_source=data.subset(run.train_source, exp.subsets[task.name, f]),
            val_source=task.val.source, num_classes=task.num_classes, encoder=encoder)
      if f == most:
        backbone = _encoder(rc, baseline.backbone(model), variables, run.mesh)
      fine_tuned = _encoder(rc, model, variables, run.mesh)
      with timer.stage("evaluate"):
        # Its features are its classifier's logits.
        out += scored_rows(exp, method, task.tests, exp.ops, _features_of(fine_tuned),
                           {f: lambda logits: logits}, baseline=chosen)
    if "probe" in rc.stages:
      for transfer in exp.tasks[1:]:
        out += probe_rows(exp, method, backbone, transfer, timer,
                          backbone_label_fraction=most)
  return out


def probe_rows(exp: Experiment, method: str, encoder: Encoder, task: tasks_lib.Task,
               timer: Timer, *, route: Callable | None = None,
               backbone_label_fraction: float | None = None) -> list[dict]:
  """Probes on the encoder's features of corrupted training images, one per label fraction,
  scored over the eval draws of every eval corruption on every test split of `task`.

  `route(A)`: what the encoder sees for operator A (the restored route wraps it); default A.
  """
  hparams, fitted = fit_probes(exp, encoder, task, timer, route=route)
  heads = {f: functools.partial(probe.logits, p) for f, p in fitted.items()}
  with timer.stage("evaluate"):
    return scored_rows(exp, method, task.tests, exp.ops, _features_of(encoder, route), heads,
                       probe=hparams, backbone_label_fraction=backbone_label_fraction)


def fit_probes(exp: Experiment, encoder: Encoder, task: tasks_lib.Task, timer: Timer, *,
               route: Callable | None = None) -> tuple[dict, dict[float, probe.Probe]]:
  """`(hyperparameters, label fraction -> probe)`: probes on the encoder's features of
  corrupted training images of `task` (see `probe_rows`)."""
  rc = exp.config
  seen = route(exp.op_train) if route else exp.op_train
  with timer.stage("probe"):
    # A fresh draw of the training features every epoch, each computed once for every fit.
    train = Draws(encoder, task.train.source, seen, jax.random.fold_in(jax.random.key(rc.seed),
                                                                       1000))
    val = functools.partial(encoder.features, task.val.source, seen, jax.random.key(rc.seed + 1))
    hparams = _probe_hparams(rc, train, task.train.labels, val, task.val.labels,
                             task.num_classes)
    fitted = {}
    for f in exp.fractions:
      idx = exp.subsets[task.name, f]
      fitted[f] = _fit(rc, train.subset(idx), task.train.labels[idx], task.num_classes, hparams)
  return hparams, fitted


def zeroshot_rows(run: Run, exp: Experiment, method: str, encoder: Encoder,
                  timer: Timer) -> list[dict]:
  """The text head on the encoder's embeddings of corrupted test images: no labels, so the
  same accuracy at every label fraction."""
  from rrjax.evaluation import zeroshot  # Imports transformers: only when asked for.
  head = functools.partial(zeroshot.zeroshot_logits, classifier=run.classifier)
  with timer.stage("evaluate"):
    return scored_rows(exp, method, exp.tasks[0].tests, exp.ops, _features_of(encoder),
                       {f: head for f in exp.fractions})


def scored_rows(exp: Experiment, method: str, tests, ops, features: Callable,
                heads: Mapping[float, Callable], **extra) -> list[dict]:
  """The rows of `method`: per test split and operator, the top-1 of each head (keyed by
  label fraction) over the operator's eval draws (`scoring.accuracy_over_draws`).

  Args:
    tests: `(dataset name in the rows, tasks.Split)` pairs.
    ops: the eval operators.
    features: `(split, op) -> (draw key -> features [N, D] of the split under op)`.
    heads: label fraction -> (features -> logits).
    **extra: optional row fields (`probe`, `baseline`, `backbone_label_fraction`).
  """
  out = []
  for dataset, test in tests:
    for op in ops:
      accs = scoring.accuracy_over_draws(features(test, op), heads, test.labels, op,
                                         seed=exp.config.seed, draws=exp.config.eval.draws)
      out += [_row(exp, method, dataset, op, f, accs[f], **extra) for f in heads]
  return out


def _features_of(encoder: Encoder, route: Callable | None = None) -> Callable:
  """`(split, op) -> (key -> features)`: the encoder on the split corrupted by `route(op)`."""
  return lambda test, op: functools.partial(encoder.features, test.source,
                                            route(op) if route else op)


def _clean_features(test, op):
  """The frozen teacher's features of the clean split, computed once for the run."""
  del op  # Identity.
  return lambda key: test.clean


# ----------------------------------------------------------------------------- helpers


def _encoder(config, module, variables, mesh) -> Encoder:
  """A frozen encoder as the run's evaluation batches it (`eval.batch_size`, the mesh, the
  input pipeline's workers)."""
  return Encoder(module, variables, batch_size=config.eval.batch_size, mesh=mesh,
                 num_workers=config.data.num_workers)


def _check_student_batches(config, train_source: data.Source) -> None:
  """The student trains on whole batches of the training split: refuses a batch larger than
  the split now, before the hours of earlier stages."""
  for name, rc in experiments.expand(config):
    if "train" in rc.stages and rc.train.batch_size > len(train_source):
      where = f" (experiment {name})" if rc is not config else ""
      raise errors.UserError(
          f"config.train.batch_size{where}: {rc.train.batch_size} exceeds the "
          f"{len(train_source)} images of data.train_split {rc.data.train_split!r}")


def _read_inputs(config, timer: "Timer") -> tuple:
  """`(teacher (module, variables), data sources, zero-shot head or None)` of `config`."""
  inputs.check(config)  # Every missing input at once, before any is prepared or read.
  with timer.stage("data"):
    sources = tasks_lib.load_sources(config)
    _check_student_batches(config, sources["train"])  # before any weights are read
  teacher_model = models.load_from_config(config.teacher, head="embed")
  return teacher_model, sources, _zeroshot_classifier(config, sources["train"].class_names)


def _zeroshot_classifier(config, class_names) -> np.ndarray | None:
  """The `[D, C]` text head of `eval.zeroshot`, from the teacher's own CLIP checkpoint."""
  if not config.eval.get("zeroshot", False):
    return None
  from rrjax.evaluation import zeroshot  # Imports transformers: only when asked for.
  return zeroshot.classifier_for_teacher(
      config.teacher.name, config.teacher.weights, class_names, config.eval.zeroshot_template,
      tokenizer=config.eval.get("zeroshot_tokenizer") or None)


def _experiment(run: Run, rc, name: str, workdir: str) -> Experiment:
  rundir = os.path.join(workdir, name)
  epath.Path(rundir).mkdir(parents=True, exist_ok=True)  # Local or a bucket (gs://).
  transfer = "transfer" in rc.stages
  chosen = tuple(t for t in run.tasks if t.name is None or (transfer and t.name in rc.transfer))
  fractions = tuple(float(f) for f in rc.probe.label_fractions)
  subsets = {(t.name, f): probe.label_fraction_indices(t.train.labels, f, t.num_classes,
                                                       rc.seed)
             for t in chosen for f in fractions}
  return Experiment(name, rc, rundir, chosen, fractions, subsets,
                    corruptions.build(rc.train.corruption),
                    tuple(map(corruptions.build, rc.eval.corruptions)))


def _teacher_key(exp: Experiment) -> str:
  """What the teacher rows of an experiment depend on, as a string."""
  rc = exp.config
  fields = {"train": rc.train.corruption, "eval": list(rc.eval.corruptions),
            "draws": rc.eval.draws, "batch": rc.eval.batch_size, "probe": rc.probe.to_dict(),
            "seed": rc.seed, "restored": bool(rc.eval.get("restored", False)),
            "tasks": [t.name or "" for t in exp.tasks], "stages": list(rc.stages)}
  return json.dumps(fields, sort_keys=True, default=str)


def _row(exp: Experiment, method: str, dataset: str, op, fraction: float, draws,
         **extra) -> dict:
  return rows_lib.make_row(experiment=exp.name, loss=exp.config.train.loss, method=method,
                           dataset=dataset, train_corruption=str(exp.op_train),
                           eval_corruption=str(op), label_fraction=fraction, draws=draws,
                           **extra)


def _fit(rc, feats, labels, num_classes, hparams) -> probe.Probe:
  """A probe with `hparams`, trained for at least `probe.min_steps` optimiser steps."""
  preemption.check("the probes")
  return probe.fit(feats, labels, num_classes, seed=rc.seed, batch_size=rc.probe.batch_size,
                   min_steps=rc.probe.min_steps, **hparams)


def _probe_hparams(rc, train_feats, train_labels, val_feats: Callable[[], np.ndarray],
                   val_labels, num_classes) -> dict:
  """Probe hyperparameters: the config's, or the best of a grid around them on the validation
  split (`val_feats()` is computed only then)."""
  if not rc.probe.select:
    return probe.configured(rc.probe)
  grid = {"lr": [rc.probe.lr, 3 * rc.probe.lr, 10 * rc.probe.lr],
          "epochs": [rc.probe.epochs, 3 * rc.probe.epochs],
          "weight_decay": [rc.probe.weight_decay]}
  best, acc = probe.select(train_feats, train_labels, val_feats(), val_labels, num_classes,
                           grid=grid, seed=rc.seed, batch_size=rc.probe.batch_size)
  logging.info("probe hyperparameters chosen on validation: %s (val top-1 %.2f)", best, acc)
  return best
