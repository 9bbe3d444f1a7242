"""Every Linen module of every package initialises sharded on a (data=4, model=2) mesh, with logical axis
names from jaxzoo's one vocabulary. Each package lists its modules in `sharding_examples()`; a module class
defined in a package but missing from that list fails `test_every_module_is_listed`, so a new module cannot
be forgotten."""

import importlib
import inspect
import pkgutil

import flax.linen as nn
import jax
import pytest

import jaxzoo

PACKAGES = ("jrt", "tora", "sae", "interact", "colbert")


def examples():
    out = []
    for pkg in PACKAGES:
        for name, module, args in importlib.import_module(pkg).sharding_examples():
            out.append(pytest.param(module, args, id=f"{pkg}.{name}"))
    return out


def defined_modules(pkg_name):
    """Every nn.Module subclass whose class is defined inside the package."""
    pkg = importlib.import_module(pkg_name)
    found = set()
    for info in pkgutil.walk_packages(pkg.__path__, pkg_name + "."):
        mod = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if issubclass(obj, nn.Module) and obj.__module__.startswith(pkg_name + "."):
                found.add(obj.__qualname__)
    return found


@pytest.mark.parametrize("pkg", PACKAGES)
def test_every_module_is_listed(pkg):
    listed = {type(m).__qualname__ for _, m, _ in importlib.import_module(pkg).sharding_examples()}
    missing = defined_modules(pkg) - listed
    assert not missing, f"{pkg}.sharding_examples() lacks {sorted(missing)}"


@pytest.mark.parametrize("module, args", examples())
def test_module_initialises_sharded_with_vocabulary_names(module, args):
    mesh = jaxzoo.make_mesh({"data": 4, "model": 2})
    boxed = jax.eval_shape(module.init, jax.random.key(0), *args)
    jaxzoo.check_axis_names(boxed)
    variables, shardings = jaxzoo.init_sharded(module, jax.random.key(0), *args, mesh=mesh)
    for leaf, sh in zip(jax.tree.leaves(variables), jax.tree.leaves(shardings)):
        assert leaf.sharding == sh
