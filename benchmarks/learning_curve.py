"""The student's learning curve on the embedded default: probe accuracy against student steps.

    python benchmarks/learning_curve.py [--ops 'mask(0.9),noise(0.5)'
        --steps 250,500,1000,2000,4000 --seed 0 --workdir runs/learning_curve
        --out docs/learning_curve]

One student per operator is trained once (`rrjax.training.student.train_student`, the embedded
default's config) and stopped at each of `--steps`: training to N resumes the checkpoint of the
previous point, so each point is exactly the student of a run with `train.steps = N` (a constant
learning rate, the same data order and keys). At each point the student's probes at the
embedded label fractions (1%, 10%, 100%) are scored on the validation split (`data.val_split`,
never the test split: this curve chooses the demo's budget), with fixed probe hyperparameters
(lr 1e-3, 10 epochs, at least 100 steps, a fresh corruption draw every epoch) and one draw of
the validation images. The frozen teacher's probes (clean ceiling and corrupted) are scored the
same way, once. Writes `<out>.json` (every point, appended as it is measured: an interrupted
run resumes where it stopped) and `<out>.png`.
"""

import argparse
import json
import os
import time

import jax
from absl import flags, logging

from rrjax import corruptions, models
from rrjax.config import embedded
from rrjax.evaluation import probe, scoring, tasks
from rrjax.evaluation.features import Draws, Encoder
from rrjax.parallel import sharding
from rrjax.training import student

PROBE = {"lr": 1e-3, "epochs": 10, "weight_decay": 0.0}


def _val_top1(encoder, sources, op, fractions, seed) -> dict:
  """Validation top-1 of probes fitted on the encoder's features of the corrupted training
  split, one per label fraction."""
  labels, num_classes = sources["train"].labels(), len(sources["train"].class_names)
  train = Draws(encoder, sources["train"], op, jax.random.fold_in(jax.random.key(seed), 1000))
  val = encoder.features(sources["val"], op, jax.random.key(seed + 1))
  out = {}
  for f in fractions:
    idx = probe.label_fraction_indices(labels, f, num_classes, seed)
    fitted = probe.fit(train.subset(idx), labels[idx], num_classes, seed=seed, min_steps=100,
                       batch_size=256, **PROBE)
    out[str(f)] = scoring.top1(probe.logits(fitted, val), sources["val"].labels())
  return out


def _plot(points: list[dict], path: str) -> None:
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  ops = list(dict.fromkeys(p["op"] for p in points))
  fig = Figure(figsize=(5 * len(ops), 3.8), layout="constrained")
  axes = fig.subplots(1, len(ops), squeeze=False)[0]
  for ax, op in zip(axes, ops):
    mine = [p for p in points if p["op"] == op]
    curve = sorted((p for p in mine if p["method"] == "ours"), key=lambda p: p["steps"])
    ref = {p["method"]: p for p in mine if p["method"] != "ours"}
    for i, f in enumerate(curve[0]["val_top1"] if curve else []):
      color = f"C{i}"
      ax.plot([p["steps"] for p in curve], [p["val_top1"][f] for p in curve], "o-",
              color=color, label=f"ours, {float(f):.0%} labels")
      if "teacher_corrupted" in ref:
        ax.axhline(ref["teacher_corrupted"]["val_top1"][f], color=color, ls=":", lw=1)
    if "teacher_clean" in ref:
      ax.axhline(max(ref["teacher_clean"]["val_top1"].values()), color="k", ls="--", lw=1,
                 label="clean ceiling (100% labels)")
    ax.set_xscale("log")
    steps = [p["steps"] for p in curve]
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.minorticks_off()
    ax.set_xlabel("student steps (batch 64)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(f"{op} (dotted: frozen teacher, probe on corrupted)", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
  fig.savefig(path, dpi=110)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--ops", default="mask(0.9),noise(0.5)")
  parser.add_argument("--steps", default="250,500,1000,2000,4000")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workdir", default="runs/learning_curve")
  parser.add_argument("--out", default="docs/learning_curve")
  args = parser.parse_args()
  flags.FLAGS.mark_as_parsed()
  logging.set_verbosity(logging.INFO)
  steps = sorted(int(s) for s in args.steps.split(","))
  ops = [o.strip() for o in args.ops.split("),") if o.strip()]
  ops = [o if o.endswith(")") else o + ")" for o in ops]

  out_json = args.out + ".json"
  points = json.load(open(out_json))["points"] if os.path.exists(out_json) else []
  done = {(p["op"], p["method"], p["steps"]) for p in points}

  def record(point):
    points.append(point)
    os.makedirs(os.path.dirname(out_json) or ".", exist_ok=True)
    with open(out_json + ".tmp", "w") as f:
      json.dump({"seed": args.seed, "probe": PROBE, "setting": setting, "points": points}, f,
                indent=1)
    os.replace(out_json + ".tmp", out_json)
    _plot(points, args.out + ".png")
    print(json.dumps(point), flush=True)

  mesh = sharding.make_mesh()
  base = embedded.base()
  # What the points depend on besides the operator and the steps (train_seconds: the wall
  # seconds of training from the previous point, compilation included).
  setting = {"teacher": base.teacher.to_dict(), "train_split": base.data.train_split,
             "val_split": base.data.val_split, "batch_size": base.train.batch_size,
             "lr": base.train.lr, "crop_scale": list(base.data.crop_scale)}
  for op_name in ops:
    c = embedded.base()
    c.seed = args.seed
    c.train.corruption = op_name
    c.train.checkpoint_every = 0
    sources = tasks.hold_small(tasks.load_sources(c), c.data.cache_mb << 20)
    fractions = tuple(c.probe.label_fractions)
    op = corruptions.build(op_name)
    teacher, teacher_vars = models.load_from_config(c.teacher, head="embed")
    frozen = Encoder(teacher, teacher_vars, batch_size=c.eval.batch_size, mesh=mesh)
    for method, seen in (("teacher_clean", corruptions.build("identity")),
                         ("teacher_corrupted", op)):
      if (op_name, method, 0) not in done:
        record({"op": op_name, "method": method, "steps": 0,
                "val_top1": _val_top1(frozen, sources, seen, fractions, args.seed)})
    module, init = student.student_model(c, teacher, teacher_vars)
    rundir = os.path.join(args.workdir, op_name)
    for n in steps:
      if (op_name, "ours", n) in done:
        continue
      c.train.steps = n
      start = time.perf_counter()
      variables = student.train_student(c, rundir, mesh=mesh, teacher=teacher,
                                        teacher_vars=teacher_vars, student=module,
                                        student_vars=init, train_source=sources["train"])
      trained = time.perf_counter() - start
      with open(os.path.join(rundir, "metrics.jsonl")) as f:
        losses = [json.loads(line) for line in f]
      loss = [m["loss"] for m in losses if m.get("step") == n][-1:]
      encoder = Encoder(module, variables, batch_size=c.eval.batch_size, mesh=mesh)
      record({"op": op_name, "method": "ours", "steps": n,
              "loss": loss[0] if loss else None, "train_seconds": round(trained, 1),
              "val_top1": _val_top1(encoder, sources, op, fractions, args.seed)})


if __name__ == "__main__":
  main()
