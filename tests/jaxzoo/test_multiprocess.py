"""Two processes on 127.0.0.1, each with 4 fake CPU devices and gloo collectives, train the jrt LM and a
sae SAE on one (data=4, model=2) mesh across both; losses and parameters equal the one-process 8-device
run to 1e-6, and a checkpoint the two processes wrote restores in one process and continues identically.
"""

import os
import pathlib
import pickle
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxzoo

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from multiprocess_scenarios import SCENARIOS, STEPS  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_process")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    procs = [subprocess.Popen([sys.executable, str(HERE / "_multiprocess_worker.py"), str(i), str(port), str(out)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=420)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        tails = [p.communicate()[0][-2000:] for p in procs]
        pytest.fail("the two-process run did not finish in 420 s; the workers printed:\n" + "\n---\n".join(tails))
    finally:
        for p in procs:  # never leave a process behind, whatever happened
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, f"worker failed:\n{log[-4000:]}"
    return out, pickle.loads((out / "results.pkl").read_bytes())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_two_processes_equal_one_process(two_process_results, name):
    _, results = two_process_results
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    losses, params = SCENARIOS[name](mesh)
    got_losses, got_params = results[name]
    assert len(got_losses) >= STEPS and len(got_losses) == len(losses)
    np.testing.assert_allclose(got_losses, losses, rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(got_params), jax.tree.leaves(params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_two_process_checkpoint_restores_in_one_process(two_process_results, name, tmp_path):
    out, _ = two_process_results
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    uninterrupted_losses, uninterrupted = SCENARIOS[name](mesh)
    # continue the checkpoint the two processes wrote at step 2, in this single process, to STEPS
    losses, params = SCENARIOS[name](mesh, workdir=out / f"{name}_run", steps=STEPS)
    np.testing.assert_allclose(losses, uninterrupted_losses, rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(uninterrupted)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_initialize_is_a_no_op_in_one_process_and_checks_its_arguments():
    assert jaxzoo.initialize() == (0, 1)
    with pytest.raises(ValueError, match="needs coordinator_address, num_processes and process_id"):
        jaxzoo.initialize(num_processes=2)
    with pytest.raises(ValueError, match=r"process_id must lie in \[0, 2\)"):
        jaxzoo.initialize("127.0.0.1:1", num_processes=2, process_id=5)
