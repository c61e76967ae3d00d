"""Weights are data (issue #12): no file may crash the process, read its memory, run code or
exhaust the machine.

Every case of `hostile_weights.CASES` goes through `python -m rrjax.models.inspect_weights` in
a subprocess with a 4 GiB address-space limit and a timeout, as a user checking a downloaded
file would run it. It must end in one line `error: ...` naming the file, exit status 2, in
well under the timeout and within `MAX_RSS` of memory, without running the file's code or
opening files outside the weights. Then the torch reader is fuzzed: thousands of mutants of
valid files, all read by one child process, must each load or raise a `UserError`.

The per-case children take about two minutes together: they are marked `hostile`, outside the
default run (`make test-hostile`, which CI runs after the default suite). The fuzz (one child,
about a second), the in-process BUILD check, the truncations and the hostile tokenizer
directories (which no `--model` reaches) run by default.
"""

import collections
import dataclasses
import io
import json
import os
import pathlib
import pickle
import pickletools
import random
import re
import signal
import subprocess
import sys
import threading
import time
import types
import zipfile

import pytest

from rrjax.models import torch_reader
from rrjax.models.torch_reader import CheckpointError
from tests.models import hostile_weights
from tests.models import test_torch_reader as tr

REPO = pathlib.Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "rrjax.models.inspect_weights"]
# The same command, without its last cut of the message to one line of 300 characters: the
# cases of `hostile_weights.MAX_ERROR_BYTES` check how long a message the readers and loaders
# build, which `rrjax.main` prints whole. Only the tool's own reference to `rrjax.errors` is
# replaced; every other module keeps its cuts.
_UNCUT = """
import sys, types
from rrjax import errors
from rrjax.models import inspect_weights
shim = types.ModuleType("rrjax.errors")
shim.__dict__.update(vars(errors))
shim.one_line = lambda text, limit=None: " ".join(str(text).split())
inspect_weights.errors = shim
sys.exit(inspect_weights.main())
"""
CLI_UNCUT = [sys.executable, "-c", _UNCUT]
# The child's address space: a file that makes the reader allocate more dies of MemoryError.
ADDRESS_SPACE = 4 << 30
TIMEOUT_S = 60
# Peak resident memory of a child given a hostile file: the imports (jax, flax, transformers)
# take a few hundred MiB; the files are at most about 100 MB, most a few KB.
MAX_RSS = 1 << 30
# A one-line error, not a dump of the file (`hostile_weights.MAX_ERROR_BYTES` lowers it for some).
MAX_ERROR_BYTES = 4096
# "error: ..." or, argparse style, "<prog>: error: ...".
_ERROR_LINE = re.compile(r"(?:[^:\n]*: )?error: ")


# --- running a child ----------------------------------------------------------------------------

@dataclasses.dataclass
class Run:
  """How a child process ended."""
  returncode: int  # negative: killed by that signal
  seconds: float
  timed_out: bool
  peak_rss: int  # bytes
  stdout: str  # the first 64 KiB
  stderr: str  # the first 64 KiB
  stderr_bytes: int
  fifos_opened: list

  def describe(self) -> str:
    if self.returncode < 0:
      status = f"killed by {signal.Signals(-self.returncode).name}"
    else:
      status = f"exit {self.returncode}"
    first = self.stderr.strip().splitlines()[:1] or [""]
    return (f"{status}{' (timed out)' if self.timed_out else ''}, {self.seconds:.1f} s, peak "
            f"{self.peak_rss >> 20} MiB, stderr {self.stderr_bytes} bytes: {first[0][:300]!r}")


# Starts the command under test from a small process, so that its peak memory is its own: a
# child forked straight from pytest (hundreds of MiB by then) would count pytest's pages, which
# the kernel keeps in the peak across exec. Sets the address-space limit, runs the command,
# writes "<exit code> <peak RSS in KiB>" to the file named first.
_LAUNCHER = """
import os, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
pid = os.fork()
if pid == 0:
  os.execv(sys.argv[3], sys.argv[3:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
  f.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def child_env(tmp: pathlib.Path) -> dict:
  """The environment of a child: the repo importable, CPU only, offline, and Hugging Face's
  caches (where transformers copies a directory's custom code before importing it) in `tmp`."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get(
      "PYTHONPATH") else []))
  env.update(JAX_PLATFORMS="cpu", HF_HOME=str(tmp / "hf_home"), HF_HUB_OFFLINE="1",
             TRANSFORMERS_OFFLINE="1")
  return env


