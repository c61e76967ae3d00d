r"""Exports the robust encoder of a finished run: a directory that needs nothing of the run.

  python -m rrjax.export --workdir=runs/demo --experiment=mask90 --out=exports/mask90
  python -m rrjax.predict --encoder=exports/mask90 image.png --corrupt="mask(0.9)"

The directory (`rrjax.encoder.load_encoder` reads it):
  model.safetensors     the student's variables, keyed by their Flax paths
  config.json           what rebuilds it (`rrjax.models.load(name, pretrained=False, **kwargs)`),
                        its input (resolution, normalisation, measurement size), the operator
                        and severities it was trained for, the teacher it imitates, the data,
                        the class names and the probes
  probes/probe_<f>.safetensors   the run's linear probe per label fraction f, with class names
  examples.json         the run's own answers on its first test images (`rrjax.outputs.products`)
  README.md             the model card, from the run's results rows
  open_clip_visual.safetensors   CLIP students only: the image tower in OpenAI/open_clip layout

Written to a temporary directory beside `--out` and renamed into place: an interrupted or refused
export leaves nothing half written. `--out` must not exist, or be an earlier export
(`--overwrite`). Exit status 2 with one line for a user error (an unfinished run, a seed sweep's
top directory, an unknown experiment, a file the run did not write), as `rrjax.main`.
"""

import json
import os
import shutil
import tempfile

import ml_collections
from absl import app, flags

import rrjax
from rrjax import encoder as encoder_lib
from rrjax import errors, models
from rrjax.config import experiments
from rrjax.evaluation import probe as probe_lib
from rrjax.io import files
from rrjax.models import weights_io
from rrjax.outputs import products, report
from rrjax.outputs import rows as rows_lib

OPEN_CLIP_FILE = "open_clip_visual.safetensors"


def export(workdir: str, out: str, experiment: str | None = None, *,
           overwrite: bool = False) -> str:
  """Exports experiment `experiment` (default: the run's only one) of the finished run in
  `workdir` to the directory `out` (module docstring); returns `out`.

  Raises:
    rrjax.errors.UserError: naming what is missing or wrong.
  """
  results = _read_results(workdir)
  config = ml_collections.ConfigDict(results["config"])
  if config.get("seeds"):
    first = os.path.join(workdir, f"seed_{config.seeds[0]}")
    raise errors.UserError(f"{workdir}: a sweep over seeds {list(config.seeds)}; export one "
                           f"seed's run, e.g. --workdir={first}")
  names = dict(experiments.expand(config))
  if experiment is None:
    if len(names) != 1:
      raise errors.UserError(f"{workdir}: the run has experiments {', '.join(names)}; choose one "
                             "with --experiment")
    experiment = next(iter(names))
  if experiment not in names:
    raise errors.UserError(f"{workdir}: no experiment {errors.quote(experiment)}; the run has "
                           f"{', '.join(names)}")
  rc, rundir = names[experiment], os.path.join(workdir, experiment)
  rows = [r for r in results["rows"] if r.get("experiment") == experiment]
  if not any(r["method"] == "ours" for r in rows) or "train" not in rc.stages:
    raise errors.UserError(f"{workdir}: experiment {experiment!r} has no trained student in its "
                           "results (stages without 'train'?)")
  student_path = os.path.join(rundir, products.STUDENT_FILE)
  if not os.path.exists(student_path):
    raise errors.UserError(f"{student_path}: missing; the run predates `rrjax.export` (rerun the "
                           "same `rrjax.main` command on this workdir to write it)")
  header = products.read_student_header(student_path)
  module, reference = models.load(header["encoder"], pretrained=False, head="embed",
                                  **header["kwargs"])
  variables = weights_io.load_safetensors(student_path, reference)

  probes, class_names = {}, None
  if "probe" in rc.stages:
    for fraction in rc.probe.label_fractions:
      path = os.path.join(rundir, products.probe_file(fraction))
      if not os.path.exists(path):
        raise errors.UserError(f"{path}: missing; the run predates `rrjax.export` (rerun the same "
                               "`rrjax.main` command on this workdir to write it)")
      _, names_, _ = probe_lib.load(path)
      class_names = class_names or names_
      probes[f"{float(fraction):g}"] = path
  examples_path = os.path.join(rundir, products.EXAMPLES_FILE)

  config_json = {
      "format": encoder_lib.FORMAT, "version": encoder_lib.VERSION,
      "encoder": {"name": header["encoder"], "kwargs": header["kwargs"],
                  "weights": encoder_lib.WEIGHTS_FILE,
                  "resolution": int(module.resolution),
                  "embed_dim": encoder_lib.module_embed_dim(module, variables, header),
                  "normalisation": {"mean": list(getattr(module, "MEAN", ())),
                                    "std": list(getattr(module, "STD", ()))},
                  "input": "RGB in [0, 1], NHWC, any size: resized to `resolution` "
                           "(bilinear, antialiased) and normalised inside the encoder"},
      "measurement_size": header["measurement_size"],
      "trained_for": {"operator": rc.train.corruption, "eval_operators": list(rc.eval.corruptions),
                      "loss": rc.train.loss, "temperature": rc.train.temperature,
                      "steps": rc.train.steps, "batch_size": rc.train.batch_size},
      "teacher": {"name": rc.teacher.name, "weights": rc.teacher.weights or "published",
                  "resolution": rc.teacher.resolution},
      "data": {"name": rc.data.name, "train_split": rc.data.train_split,
               "test_split": rc.data.test_split},
      "class_names": class_names or [],
      "probes": {f: os.path.basename(p) for f, p in probes.items()},
      "run": {"workdir": os.path.abspath(workdir), "experiment": experiment, "seed": rc.seed,
              "rrjax_version": rrjax.__version__},
  }
  extra, open_clip_cfg = _pytorch_layout(module, variables)
  if open_clip_cfg is not None:
    config_json["open_clip"] = {"file": OPEN_CLIP_FILE, **open_clip_cfg}

  parent = os.path.dirname(os.path.abspath(out))
  _check_out(out, overwrite)
  try:
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(os.path.abspath(out))}.")
  except OSError as e:
    raise errors.UserError(f"--out={out}: cannot create it ({e.strerror or e})") from None
  os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; an export is meant to be shared.
  try:
    shutil.copyfile(student_path, os.path.join(tmp, encoder_lib.WEIGHTS_FILE))
    os.makedirs(os.path.join(tmp, "probes"))
    for path in probes.values():
      shutil.copyfile(path, os.path.join(tmp, "probes", os.path.basename(path)))
    examples = None
    if os.path.exists(examples_path):
      shutil.copyfile(examples_path, os.path.join(tmp, products.EXAMPLES_FILE))
      examples = json.loads(open(examples_path, encoding="utf-8").read())
    for name, state in extra.items():
      weights_io.save_safetensors(os.path.join(tmp, name), state)
    files.write_json(os.path.join(tmp, encoder_lib.CONFIG_FILE), config_json)
    files.atomic_write(os.path.join(tmp, "README.md"),
                       model_card(config_json, rows, examples, sorted(extra)))
    # What was written must load (the same check a user's load makes).
    encoder_lib.load_encoder(tmp)
    _replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out


