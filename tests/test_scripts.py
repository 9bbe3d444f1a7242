"""Every example and benchmark runs end to end with --smoke and writes its results (and plots).

Each script runs in a subprocess with a bounded time. A new script in examples/ or benchmarks/ is picked up
automatically. These runs take minutes in all, so they are marked slow: `.ci/run` runs them in its second
pass (`pytest -m slow`).
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for d in ("examples", "benchmarks") for p in (ROOT / d).glob("*.py") if not p.name.startswith("_"))


def run_script(path, out, *extra, timeout=600):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("XLA_FLAGS", None)  # scripts set their own device count through the harness
    return subprocess.run([sys.executable, str(path), "--smoke", "--out", str(out), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("path", SCRIPTS, ids=[f"{p.parent.name}/{p.name}" for p in SCRIPTS])
def test_script_smoke(path, tmp_path):
    # run_all runs every benchmark; with --accelerator too, the GPU configurations' plumbing is exercised
    extra = ("--accelerator",) if path.name == "run_all.py" else ()
    proc = run_script(path, tmp_path, *extra, timeout=1200 if extra else 600)
    assert proc.returncode == 0, f"{path.name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    results = tmp_path / "results.json"
    assert results.is_file(), f"{path.name} wrote no results.json into --out"
    record = json.loads(results.read_text())
    assert record["args"]["smoke"] is True and record["results"]
    for figure in record.get("figures", []):
        assert (tmp_path / figure).is_file(), f"{path.name} lists {figure} but did not write it"


def test_every_script_uses_the_harness():
    """No script keeps its own device prelude, mesh parser or argparse for the shared flags, and the same
    thing has the same flag everywhere."""
    for path in SCRIPTS:
        text = path.read_text()
        assert "xla_force_host_platform_device_count" not in text, path.name
        assert "script.parser(" in text, f"{path.name} does not use jaxzoo.script"
        assert "argparse.ArgumentParser(" not in text, f"{path.name} builds its own parser"
        for alias, flag in (('"--batch"', "--batch-size"), ('"--devices"', "--cpu-devices / --mesh"),
                            ('"--out-dir"', "--out"), ('"--output"', "--out")):
            assert f"add_argument({alias}" not in text, f"{path.name}: use {flag} instead of {alias}"


def test_readme_results_table_is_generated_from_results_files():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "results_table.py"), "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_table_formats_results_over_seeds_as_mean_and_std():
    from jaxzoo import script

    text = script.table([{"model": "a", "ppl": {"mean": 53.94, "std": 1.83}, "steps": 300, "x": 0.123456}])
    assert text.splitlines()[2] == "| a | 53.94 ± 1.8 | 300 | 0.1235 |"
    assert script.table([{"ppl": {"mean": 53.94, "std": float("nan")}}]).splitlines()[2] == "| 53.94 |"
