"""One process of the two-process test: 4 fake CPU devices, gloo collectives, a global (data=4, model=2)
mesh over both processes' 8 devices. Usage: python _multiprocess_worker.py PROCESS_ID PORT OUT_DIR."""

import pathlib
import pickle
import sys

import jax

jax.config.update("jax_num_cpu_devices", 4)
jax.config.update("jax_cpu_collectives_implementation", "gloo")

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # the repository
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import jaxzoo  # noqa: E402

process_id, port, out = int(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3])
jaxzoo.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4

from multiprocess_scenarios import SCENARIOS  # noqa: E402

mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
results = {}
for name, run in SCENARIOS.items():
    results[name] = run(mesh)
    print(f"process {process_id}: {name} trained and evaluated", flush=True)
    results[name + "_ckpt"] = run(mesh, workdir=out / f"{name}_run", steps=2)  # checkpoint at step 2
    print(f"process {process_id}: {name} checkpoint written", flush=True)
if process_id == 0:
    (out / "results.pkl").write_bytes(pickle.dumps(results))
print(f"process {process_id} done", flush=True)
