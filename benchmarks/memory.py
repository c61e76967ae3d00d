"""Peak host memory of the demo, of the paper path as the data grows, and peak device memory.

    python benchmarks/memory.py            # the demo's smoke config, in a fresh workdir (1-2 min)
    python benchmarks/memory.py --full     # the real demo (configs/demo.py, 9 to 13 min on 2 cores)
    python benchmarks/memory.py --scaling  # the paper path on 1,000 and 10,000 JPEGs (~10 min)

Host: the demo runs as a child process (`python -m rrjax.main --config=configs/demo.py[:smoke]
--workdir=<new temporary directory>`); its peak resident set is the kernel's high-water mark,
`getrusage(RUSAGE_CHILDREN).ru_maxrss`, what `/usr/bin/time -v` reports as "Maximum resident
set size". A poll of /proc/<pid>/status every 0.2 s adds when the peak was reached.

Device: on a GPU or TPU, `benchmarks/accelerator.py` runs as a child (`--accelerator-args` are
passed on) and its printed `memory_stats()['peak_bytes_in_use']` is reported. The backend is
probed in a child too, so that this process never holds device memory. On CPU there is no
device memory apart from the host's: reported as not available.

Ends with `result: demo_peak_host_memory <GiB> GiB (<config>; no goal set)`.

Scaling (`--scaling`): the paper config's pipeline (`configs/scale_check.py`: CLIP RN101 with
random weights, 224 px, Table 1's mask 90%) on generated ImageNet-like JPEG folders
(`rrjax.data.synthetic`, about 350 x 400 px) of 1,000 and of 10,000 training images, each in a
child process that runs a few steps of every stage through the functions the run calls (not
`rrjax.run` itself, whose feature passes cover whole splits): the sources and their labels
(every image listed), the frozen teacher's features, the student's training
(`train.steps` steps, epochs permuted over all N images), the probe's features, fit and scoring,
the baseline's fine-tuning, with the input pipeline's Grain worker processes. Feature passes
stop after `--steps` batches (a full pass over 10,000 images with RN101 takes hours on a CPU;
the only state a full pass adds is its features, 2 KB an image). Peak host RSS is the child's
`ru_maxrss` plus the peak of its worker processes' resident sets, summed, polled every 0.1 s
(`RUSAGE_CHILDREN` would count each worker's moment between fork and exec, when it shares all
of the child's pages). Ends with
`result: rss_growth_1k_to_10k <percent>% (goal 15%)`.
"""

import argparse
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rss_kib(pid: int) -> int:
  try:
    with open(f"/proc/{pid}/status") as f:
      return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
  except (OSError, AttributeError):
    return 0


def run_demo(config: str) -> dict:
  """Runs the demo with `config` in a new workdir; its peak memory, time and exit status."""
  with tempfile.TemporaryDirectory() as workdir, tempfile.TemporaryFile("w+") as log:
    command = [sys.executable, "-m", "rrjax.main", f"--config={config}", f"--workdir={workdir}"]
    start = time.perf_counter()
    # The log goes to a file: a pipe nobody reads while polling fills up (64 KiB) and blocks
    # the demo's next log line for good.
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log,
                               text=True)
    polled, polled_at = 0, 0.0
    while process.poll() is None:
      rss = _rss_kib(process.pid)
      if rss > polled:
        polled, polled_at = rss, time.perf_counter() - start
      time.sleep(0.2)
    seconds = time.perf_counter() - start
    log.seek(0)
    stderr = log.read()
  if process.returncode:
    raise SystemExit(f"{shlex.join(command)} exited with {process.returncode}:\n"
                     f"{stderr[-2000:]}")
  return {"command": shlex.join(command), "peak_kib": resource.getrusage(
      resource.RUSAGE_CHILDREN).ru_maxrss, "polled_kib": polled, "polled_at": polled_at,
          "seconds": seconds}


