"""The harness every example and benchmark uses: flags, devices, output, timing, tables, results.

::

    from jaxzoo import script

    parser = script.parser(__doc__)
    parser.add_argument("--steps", type=int, default=300, help="training steps")
    args = script.parse(parser, smoke={"steps": 5})   # --smoke replaces these defaults
    run = script.setup(args)                            # fake CPU devices, mesh, output folder, rng
    ...
    run.save({"accuracy": acc}, figures={"curve": fig})  # results.json (+ curve.png) in run.out

Flags every script has, spelled the same everywhere:
  --mesh data=-1,model=2   the device mesh (-1: the remaining devices); default: all devices on "data"
  --cpu-devices N          fake N CPU devices (only on a CPU backend; set before JAX starts its backend)
  --out DIR                where results.json and the plots go (default outputs/<script name>)
  --seed N                 the PRNG seed
  --smoke                  the smallest sizes that still run every code path (seconds; CI runs this)
  --accelerator            the GPU/TPU configuration (benchmarks/run_all.py --accelerator runs them all)
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax

from jaxzoo.config import _encode

RESULTS_FILE = "results.json"


def parse_mesh(text: str) -> dict[str, int]:
    """``"data=-1,model=2"`` -> ``{"data": -1, "model": 2}``; ``ValueError`` with the expected form."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, size = part.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = int(size)
        except ValueError:
            raise ValueError(f"--mesh expects axis=size pairs like 'data=-1,model=2'; got {text!r}") from None
    if not out:
        raise ValueError(f"--mesh expects axis=size pairs like 'data=-1,model=2'; got {text!r}")
    return out


def parser(doc: str | None = None, **kwargs: Any) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the shared flags; ``doc`` (the script's ``__doc__``) is its help text."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    g = p.add_argument_group("shared (jaxzoo.script)")
    g.add_argument("--mesh", type=parse_mesh, default=None, help="device mesh, e.g. data=-1,model=2")
    g.add_argument("--cpu-devices", type=int, default=None, help="fake this many CPU devices")
    g.add_argument("--out", type=pathlib.Path, default=None, help="results folder (default outputs/<script>)")
    g.add_argument("--seed", type=int, default=0, help="PRNG seed")
    g.add_argument("--smoke", action="store_true", help="tiny sizes that run every code path in seconds")
    g.add_argument("--accelerator", action="store_true",
                   help="the GPU/TPU configuration: larger sizes, bf16 where supported")
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None = None,
          smoke: Mapping[str, Any] | None = None,
          accelerator: Mapping[str, Any] | None = None) -> argparse.Namespace:
    """Parse ``argv``; with ``--smoke`` (``--accelerator``), flags the user did not set take the values in
    ``smoke`` (``accelerator``). ``--smoke`` wins when both are given (CI tests the accelerator plumbing
    with both)."""
    args = p.parse_args(argv)
    given = list(sys.argv[1:] if argv is None else argv)
    for on, overrides in ((args.accelerator, accelerator), (args.smoke, smoke)):
        if not on or not overrides:
            continue
        for name, value in overrides.items():
            if not hasattr(args, name):
                raise ValueError(f"override for unknown flag {name!r}")
            flag = "--" + name.replace("_", "-")
            if not any(a == flag or a.startswith(flag + "=") for a in given):
                setattr(args, name, value)
    return args


def set_cpu_devices(n: int | None) -> None:
    """Fake ``n`` CPU devices. Must run before JAX starts a backend (any array or device call)."""
    if n is None:
        return
    if n < 1:
        raise ValueError(f"--cpu-devices must be >= 1; got {n}")
    jax.config.update("jax_num_cpu_devices", n)


class Run:
    """What ``setup`` returns: args, mesh, output folder, rng, and ``save`` for results and figures."""

    def __init__(self, args: argparse.Namespace, name: str):
        self.args = args
        self.name = name
        self.out = pathlib.Path(args.out) if args.out is not None else pathlib.Path("outputs") / name
        self.out.mkdir(parents=True, exist_ok=True)
        from jaxzoo.sharding import make_mesh  # after the device count is set

        self.mesh = make_mesh(args.mesh if args.mesh else {"data": -1})
        self.rng = jax.random.key(args.seed)
        self.started = time.perf_counter()

    @property
    def smoke(self) -> bool:
        return bool(self.args.smoke)

    def save(self, results: Mapping[str, Any], figures: Mapping[str, Any] | None = None) -> pathlib.Path:
        """Write ``out/results.json`` (results + flags + machine + wall time) and each figure as PNG."""
        for fname, fig in (figures or {}).items():
            fig.savefig(self.out / f"{fname}.png", dpi=120, bbox_inches="tight")
            import matplotlib.pyplot as plt

            plt.close(fig)
        record = {
            "script": self.name,
            "args": {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(self.args).items()},
            "machine": machine(),
            "wall_s": round(time.perf_counter() - self.started, 2),
            "results": dict(results),
            "figures": sorted(f"{f}.png" for f in (figures or {})),
        }
        path = self.out / RESULTS_FILE
        path.write_text(json.dumps(_encode(record), indent=2))
        print(f"results: {path}")
        return path


def load_results(path: str | pathlib.Path) -> dict:
    """Read a results.json written by ``Run.save``; ``ValueError`` when it is truncated or not one."""
    path = pathlib.Path(path)
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); the file is truncated or corrupt") from None
    if not isinstance(record, dict) or "results" not in record:
        raise ValueError(f"{path} is not a results file written by jaxzoo.script (no 'results' key)")
    return record


def setup(args: argparse.Namespace, name: str | None = None) -> Run:
    """Apply ``--cpu-devices``, build ``--mesh``, create ``--out``; ``name`` defaults to the script's name."""
    set_cpu_devices(args.cpu_devices)
    return Run(args, name or pathlib.Path(sys.argv[0]).stem)


def machine() -> dict[str, Any]:
    """The devices a measurement ran on."""
    devices = jax.devices()
    return {"backend": jax.default_backend(), "devices": len(devices),
            "device_kind": devices[0].device_kind, "processes": jax.process_count(),
            "python": platform.python_version(), "jax": jax.__version__}


def timeit(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs (compilation), each blocked
    until its outputs are ready."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(max(repeats, 1)):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *, digits: int = 4) -> str:
    """A markdown table of ``rows`` (dicts); floats to ``digits`` significant digits, a ``{"mean", "std"}``
    cell (a result over seeds) as "mean ± std"."""
    if not rows:
        return "(no rows)"
    columns = list(columns or rows[0].keys())

    def cell(v):
        if isinstance(v, Mapping) and "mean" in v and "std" in v:  # one seed: no spread to show
            return f"{v['mean']:.{digits}g}" + ("" if math.isnan(v["std"]) else f" ± {v['std']:.2g}")
        if isinstance(v, float):
            return f"{v:.{digits}g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *,
                title: str | None = None, digits: int = 4) -> None:
    """Print ``table(rows)`` (with a title line and the machine for benchmarks)."""
    if title:
        print(f"\n{title}")
    print(table(rows, columns, digits=digits))