def _watch_fifos(fifos, stop: threading.Event, opened: list):
  """Notes each FIFO that a reader opens, and lets it read end-of-file instead of blocking."""
  while not stop.is_set():
    for fifo in fifos:
      try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while no reader has it open
      except OSError:
        continue
      opened.append(str(fifo))
      os.close(fd)
    stop.wait(0.01)


def _head(path: pathlib.Path, limit: int = 1 << 16) -> str:
  """The first `limit` bytes of a (possibly huge) output file, as text."""
  with open(path, "rb") as f:
    return f.read(limit).decode("utf-8", "replace")


def run_child(argv: list[str], tmp: pathlib.Path, timeout: float = TIMEOUT_S,
              stdin: bytes = b"y\n", fifos=()) -> Run:
  """Runs `argv` under the address-space limit, with `stdin` on a pipe (a "y" for any
  "run this code? [y/N]" prompt) and its output in files, killing it after `timeout` s."""
  work = tmp / "child"
  work.mkdir(exist_ok=True)
  out, err, ended = work / "stdout", work / "stderr", work / "ended"
  ended.unlink(missing_ok=True)
  start = time.monotonic()
  with open(out, "wb") as out_f, open(err, "wb") as err_f:
    proc = subprocess.Popen(
        [sys.executable, "-S", "-c", _LAUNCHER, str(ended), str(ADDRESS_SPACE), *argv],
        stdin=subprocess.PIPE, stdout=out_f, stderr=err_f, cwd=work, env=child_env(tmp),
        start_new_session=True)
  stop, opened = threading.Event(), []
  watcher = threading.Thread(target=_watch_fifos, args=(fifos, stop, opened), daemon=True)
  watcher.start()
  try:
    proc.stdin.write(stdin)
    proc.stdin.close()
  except BrokenPipeError:
    pass
  timed_out = False
  try:
    # Polled, to kill the whole session at the timeout.
    while True:
      pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
      if pid:
        break
      if time.monotonic() - start > timeout:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the child and anything it spawned
        _, status, usage = os.wait4(proc.pid, 0)
        break
      time.sleep(0.01)
  finally:
    stop.set()
    watcher.join()
  del usage  # the launcher's; the command's own comes from `ended`
  seconds = time.monotonic() - start
  if ended.exists():
    code, peak_kib = map(int, ended.read_text().split())
  else:  # killed at the timeout, or the launcher failed
    code, peak_kib = os.waitstatus_to_exitcode(status), 0
  return Run(code, seconds, timed_out, peak_kib * 1024, _head(out), _head(err),
             err.stat().st_size, opened)


# --- every hostile case -------------------------------------------------------------------------

def _cases() -> list:
  """Every case; those of `KNOWN_LIMITS` expected to fail, for the reason given there."""
  return [pytest.param(case, marks=pytest.mark.xfail(reason=hostile_weights.KNOWN_LIMITS[case],
                                                     strict=True))
          if case in hostile_weights.KNOWN_LIMITS else case
          for case in sorted(hostile_weights.CASES)]


@pytest.mark.hostile
@pytest.mark.parametrize("case", _cases())
def test_hostile_file_gives_one_line_error(tmp_path, case):
  path, extra = hostile_weights.CASES[case](tmp_path)
  cli = CLI_UNCUT if case in hostile_weights.MAX_ERROR_BYTES else CLI
  run = run_child([*cli, str(path), *extra], tmp_path, fifos=hostile_weights.fifos(tmp_path))
  print(f"{case}: {run.describe()}")
  problems = []
  if hostile_weights.marker(tmp_path).exists():
    problems.append("the file's code ran (the marker file exists)")
  if run.fifos_opened:
    problems.append(f"opened {run.fifos_opened}, outside the weights")
  if run.timed_out:
    problems.append(f"still running after {TIMEOUT_S} s")
  elif run.seconds > hostile_weights.MAX_SECONDS.get(case, TIMEOUT_S):
    problems.append(f"took {run.seconds:.0f} s, over {hostile_weights.MAX_SECONDS[case]:.0f} s")
  elif run.returncode < 0:
    problems.append(f"crashed: {signal.Signals(-run.returncode).name}")
  elif run.returncode == 0 and case not in hostile_weights.MAY_LOAD:
    problems.append("accepted the file (exit 0)")
  elif run.returncode not in (0, 2):
    problems.append(f"exit status {run.returncode}, not 2 (a UserError)")
  if run.returncode == 2:
    lines = run.stderr.strip().splitlines()
    max_bytes = hostile_weights.MAX_ERROR_BYTES.get(case, MAX_ERROR_BYTES)
    if "Traceback" in run.stderr:
      problems.append("printed a traceback")
    if len(lines) != 1 or run.stderr_bytes > max_bytes:
      problems.append(f"stderr is {len(lines)} lines, {run.stderr_bytes} bytes, not one line "
                      f"of at most {max_bytes} bytes")
    elif not _ERROR_LINE.match(lines[0]):
      problems.append("the error line does not start with 'error: '")
    elif path.name not in lines[0]:
      problems.append(f"the error does not name {path.name!r}")
    pattern = hostile_weights.MESSAGE_PATTERNS.get(case)
    if lines and pattern and not re.search(pattern, lines[0]):
      problems.append(f"the error does not match {pattern!r}")
  if run.peak_rss > MAX_RSS:
    problems.append(f"peak memory {run.peak_rss >> 20} MiB > {MAX_RSS >> 20} MiB")
  assert not problems, f"{case}: {'; '.join(problems)}\n  {run.describe()}"


