"""What a run leaves for use outside it: the robust encoder, its probes, examples of its answers.

    <workdir>/<experiment>/student.safetensors     the trained student's variables
    <workdir>/<experiment>/probe_<fraction>.safetensors   `ours`' probe per label fraction
    <workdir>/<experiment>/examples.json           its top-k on the first test images

`rrjax.export` turns them into a self-contained encoder directory (`rrjax.encoder`). The
student's file carries in its header what rebuilds its module (`rrjax.models.load(name,
pretrained=False, **kwargs)`) and the measurement size the operator acted at; each probe's
carries the class names and the hyperparameters it was fitted with (`probe.save`).

Examples: the student's answers on the first `EXAMPLES` images of the test split, clean and
under each eval operator, through the run's own evaluation path (`Encoder.features`, the
probes of the run) and with its first scored corruption draw (`scoring.draw_key(seed, op, 0)`:
the first images of the test split are the first of its first eval batch, and an image's
corruption depends on the key and its place in the batch alone, `rrjax.corruptions`).
`python -m rrjax.predict --corrupt=<op> --seed=<seed>` on the same images, in the same order,
draws the same corruptions: the model card shows them, and a test holds the exported encoder
to them.
"""

import json
import os

import numpy as np

from rrjax import data, errors
from rrjax.evaluation import probe as probe_lib
from rrjax.evaluation import scoring
from rrjax.io import files
from rrjax.models import weights_io

STUDENT_FILE = "student.safetensors"
STUDENT_FORMAT = "rrjax-student"
EXAMPLES_FILE = "examples.json"
EXAMPLES = 8
TOP_K = 3


def probe_file(fraction: float) -> str:
  """The file name of `ours`' probe fitted with label fraction `fraction`."""
  return f"probe_{fraction:g}.safetensors"


def save_student(rundir: str, variables, *, name: str, kwargs: dict,
                 measurement_size: int) -> None:
  """Writes the trained student's variables and how to rebuild its module."""
  weights_io.save_safetensors(
      os.path.join(rundir, STUDENT_FILE), variables,
      metadata={"format": STUDENT_FORMAT, "encoder": json.dumps(name),
                "kwargs": json.dumps(files.to_python(kwargs)),
                "measurement_size": json.dumps(int(measurement_size))})


def read_student_header(path: str) -> dict:
  """`{"encoder", "kwargs", "measurement_size"}` of a student file, checked.

  Raises:
    rrjax.errors.UserError: naming the file when it is not a student file written by rrjax.
  """
  header = weights_io.safetensors_metadata(path)
  try:
    if header.get("format") != STUDENT_FORMAT:
      raise ValueError(f"format {header.get('format')!r}")
    out = {k: json.loads(header[k]) for k in ("encoder", "kwargs", "measurement_size")}
    if not (isinstance(out["encoder"], str) and isinstance(out["kwargs"], dict)
            and isinstance(out["measurement_size"], int) and out["measurement_size"] > 0):
      raise ValueError("fields of the wrong type")
  except (KeyError, ValueError) as e:
    raise errors.UserError(f"{path}: not a student file written by rrjax "
                           f"({errors.one_line(str(e), 120)})") from None
  return out


def save_probe(rundir: str, fraction: float, fitted, class_names, hparams: dict) -> None:
  """Writes `ours`' probe of label fraction `fraction`."""
  probe_lib.save(os.path.join(rundir, probe_file(fraction)), fitted, class_names,
                 label_fraction=float(fraction), hparams=hparams)


def top_k(logits: np.ndarray, class_names, k: int = TOP_K) -> list[list]:
  """Per row of `logits` `[N, C]`: the `k` most probable `[class name, probability]`, by
  decreasing probability (softmax)."""
  logits = np.asarray(logits, np.float64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  order = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
  return [[[class_names[c], round(float(p[c]), 4)] for c in row] for p, row in zip(probs, order)]


def save_examples(rundir: str, encoder, test, ops, probes: dict, class_names, *,
                  seed: int, dataset: str) -> None:
  """Writes the student's top-k on the first test images, clean and under each of `ops`.

  Args:
    encoder: the run's `Encoder` of the trained student.
    test: the test split (`tasks.Split`).
    ops: the eval operators.
    probes: label fraction -> fitted `Probe`.
    class_names: label i's name.
    seed: the run's seed: the corruption key is its first scored draw's.
    dataset: the test split's name, for the record.
  """
  n = min(EXAMPLES, len(test.source))
  images = data.subset(test.source, np.arange(n))
  answers = {}
  for op in (None, *ops):
    key = scoring.draw_key(seed, str(op)) if op is not None else None
    features = encoder.features(images, op, key)
    answers["clean" if op is None else str(op)] = {
        f"{f:g}": top_k(probe_lib.logits(p, features), class_names) for f, p in probes.items()}
  examples = [{"index": i, "label": class_names[int(test.labels[i])],
               "top_k": {op: {f: ranked[i] for f, ranked in per_fraction.items()}
                         for op, per_fraction in answers.items()}} for i in range(n)]
  files.write_json(os.path.join(rundir, EXAMPLES_FILE),
                   {"dataset": dataset, "split": test.source.split, "seed": seed,
                    "key": f"rrjax.evaluation.scoring.draw_key({seed}, <op>, 0)",
                    "examples": examples})
