"""Regenerate README.md's results table from the results files that the default runs wrote.

    python examples/jrt_recall.py                      # any example or benchmark, default flags
    python tools/results_table.py --collect outputs    # copy non-smoke outputs/*/results.json into results/
    python tools/results_table.py                      # rewrite the table in README.md from results/

results/<script>.json are the committed copies (one per script, the last default run); the README table
between the `results:begin` and `results:end` markers is generated from them and nothing else, so the
README cannot drift from what a run measured. `--check` exits 1 when the README is out of date (a test
runs it).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _fmt(v) -> str:
    if isinstance(v, dict) and "mean" in v and "std" in v:
        return f"{v['mean']:.3g} ± {v['std']:.2g}"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _scalars(d: dict, prefix: str = "", depth: int = 0):
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and "mean" in v and "std" in v:
            yield key, v
        elif isinstance(v, dict) and depth < 2:
            yield from _scalars(v, key + ".", depth + 1)
        elif isinstance(v, bool | int | float) or (isinstance(v, str) and len(v) < 40):
            yield key, v


def headline(results: dict, limit: int = 5) -> str:
    """The figures a reader looks for: ``results["headline"]`` if the script gave one, else its first
    numbers (mean ± std where it gave seeds), else the first row of its table."""
    pick = results.get("headline")
    items = list(pick.items()) if isinstance(pick, dict) else list(_scalars(results))
    if not items:
        for v in results.values():
            if isinstance(v, list) and v and isinstance(v[0], dict):
                items = [(k, x) for k, x in v[0].items() if isinstance(x, bool | int | float | str)]
                items = [("first row: " + items[0][0], items[0][1])] + items[1:] if items else []
                break
    return "; ".join(f"{k} {_fmt(v)}" for k, v in items[:limit]).replace("|", "/") or "(see the file)"


def render(folder: pathlib.Path) -> str:
    rows = ["| script | headline figures | wall | machine | file |", "|---|---|---|---|---|"]
    for path in sorted(folder.glob("*.json")):
        rec = json.loads(path.read_text())
        m = rec.get("machine", {})
        where = f"{m.get('devices', '?')} x {m.get('device_kind', '?')}"
        rows.append(f"| `{rec.get('script', path.stem)}` | {headline(rec.get('results', {}))} | "
                    f"{rec.get('wall_s', '?')} s | {where} | `results/{path.name}` |")
    if len(rows) == 2:
        rows.append("| (none yet) | run a script with its defaults, then `python tools/results_table.py --collect outputs` | | | |")
    return "\n".join(rows)


def collect(source: pathlib.Path, dest: pathlib.Path) -> list[str]:
    copied = []
    for path in sorted(source.glob("*/results.json")):
        rec = json.loads(path.read_text())
        if rec.get("args", {}).get("smoke"):
            continue
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest / f"{rec.get('script', path.parent.name)}.json")
        copied.append(path.parent.name)
    return copied


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collect", type=pathlib.Path, default=None, help="copy results.json of default runs from here")
    p.add_argument("--check", action="store_true", help="exit 1 if README.md's table is out of date")
    p.add_argument("--readme", type=pathlib.Path, default=ROOT / "README.md")
    p.add_argument("--results", type=pathlib.Path, default=ROOT / "results")
    args = p.parse_args(argv)
    if args.collect is not None:
        print("collected:", ", ".join(collect(args.collect, args.results)) or "nothing")
    text = args.readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{args.readme} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{render(args.results)}\n{END}{tail}"
    if args.check:
        if new != text:
            print(f"{args.readme} is out of date: run python tools/results_table.py")
            return 1
        return 0
    args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