def test_valid_file_loads(tmp_path):
  # The harness itself: a valid checkpoint passes through the same child and checks.
  tree, expected = tr._views()
  path = tmp_path / "valid.pt"
  tr.write_zip(path, tree)
  run = run_child([*CLI, str(path)], tmp_path)
  assert run.returncode == 0, run.describe()
  assert all(name in run.stdout for name in expected), run.stdout
  assert run.peak_rss < MAX_RSS, run.describe()


# --- tokenizer directories, in this process ------------------------------------------------------

def _tokenizer_dir(folder: pathlib.Path) -> pathlib.Path:
  """A valid CLIP tokenizer directory of a six-token vocabulary."""
  folder.mkdir()
  vocab = {"a": 0, "b": 1, "<|startoftext|>": 2, "<|endoftext|>": 3, "a</w>": 4, "b</w>": 5}
  (folder / "vocab.json").write_text(json.dumps(vocab))
  (folder / "merges.txt").write_text("#version: 0.2\na b\n")
  return folder


@pytest.mark.parametrize("attack", ["vocab_file_outside", "chat_template_link"])
def test_hostile_tokenizer_dir_is_refused(tmp_path, attack):
  # The zero-shot head's tokenizer directory (no `--model` reaches it): a tokenizer config
  # naming a file outside the directory for transformers to read, or a link out of it (which
  # transformers read as the chat template). The error must name the directory's offending
  # entry: transformers' own failure to parse /etc/hostname as a vocabulary names only the
  # directory.
  from rrjax import errors  # pylint: disable=import-outside-toplevel
  from rrjax.evaluation import zeroshot  # pylint: disable=import-outside-toplevel
  assert zeroshot._load_tokenizer(str(_tokenizer_dir(tmp_path / "valid"))).encoder
  folder = _tokenizer_dir(tmp_path / "tokenizer")
  if attack == "vocab_file_outside":
    entry = folder / "tokenizer_config.json"
    entry.write_text(json.dumps({"vocab_file": "/etc/hostname"}))
  else:
    entry = folder / "chat_template.jinja"
    entry.symlink_to("/etc/passwd")
  with pytest.raises(errors.UserError, match=re.escape(str(entry))):
    zeroshot._load_tokenizer(str(folder))


# --- BUILD on the reader's callables, in this process -------------------------------------------

def _reader_state() -> dict:
  """What a file could change in the reader module: each function's attributes and defaults,
  each class's namespace."""
  state = {}
  for name, value in vars(torch_reader).items():
    if isinstance(value, types.FunctionType):
      state[name] = (dict(value.__dict__), value.__defaults__, value.__kwdefaults__)
    elif isinstance(value, type) and value.__module__ == torch_reader.__name__:
      state[name] = dict(vars(value))
  return state


def _restore(state: dict):
  """Puts back what `_reader_state` saved, so a reader that let a file change it does not
  break later tests of this process."""
  for name, saved in state.items():
    value = getattr(torch_reader, name)
    if isinstance(saved, tuple):
      value.__dict__.clear()
      value.__dict__.update(saved[0])
      value.__defaults__, value.__kwdefaults__ = saved[1], saved[2]
      continue
    for attr in set(vars(value)) - set(saved):
      delattr(value, attr)
    for attr, item in saved.items():
      if vars(value).get(attr) is not item and attr not in ("__dict__", "__weakref__", "__doc__"):
        setattr(value, attr, item)


