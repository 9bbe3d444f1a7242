"""Bytes per device of the train state of each package's largest preset, as jaxzoo.plan_state lays it out.

    python benchmarks/state_memory.py                      # mesh data=4 x model=2 over 8 fake CPU devices
    python benchmarks/state_memory.py --mesh data=-1,model=8 --cpu-devices 64

Nothing is allocated: the states are planned abstractly (``plan_state(..., abstract_only=True)``), so the
XL presets fit on a laptop. Columns: parameters per device; optimizer state per device when its moments
are replicated (what a plain ``jax.jit(tx.init)`` gives, as the packages' old state builders did); when
every optimizer leaf takes its parameter's sharding (``plan_state``); and with ``zero1=True`` (moments
further split over the data axis). The figures are in results.json.
"""

import sys

import jax
from jax.sharding import NamedSharding, PartitionSpec

import jaxzoo
from jaxzoo import script

GIB = 2**30


def presets(smoke: bool):
    import colbert
    import jrt
    import sae
    import tora

    if smoke:
        return [("tora STDiT tiny", tora.RunConfig(model=tora.STDiTConfig.tiny())),
                ("jrt tiny", jrt.RunConfig(model=jrt.JRTConfig.tiny()))]
    return [
        ("tora STDiT3-XL/2 (AdamW + EMA)", tora.RunConfig(model=tora.STDiTConfig.xl())),
        ("tora Tora-XL, motion modules trained (AdamW + EMA)", tora.RunConfig(model=tora.ToraConfig())),
        ("jrt JRT-1.3B (AdamW)", jrt.RunConfig(model=jrt.JRTConfig.jrt_1b3())),
        ("jrt JRT-360M (AdamW)", jrt.RunConfig(model=jrt.JRTConfig.jrt_360m())),
        ("colbert ColBERTv2, BERT-base (AdamW)", colbert.RunConfig(model=colbert.ColBERTConfig.colbertv2())),
        ("sae Gemma Scope 2304 x 16384 (Adam)", sae.RunConfig(model=sae.SAEConfig.gemmascope(2304, 16384))),
    ]


def row(name, run_cfg, mesh):
    recipe = run_cfg.recipe()
    plans = {
        z: jaxzoo.plan_state(recipe.init_fn, recipe.tx, jax.random.key(0), mesh=mesh, rules=recipe.rules,
                             extra=recipe.extra, zero1=z, abstract_only=True)
        for z in (False, True)
    }
    plan = plans[False]
    replicated = jax.tree.map(lambda _: NamedSharding(mesh, PartitionSpec()), plan.shardings.opt_state)
    old = jaxzoo.bytes_per_device(plan.abstract, plan.shardings.replace(opt_state=replicated))
    new, z1 = plan.memory(), plans[True].memory()
    return {
        "preset": name,
        "params (B)": jaxzoo.param_count(plan.abstract.params) / 1e9,
        "params/device (GiB)": new["params"] / GIB,
        "opt replicated (GiB)": old["opt_state"] / GIB,
        "opt sharded (GiB)": new["opt_state"] / GIB,
        "opt ZeRO-1 (GiB)": z1["opt_state"] / GIB,
        "saved/device (GiB)": (old["opt_state"] - new["opt_state"]) / GIB,
    }


def main():
    p = script.parser(__doc__)
    p.set_defaults(cpu_devices=8, mesh={"data": 4, "model": 2})
    args = script.parse(p)
    run = script.setup(args, "state_memory")
    rows = [row(name, cfg, run.mesh) for name, cfg in presets(args.smoke)]
    script.print_table(rows, title=f"train state per device on mesh {dict(run.mesh.shape)}", digits=3)
    run.save({"mesh": dict(run.mesh.shape), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
