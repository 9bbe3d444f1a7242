"""Run every benchmark in one call and collect their results into one JSON.

    python benchmarks/run_all.py --accelerator          # on a GPU/TPU: every benchmark's accelerator sizes
    python benchmarks/run_all.py --smoke                # the plumbing, in seconds per benchmark (CI)
    python benchmarks/run_all.py --only jrt_throughput,sae_vs_saelens

Each benchmark runs in its own process (one compile cache and device state each, a failure stays local)
with the flags given here (--accelerator, --smoke, --seed), writes its own results.json under
<out>/<benchmark>/, and this script gathers them into <out>/results.json with each one's wall time and exit
status. The accelerator sizes are chosen so that the whole suite, compilation included, finishes within
about 8 minutes on one H200.
"""

import pathlib
import subprocess
import sys
import time

from jaxzoo import script

HERE = pathlib.Path(__file__).resolve().parent


def main():
    p = script.parser(__doc__)
    p.add_argument("--only", default="", help="comma-separated benchmark names (default: all)")
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed per benchmark")
    args = script.parse(p)
    run = script.setup(args, "run_all")
    names = sorted(f.stem for f in HERE.glob("*.py") if f.stem != "run_all" and not f.stem.startswith("_"))
    if args.only:
        wanted = args.only.split(",")
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            raise ValueError(f"--only names unknown benchmarks {unknown}; known: {names}")
        names = wanted
    flags = ["--seed", str(args.seed)] + (["--accelerator"] if args.accelerator else []) + (
        ["--smoke"] if args.smoke else [])
    rows, collected = [], {}
    for name in names:
        out = run.out / name
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, str(HERE / f"{name}.py"), "--out", str(out), *flags],
                                  timeout=args.timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
        wall = time.perf_counter() - t0
        results = out / script.RESULTS_FILE
        collected[name] = script.load_results(results) if results.is_file() else None
        rows.append({"benchmark": name, "exit": code, "wall_s": round(wall, 1), "results": results.is_file()})
    script.print_table(rows, title=f"benchmarks on {script.machine()['device_kind']}")
    run.save({"benchmarks": collected, "summary": rows})
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