def test_build_on_allowlisted_callable_leaves_reader_intact(tmp_path):
  before = _reader_state()
  try:
    with pytest.raises(CheckpointError):
      torch_reader.read(hostile_weights.build_allowlisted_function(tmp_path / "hostile.pt"))
    after = _reader_state()
    changed = sorted(name for name in before if after.get(name) != before[name])
    assert not changed, f"the file changed {changed} of the reader"
    # And the reader still reads a valid file right.
    tree, expected = tr._views()
    tr.write_zip(tmp_path / "valid.pt", tree)
    tr._assert_same(torch_reader.read(tmp_path / "valid.pt"), expected)
  finally:
    _restore(before)


# --- the reader fuzzed --------------------------------------------------------------------------

# Read by one child: for each mutant, its index in `progress` first, then one outcome line.
_FUZZ_CHILD = """
import os, sys
from rrjax import errors
from rrjax.models import torch_reader
folder, count = sys.argv[1], int(sys.argv[2])
with open(os.path.join(folder, "progress"), "w") as progress, \\
     open(os.path.join(folder, "results"), "w") as results:
  for i in range(count):
    progress.seek(0)
    progress.write(f"{i:08d}\\n")
    progress.flush()
    try:
      torch_reader.read(os.path.join(folder, f"{i:05d}.pt"))
      line = "ok"
    except errors.UserError as e:
      line = f"usererror {type(e).__name__}"
    except Exception as e:
      line = f"other {type(e).__name__} {' '.join(str(e).split())[:300]}"
    results.write(line + "\\n")
    results.flush()
"""

FUZZ_MUTANTS = 2100
FUZZ_TIMEOUT_S = 240
# Byte values worth writing into a pickle: bounds, and opcodes that build, call and nest.
_INTERESTING = (b"\x00\x01\x7f\x80\xff" + pickle.BUILD + pickle.REDUCE + pickle.TUPLE
                + pickle.TUPLE1 + pickle.MARK + pickle.BINPERSID + pickle.DUP + pickle.APPENDS
                + pickle.SETITEMS + pickle.BINGET + pickle.EMPTY_LIST + pickle.EMPTY_DICT
                + pickle.NEWOBJ + pickle.STOP + pickle.POP + pickle.LONG1 + pickle.BININT)


@dataclasses.dataclass
class _Base:
  """A valid file to mutate: its bytes, and either its zip records or its pickles' span."""
  name: str
  blob: bytes
  records: dict | None = None  # zip: name -> bytes, data.pkl re-zipped after mutation
  pickle_end: int = 0  # legacy: the pickles end here, the storages follow


def _fuzz_bases(tmp: pathlib.Path) -> list[_Base]:
  """Three valid files: a torch.save zip and a legacy file of `test_torch_reader._views()`'s
  tensors (views, offsets, strides, dtypes), and a TorchScript archive."""
  tree, _ = tr._views()
  bases = []
  tr.write_zip(tmp / "zip.pth", tree)
  with zipfile.ZipFile(tmp / "zip.pth") as z:
    bases.append(_Base("zip", (tmp / "zip.pth").read_bytes(),
                       {info.filename: z.read(info) for info in z.infolist()}))
  tr.write_legacy(tmp / "legacy.pth", tree)
  blob = (tmp / "legacy.pth").read_bytes()
  f = io.BytesIO(blob)
  for _ in range(5):  # magic, protocol, system info, the object, the storage keys
    for _ in pickletools.genops(f):
      pass
  bases.append(_Base("legacy", blob, pickle_end=f.tell()))
  masks = tr._Call("torch.jit._pickle", "restore_type_tag", {"causal": tree["idx"]},
                   "Dict[str, Tensor]")
  linear = tr._script("Linear", training=False, weight=tree["w"], bias=tree["tail"])
  visual = tr._script("VisionTransformer", training=False, proj=linear, masks=masks)
  model = tr._script("CLIP", training=False, visual=visual, logit_scale=tree["scalar"],
                     half=tree["half"], name="ViT-B/32")
  tr.write_zip(tmp / "script.pt", model, torchscript=True)
  with zipfile.ZipFile(tmp / "script.pt") as z:
    bases.append(_Base("torchscript", (tmp / "script.pt").read_bytes(),
                       {info.filename: z.read(info) for info in z.infolist()}))
  for base in bases:  # the bases themselves are valid
    assert torch_reader.read(io.BytesIO(base.blob)), base.name
  return bases