def scaling_child(folder: str, steps: int) -> None:
  """Runs a few steps of every stage of configs/scale_check.py on `folder`; prints its peaks."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  from absl import flags
  flags.FLAGS.mark_as_parsed()
  sys.path.insert(0, ROOT)
  from rrjax import corruptions, data, models  # pylint: disable=g-import-not-at-top
  from rrjax.evaluation import probe, scoring, tasks
  from rrjax.evaluation.features import Encoder
  from rrjax.parallel import sharding
  from rrjax.training import baseline, student

  import threading  # pylint: disable=g-import-not-at-top
  workers_peak = [0]

  def poll_workers():
    # The workers' own resident sets, summed; `RUSAGE_CHILDREN` would count each worker's
    # moment between fork and exec, when it shares all of this process's pages.
    while True:
      pids = []
      for task in os.listdir("/proc/self/task"):
        try:
          with open(f"/proc/self/task/{task}/children") as f:
            pids += f.read().split()
        except OSError:
          pass
      workers_peak[0] = max(workers_peak[0], sum(_rss_kib(int(p)) for p in pids))
      time.sleep(0.1)

  threading.Thread(target=poll_workers, daemon=True).start()
  spec = importlib.util.spec_from_file_location("scale_check",
                                                os.path.join(ROOT, "configs", "scale_check.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.data.name = f"imagefolder:{folder}"
  c.train.steps = c.baseline.max_steps = steps
  c.train.checkpoint_every = 0
  start = time.perf_counter()
  mesh = sharding.make_mesh()
  sources = tasks.hold_small(tasks.load_sources(c), c.data.cache_mb << 20)
  labels = {k: s.labels() for k, s in sources.items()}
  teacher = Encoder(*models.load_from_config(c.teacher, head="embed"),
                    batch_size=c.eval.batch_size, mesh=mesh, num_workers=c.data.num_workers)
  first = lambda s: data.subset(s, np.arange(min(len(s), steps * c.eval.batch_size)))
  clean = {k: teacher.features(first(s)) for k, s in sources.items()}
  print(f"stage teacher features: {time.perf_counter() - start:.0f} s", flush=True)
  with tempfile.TemporaryDirectory() as rundir:
    module, variables = student.student_model(c, teacher.module, teacher.variables)
    trained = student.train_student(c, rundir, mesh=mesh, teacher=teacher.module,
                                    teacher_vars=teacher.variables, student=module,
                                    student_vars=variables, train_source=sources["train"])
    print(f"stage student: {time.perf_counter() - start:.0f} s", flush=True)
    ours = Encoder(module, trained, batch_size=c.eval.batch_size, mesh=mesh,
                   num_workers=c.data.num_workers)
    op = corruptions.build(c.train.corruption)
    key = jax.random.key(c.seed)
    train = first(sources["train"])
    fitted = probe.fit([ours.features(train, op, key)], labels["train"][:len(train)],
                       sources["train"].num_classes, seed=0, batch_size=c.probe.batch_size,
                       lr=c.probe.lr, epochs=c.probe.epochs, weight_decay=0.0)
    test = first(sources["test"])
    accs = scoring.accuracy_over_draws(
        lambda k: ours.features(test, op, k), {"probe": lambda x: probe.logits(fitted, x)},
        labels["test"][:len(test)], op, seed=c.seed, draws=c.eval.draws)
    print(f"stage probe and evaluation: {time.perf_counter() - start:.0f} s "
          f"(top-1 {accs['probe']})", flush=True)
    labelled = probe.label_fraction_indices(labels["train"], 1.0,
                                            sources["train"].num_classes, c.seed)
    baseline.train_baseline(c, os.path.join(rundir, "baseline"), mesh=mesh,
                            train_source=data.subset(sources["train"], labelled),
                            num_classes=sources["train"].num_classes)
    print(f"stage baseline: {time.perf_counter() - start:.0f} s", flush=True)
  del clean
  own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  print(f"peak_kib {own} {workers_peak[0]}", flush=True)


def run_scaling(sizes: list[int], steps: int, cache: str) -> list[dict]:
  """Peak host RSS of `scaling_child` on generated folders of each size of `sizes`."""
  out = []
  for n in sizes:
    folder = os.path.join(cache, f"imagenet_like_{n}")
    subprocess.run([sys.executable, "-m", "rrjax.data.synthetic", f"--out={folder}",
                    f"--train={n}", "--test=64"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    command = [sys.executable, os.path.abspath(__file__), f"--scaling-child={folder}",
               f"--steps={steps}"]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                            env=dict(os.environ, JAX_PLATFORMS=os.environ.get(
                                "JAX_PLATFORMS", "cpu")))
    if result.returncode:
      raise SystemExit(f"{shlex.join(command)} exited with {result.returncode}:\n"
                       f"{result.stderr[-3000:]}")
    lines = result.stdout.splitlines()
    own, workers = (int(x) for x in lines[-1].split()[1:])
    for line in lines[:-1]:
      print(f"  {n} images: {line}")
    out.append({"n": n, "own_kib": own, "workers_kib": workers,
                "seconds": time.perf_counter() - start, "command": shlex.join(command)})
  return out


def device_peak(accelerator_args: str) -> str:
  """The accelerator benchmark's peak device memory line, or why there is none."""
  backend = subprocess.run([sys.executable, "-c", "import jax; print(jax.default_backend())"],
                           capture_output=True, text=True, check=True).stdout.strip()
  if backend == "cpu":
    return "not available (cpu backend: no device memory apart from the host's)"
  command = [sys.executable, os.path.join(ROOT, "benchmarks", "accelerator.py")]
  command += shlex.split(accelerator_args)
  out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  lines = out.stdout.splitlines()
  peak = [line.split(": ", 1)[1] for line in lines if line.startswith("peak device memory")]
  rows = [line for line in lines if re.match(r"\s*\d+\s+\d", line)]
  if out.returncode or not peak:
    return f"failed ({shlex.join(command)} exited with {out.returncode}: {out.stderr[-300:]})"
  batch = rows[-1].split()[0] if rows else "?"
  return f"{peak[0]} ({backend}, batch {batch}: {shlex.join(command)})"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--full", action="store_true", help="the real demo, not its smoke config")
  parser.add_argument("--accelerator-args", default="",
                      help="arguments for benchmarks/accelerator.py on a GPU/TPU")
  parser.add_argument("--scaling", action="store_true",
                      help="peak RSS of the paper path on 1,000 and 10,000 generated JPEGs")
  parser.add_argument("--sizes", default="1000,10000", help="--scaling: training set sizes")
  parser.add_argument("--steps", type=int, default=3, help="--scaling: steps of each stage")
  parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "rrjax_bench"),
                      help="--scaling: where the generated folders are kept")
  parser.add_argument("--scaling-child", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.scaling_child:
    return scaling_child(args.scaling_child, args.steps)
  total_kib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
  if args.scaling:
    print(f"{os.cpu_count()} CPU cores, {total_kib / 2**20:.1f} GiB memory, load average "
          f"{os.getloadavg()[0]:.2f}; command: {shlex.join(['python'] + sys.argv)}")
    runs = run_scaling([int(n) for n in args.sizes.split(",")], args.steps, args.cache)
    print(f"{'images':>8} {'main (GiB)':>11} {'workers (GiB)':>13} {'total (GiB)':>12} "
          f"{'time (s)':>9}")
    for r in runs:
      total = (r["own_kib"] + r["workers_kib"]) / 2**20
      print(f"{r['n']:>8} {r['own_kib'] / 2**20:>11.2f} {r['workers_kib'] / 2**20:>13.2f} "
            f"{total:>12.2f} {r['seconds']:>9.0f}")
    first, last = (r["own_kib"] + r["workers_kib"] for r in (runs[0], runs[-1]))
    growth = 100 * (last - first) / first
    print(f"child: {runs[-1]['command']}")
    print(f"result: rss_growth_1k_to_10k {growth:.1f}% (goal 15%)")
    return None
  config = "configs/demo.py" if args.full else "configs/demo.py:smoke"

  print(f"{os.cpu_count()} CPU cores, {total_kib / 2**20:.1f} GiB memory; command: "
        f"{shlex.join(['python'] + sys.argv)}")
  demo = run_demo(config)
  gib = demo["peak_kib"] / 2**20
  print(f"{'what':<34} {'value':>10}")
  print(f"{'demo wall time (s)':<34} {demo['seconds']:>10.1f}")
  print(f"{'demo peak host memory (GiB)':<34} {gib:>10.2f}")
  print(f"{'  polled peak (GiB), reached at (s)':<34} {demo['polled_kib'] / 2**20:>10.2f} "
        f"at {demo['polled_at']:.0f} s")
  print(f"demo: {demo['command']}")
  print(f"accelerator benchmark peak device memory: {device_peak(args.accelerator_args)}")
  print(f"result: demo_peak_host_memory {gib:.2f} GiB ({config}; no goal set)")


if __name__ == "__main__":
  main()
