"""Peak host memory of the demo, and peak device memory of the accelerator benchmark.

    python benchmarks/memory.py            # the demo's smoke config, in a fresh workdir (1-2 min)
    python benchmarks/memory.py --full     # the real demo (configs/demo.py, 9 to 13 min on 2 cores)

Host: the demo runs as a child process (`python -m rrjax.main --config=configs/demo.py[:smoke]
--workdir=<new temporary directory>`); its peak resident set is the kernel's high-water mark,
`getrusage(RUSAGE_CHILDREN).ru_maxrss`, what `/usr/bin/time -v` reports as "Maximum resident
set size". A poll of /proc/<pid>/status every 0.2 s adds when the peak was reached.

Device: on a GPU or TPU, `benchmarks/accelerator.py` runs as a child (`--accelerator-args` are
passed on) and its printed `memory_stats()['peak_bytes_in_use']` is reported. The backend is
probed in a child too, so that this process never holds device memory. On CPU there is no
device memory apart from the host's: reported as not available.

Ends with `result: demo_peak_host_memory <GiB> GiB (<config>; no goal set)`.
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
  args = parser.parse_args()
  config = "configs/demo.py" if args.full else "configs/demo.py:smoke"

  total_kib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
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