def _mutate(rng: random.Random, data: bytes, lo: int, hi: int) -> tuple[bytes, str]:
  """`data` with one mutation inside [lo, hi): bytes overwritten (mostly), inserted or cut."""
  data, kind = bytearray(data), rng.random()
  if kind < 0.8:
    count = rng.randint(1, 8)
    for _ in range(count):
      value = rng.choice(_INTERESTING) if rng.random() < 0.3 else rng.randrange(256)
      data[rng.randrange(lo, hi)] = value
    return bytes(data), f"{count} bytes overwritten"
  pos = rng.randrange(lo, hi)
  if kind < 0.9:
    extra = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(data[:pos] + extra + data[pos:]), f"{len(extra)} bytes inserted at {pos}"
  return bytes(data[:pos]), f"cut at {pos}"


def _mutant(base: _Base, seed: int) -> tuple[bytes, str]:
  """Mutant `seed` of `base`: about half the time inside the pickle (zips re-zipped, so the
  CRC stays valid and the mutation reaches the unpickler), else anywhere in the file."""
  rng = random.Random(seed)
  if rng.random() < 0.5:
    if base.records is None:
      blob, what = _mutate(rng, base.blob, 0, base.pickle_end)
      return blob, f"pickle: {what}"
    records = dict(base.records)
    name = next(n for n in records if n.endswith("/data.pkl"))
    records[name], what = _mutate(rng, records[name], 0, len(records[name]))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
      for record, data in records.items():
        z.writestr(record, data)
    return buf.getvalue(), f"data.pkl: {what}"
  blob, what = _mutate(rng, base.blob, 0, len(base.blob))
  return blob, f"file: {what}"


def test_reader_fuzz(tmp_path):
  bases = _fuzz_bases(tmp_path)
  folder = tmp_path / "mutants"
  folder.mkdir()
  described = []
  for seed in range(FUZZ_MUTANTS):
    base = bases[seed % len(bases)]
    blob, what = _mutant(base, seed)
    (folder / f"{seed:05d}.pt").write_bytes(blob)
    described.append(f"mutant {seed} (seed {seed}) of the {base.name} file, {what}")
  run = run_child([sys.executable, "-c", _FUZZ_CHILD, str(folder), str(FUZZ_MUTANTS)],
                  tmp_path, timeout=FUZZ_TIMEOUT_S)
  results = (folder / "results").read_text().splitlines() if (folder / "results").exists() \
      else []
  counts = collections.Counter(" ".join(line.split()[:2]) for line in results)
  print(f"fuzz: {len(results)} mutants read, {run.describe()}")
  for outcome, count in sorted(counts.items()):
    print(f"  {count:5d} {outcome}")
  if run.returncode != 0 or run.timed_out:
    progress = (folder / "progress").read_text().strip() if (folder / "progress").exists() else ""
    culprit = described[int(progress)] if progress else "before the first mutant"
    pytest.fail(f"the fuzz child died on {culprit} (folder {folder}): {run.describe()}\n"
                f"{run.stderr[-2000:]}")
  others = [f"{described[i]}: {line}" for i, line in enumerate(results)
            if not line.startswith(("ok", "usererror "))]
  assert not others, f"{len(others)} mutants raised something else than a UserError:\n" + \
      "\n".join(others[:20])
  assert not run.stderr, f"the fuzz child wrote to stderr:\n{run.stderr[-2000:]}"
  assert len(results) == FUZZ_MUTANTS >= 2000


def test_every_truncation_is_a_checkpoint_error(tmp_path):
  # Deterministic and in this process: each prefix of a valid legacy and zip file.
  for base in _fuzz_bases(tmp_path)[:2]:
    for end in range(len(base.blob)):
      with pytest.raises(CheckpointError):
        torch_reader.read(io.BytesIO(base.blob[:end]))


def test_hugging_face_cache_snapshots_pass_the_directory_check(tmp_path):
  # The hub cache links each file of a snapshot to its content store, `../../blobs/<hash>`:
  # that is inside; a link anywhere else is not.
  from rrjax import errors  # pylint: disable=import-outside-toplevel
  from rrjax.models import clip_vit  # pylint: disable=import-outside-toplevel
  repo = tmp_path / "models--openai--clip-vit-base-patch16"
  (repo / "blobs").mkdir(parents=True)
  (repo / "blobs" / "abc123").write_text("{}")
  snapshot = repo / "snapshots" / "rev0"
  snapshot.mkdir(parents=True)
  (snapshot / "config.json").symlink_to("../../blobs/abc123")
  clip_vit.check_local_source(str(snapshot))
  (tmp_path / "elsewhere.json").write_text("{}")
  (snapshot / "preprocessor_config.json").symlink_to(tmp_path / "elsewhere.json")
  with pytest.raises(errors.UserError, match="preprocessor_config.json: links to a file outside"):
    clip_vit.check_local_source(str(snapshot))