def _read_results(workdir: str) -> dict:
  path = os.path.join(workdir, "results.json")
  if not os.path.isdir(workdir):
    raise errors.UserError(f"{workdir}: no such workdir")
  if not os.path.exists(path):
    raise errors.UserError(f"{workdir}: not a finished run (no results.json); finish it by "
                           "rerunning its `rrjax.main` command, which resumes")
  try:
    results = json.loads(open(path, encoding="utf-8").read())
    if not isinstance(results.get("config"), dict) or not isinstance(results.get("rows"), list):
      raise ValueError("no config or rows")
  except (OSError, ValueError, AttributeError) as e:
    raise errors.UserError(f"{path}: not a results file of rrjax "
                           f"({errors.one_line(str(e), 100)})") from None
  return results


def _pytorch_layout(module, variables) -> tuple[dict[str, dict], dict | None]:
  """`({file name: state dict}, open_clip's tower config)` for PyTorch users: a CLIP image
  tower in OpenAI/open_clip layout (`rrjax.models.openai_layout`); `({}, None)` for other
  encoders."""
  from rrjax.models import openai_layout  # pylint: disable=import-outside-toplevel
  if openai_layout.family(variables) is None:
    return {}, None
  return ({OPEN_CLIP_FILE: openai_layout.to_state_dict(variables, prefix="")},
          openai_layout.vision_cfg(module))


def _check_out(out: str, overwrite: bool) -> None:
  if not os.path.lexists(out):
    return
  if os.path.isdir(out) and not os.listdir(out):
    return
  if not overwrite:
    raise errors.UserError(f"{out}: exists; choose another --out, or --overwrite an earlier "
                           "export")
  encoder_lib.read_config(out)  # Only an export is overwritten.


def _replace(tmp: str, out: str) -> None:
  """Moves `tmp` to `out`, replacing an earlier export there as late as possible."""
  if os.path.isdir(out) and not os.listdir(out):
    os.rmdir(out)
  if not os.path.lexists(out):
    os.replace(tmp, out)
    return
  old = tmp + ".old"
  os.replace(out, old)
  os.replace(tmp, out)
  shutil.rmtree(old, ignore_errors=True)


