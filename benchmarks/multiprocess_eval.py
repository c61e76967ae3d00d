"""Host data per evaluation batch: one process against two, process-local placement against
`jax.device_put` (issue #17).

    python benchmarks/multiprocess_eval.py [--model tiny_cnn --size 224 --batch 128
                                            --batches 6 --repeats 3]

Four runs of `rrjax.evaluation.features.extract_features` over the same uint8 images
`[batch * batches, size, size, 3]`, each on a mesh of two CPU devices: one process with both,
or two local processes (`jax.distributed`, gloo) with one each; and each with

* `local` (rrjax now): each process hands JAX its own slice of every batch
  (`make_array_from_process_local_data`) and the variables once per call from its own copy
  (`make_array_from_callback`);
* `device_put` (rrjax before issue #17): each process builds the whole global batch and the
  variables and places them with `jax.device_put` onto the mesh, which, across processes,
  first checks that every process holds the same value.

Measured: the bytes each process hands JAX per batch (`nbytes` of what it passes; summed
over the processes), and in process 0 the median time to place one batch (placement alone,
`block_until_ready`), the median time of a whole feature pass per batch (after a warm-up
pass), and the time to place the variables. The bytes handed over are each process's slice by
construction of the placement and do not show the gathers inside `device_put`: the times do.
Ends with `result: eval_batch_time_2proc_over_1proc <r> (goal <= 1)`, a feature pass's time
per batch on 2 processes over 1, with rrjax's placement (the same ratio for `device_put` is
printed above it).
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(args) -> None:
  import jax  # pylint: disable=g-import-not-at-top
  if args.num_processes > 1:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{args.port}", args.num_processes, args.process_id)
  import numpy as np  # pylint: disable=g-import-not-at-top

  from rrjax import models  # pylint: disable=g-import-not-at-top
  from rrjax.evaluation import features  # pylint: disable=g-import-not-at-top
  from rrjax.parallel import sharding  # pylint: disable=g-import-not-at-top

  mesh = sharding.make_mesh()
  assert mesh.devices.size == 2, mesh
  n = args.batch * args.batches
  images = np.random.default_rng(0).integers(0, 256, (n, args.size, args.size, 3), np.uint8)
  model, variables = models.load(args.model, pretrained=False)
  handed = []  # Bytes this process passes to JAX for each batch.

  if args.placement == "device_put":
    def global_batch(local, mesh_):
      handed.append(sum(np.asarray(x).nbytes for x in local.values()))
      return {k: jax.device_put(np.asarray(x), sharding.batch_sharding(mesh_))
              for k, x in local.items()}

    def array_batches(images_, batch_size):  # The whole batch in every process.
      for start in range(0, images_.shape[0], batch_size):
        yield np.asarray(images_[start:start + batch_size])

    def replicate(tree, mesh_):
      return jax.device_put(jax.tree.map(np.asarray, tree), sharding.replicated(mesh_))

    features._array_batches = array_batches  # pylint: disable=protected-access
  else:
    local_global_batch = sharding.global_batch

    def global_batch(local, mesh_):
      handed.append(sum(np.asarray(x).nbytes for x in local.values()))
      return local_global_batch(local, mesh_)

    replicate = sharding.replicate
  sharding.global_batch, sharding.replicate = global_batch, replicate

  def timed(fn, repeats):
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(fn())
      times.append(time.perf_counter() - start)
    return statistics.median(times)

  host_vars = jax.tree.map(np.asarray, variables)
  replicate_s = timed(lambda: replicate(host_vars, mesh), args.repeats)
  batches = list(features._array_batches(images, args.batch))  # pylint: disable=protected-access
  handed.clear()
  place_s = timed(lambda: [global_batch({"image": b}, mesh) for b in batches],
                  args.repeats) / len(batches)
  bytes_per_batch = handed[0]

  def feature_pass():
    return features.extract_features(model, variables, images, batch_size=args.batch,
                                     mesh=mesh)

  reference = feature_pass()  # Warm-up: compiles.
  pass_s = timed(feature_pass, args.repeats) / args.batches
  with open(f"{args.out}.{jax.process_index()}", "w", encoding="utf-8") as f:
    json.dump({"processes": jax.process_count(), "placement": args.placement,
               "bytes_per_batch": int(bytes_per_batch), "place_s": place_s,
               "pass_s_per_batch": pass_s, "replicate_s": replicate_s,
               "features_sum": float(np.asarray(reference, np.float64).sum())}, f)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _run(args, processes: int, placement: str) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    out = os.path.join(tmp, "out.json")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    env["XLA_FLAGS"] = ("--xla_force_host_platform_device_count=2" if processes == 1 else "")
    port = _free_port()
    common = [sys.executable, os.path.abspath(__file__), "--child", f"--out={out}",
              f"--placement={placement}", f"--model={args.model}", f"--size={args.size}",
              f"--batch={args.batch}", f"--batches={args.batches}",
              f"--repeats={args.repeats}", f"--num_processes={processes}", f"--port={port}"]
    children = [subprocess.Popen(common + [f"--process_id={i}"], env=env, cwd=REPO)
                for i in range(processes)]
    for child in children:
      if child.wait(timeout=1200) != 0:
        raise SystemExit(f"a benchmark process failed ({processes} processes, {placement})")
    measured = []
    for i in range(processes):
      with open(f"{out}.{i}", encoding="utf-8") as f:
        measured.append(json.load(f))
    # Times as process 0 saw them; bytes handed to JAX by all processes together.
    return dict(measured[0], bytes_per_batch=measured[0]["bytes_per_batch"],
                total_bytes_per_batch=sum(m["bytes_per_batch"] for m in measured),
                same_features=len({m["features_sum"] for m in measured}) == 1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="tiny_cnn")
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--batches", type=int, default=6)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--out", help=argparse.SUPPRESS)
  parser.add_argument("--placement", default="local", help=argparse.SUPPRESS)
  parser.add_argument("--num_processes", type=int, default=1, help=argparse.SUPPRESS)
  parser.add_argument("--process_id", type=int, default=0, help=argparse.SUPPRESS)
  parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    _child(args)
    return
  print(f"load before: {os.getloadavg()[0]:.2f}  ({os.cpu_count()} cores)")
  results = {}
  for processes in (1, 2):
    for placement in ("local", "device_put"):
      r = _run(args, processes, placement)
      results[processes, placement] = r
      print(f"processes {processes}  {placement:10s}  host bytes/batch: process 0 "
            f"{r['bytes_per_batch']:>10,d}, all {r['total_bytes_per_batch']:>10,d}  "
            f"place {1e3 * r['place_s']:8.2f} ms/batch  "
            f"feature pass {1e3 * r['pass_s_per_batch']:8.2f} ms/batch  variables "
            f"{1e3 * r['replicate_s']:7.2f} ms  (features sum {r['features_sum']:.6g})",
            flush=True)
  print(f"load after: {os.getloadavg()[0]:.2f}")
  sums = {round(r["features_sum"], 4) for r in results.values()}
  same = len(sums) == 1 and all(r["same_features"] for r in results.values())
  print(f"same features in every process of all four runs (sum to 4 decimals): {same}")
  # Bytes handed to JAX, all processes together (what each process passes: its slice by
  # construction with `local`; it cannot show the gathers inside `device_put`).
  ratio = (results[2, "local"]["total_bytes_per_batch"]
           / results[1, "local"]["total_bytes_per_batch"])
  print(f"host bytes per batch, 2 processes over 1 (local): {ratio:.2f}")
  # Time is what shows the data moved, gathers included.
  def over(placement):
    return results[2, placement]["pass_s_per_batch"] / results[1, placement]["pass_s_per_batch"]
  print(f"feature pass per batch, 2 processes over 1, device_put (before #17): "
        f"{over('device_put'):.2f}")
  print(f"result: eval_batch_time_2proc_over_1proc {over('local'):.2f} (goal <= 1)")


if __name__ == "__main__":
  main()