def model_card(config: dict, rows: list[dict], examples: dict | None,
               extra_files: list[str]) -> str:
  """The export's README.md: what the encoder is, how it scored in its run, how to use it."""
  trained, teacher, data = config["trained_for"], config["teacher"], config["data"]
  enc, run = config["encoder"], config["run"]
  lines = [
      f"# Robust {enc['name']} for `{trained['operator']}` (rrjax)", "",
      f"A student encoder trained by rrjax {run['rrjax_version']} so that its embedding of an "
      f"image corrupted by `{trained['operator']}` recovers the frozen teacher's embedding of "
      f"the clean image (Ravula, Smyrnis, Jordan, Dimakis, NeurIPS 2021): contrastive loss "
      f"`{trained['loss']}` (temperature {trained['temperature']}), {trained['steps']} steps "
      f"of batch {trained['batch_size']}.", "",
      "| | |", "|---|---|",
      f"| teacher | `{teacher['name']}` ({teacher['weights']}) |",
      f"| encoder | `{enc['name']}` {enc['kwargs'] or ''}, input {enc['resolution']} px, "
      f"embedding {enc['embed_dim']}-d |",
      f"| normalisation | mean {enc['normalisation']['mean']}, std "
      f"{enc['normalisation']['std']} (inside the encoder) |",
      f"| measurement | {config['measurement_size']} px: the operator acts at this size |",
      f"| data | `{data['name']}`, train `{data['train_split']}`, test `{data['test_split']}` |",
      f"| classes | {len(config['class_names'])}: {', '.join(config['class_names'][:10])}"
      f"{', ...' if len(config['class_names']) > 10 else ''} |",
      f"| probes (label fractions) | {', '.join(config['probes']) or 'none'} |",
      f"| run | `{run['workdir']}`, experiment `{run['experiment']}`, seed {run['seed']} |", "",
      "## Use", "", "```python", "import rrjax",
      'enc = rrjax.load_encoder("DIR")    # this directory',
      "emb = enc.embed(images)            # uint8 [N, H, W, 3] or files' bytes -> [N, D]",
      f"top = enc.classify(images, top_k=3, corrupt={trained['operator']!r}, seed=0)",
      "```", "",
      f"`python -m rrjax.predict --encoder=DIR --corrupt=\"{trained['operator']}\" IMAGE...` "
      "prints the top-k labels with probabilities.", ""]
  if extra_files:
    cfg = config["open_clip"]
    lines += [f"PyTorch: `{cfg['file']}` holds the image tower in OpenAI/open_clip layout; "
              "build open_clip's tower from `config.json`'s `open_clip` entry "
              f"(embed_dim {cfg['embed_dim']}, quick_gelu {cfg['quick_gelu']}, vision_cfg "
              f"{cfg['vision_cfg']}) and `visual.load_state_dict(safetensors.torch.load_file("
              f"\"{cfg['file']}\"))`.", ""]
  ours_data = [r for r in rows if r["dataset"] == data["name"]]
  if ours_data:
    lines += ["## How it scored in its run", "",
              "Top-1 (%) on the test split, mean ± standard error over corruption draws; the "
              "columns are the run's methods (`ours` is this encoder with the probe of each "
              "label fraction).", "", *report.results_table(ours_data), ""]
    lines += [f"- **{rows_lib.COLUMN_NAMES.get(m, m)}**: {rows_lib.LEGEND.get(m, '')}"
              for m in rows_lib.methods(ours_data)] + [""]
  if examples:
    fraction = max(config["probes"], key=float) if config["probes"] else None
    ops = list(examples["examples"][0]["top_k"]) if examples["examples"] else []
    if fraction is not None and ops:
      lines += [f"## Examples (the run's answers, probe {fraction})", "",
                f"The first test images of `{examples['dataset']}` (`{examples['split']}`), "
                f"corrupted under `{examples['key']}`; top-1 with its probability.", "",
                "| image | label | " + " | ".join(f"`{op}`" for op in ops) + " |",
                "|---:|---|" + "---|" * len(ops)]
      for ex in examples["examples"]:
        cells = [f"{ex['top_k'][op][fraction][0][0]} ({ex['top_k'][op][fraction][0][1]:.2f})"
                 for op in ops]
        lines.append(f"| {ex['index']} | {ex['label']} | " + " | ".join(cells) + " |")
      lines.append("")
  return "\n".join(lines)


FLAGS = flags.FLAGS


def define_flags() -> None:
  """The command's flags, defined when it runs (importing the module defines none, so that it
  can be imported beside `rrjax.main`, whose `--workdir` it shares)."""
  flags.DEFINE_string("workdir", None, "The finished run's --workdir.")
  flags.DEFINE_string("experiment", None,
                      "The experiment to export (default: the run's only one).")
  flags.DEFINE_string("out", None, "The export directory to write.")
  flags.DEFINE_bool("overwrite", False, "Replace an earlier export at --out.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir or not FLAGS.out:
    errors.exit_with("rrjax.export", "--workdir and --out are required")
  try:
    out = export(FLAGS.workdir, FLAGS.out, FLAGS.experiment, overwrite=FLAGS.overwrite)
  except errors.UserError as e:
    errors.exit_with("rrjax.export", str(e))
  print(f"exported to {out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
