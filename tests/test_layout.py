"""The package's layout holds: imports run one way down the layers, no module imports another's
private name, and ``import jaxbasics`` / the CLI's parser stay light."""

import ast
import json
import re
from pathlib import Path

import pytest
from helpers import run_python

PACKAGE = Path(__file__).resolve().parents[1] / "jaxbasics"
#: folder (or root module) -> layer; a module may import its own layer's folder and lower layers
LAYERS = {"": 0, "data": 1, "chapter": 2, "gpt": 2, "compare": 3, "bench": 4, "cli": 5}


def _layer_of(module: str) -> tuple[int, str]:
    """(layer, folder) of a dotted module name under jaxbasics."""
    parts = module.split(".")[1:]
    folder = parts[0] if parts and parts[0] in LAYERS else ""
    return LAYERS[folder], folder


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every ``import jaxbasics...`` / ``from jaxbasics... import ...``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jaxbasics"):
            names = [a.name for a in node.names]
            if node.module == "jaxbasics":  # from jaxbasics import checks, ...: the modules
                found += [(f"jaxbasics.{n}", []) for n in names]
            else:
                found.append((node.module, names))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("jaxbasics")]
    return found


def test_imports_run_one_way_and_never_reach_a_private_name():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.as_posix() in ("__init__.py", "__main__.py"):  # the lazy public names of every
            continue  # layer, and `python -m jaxbasics` (the CLI)
        own = "jaxbasics." + ".".join(rel.with_suffix("").parts)
        layer, folder = _layer_of(own)
        for module, names in _imports(path):
            their_layer, their_folder = _layer_of(module)
            if their_layer > layer or (their_layer == layer and folder != their_folder):
                wrong.append(f"{rel} imports {module} (layer {their_layer} > {layer} or a sibling)")
            wrong += [f"{rel} imports the private name {module}.{n}" for n in names
                      if n.startswith("_")]
    assert not wrong, "\n".join(wrong)


def test_private_attributes_of_other_modules_are_not_used():
    """``module._name`` where ``module`` is another jaxbasics module imported by name."""
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        aliases = set(re.findall(r"from jaxbasics[\w.]* import (\w+)", text))
        aliases |= set(re.findall(r"import jaxbasics[\w.]* as (\w+)", text))
        for alias in aliases:
            wrong += [f"{path.relative_to(PACKAGE)}: {m}" for m in
                      re.findall(rf"\b{alias}\._[a-z]\w*", text)]
    assert not wrong, "\n".join(wrong)


#: one interpreter for both lightness tests below: what `import jaxbasics` and the CLI's parser
#: load, dir(), and where the top-level pretraining names come from (which loads them)
LIGHTNESS_PROBE = """
import json, sys
import jaxbasics
before = sorted(sys.modules)
from jaxbasics.cli import build_parser
build_parser()
after_parser = sorted(sys.modules)
listed = dir(jaxbasics)
after_dir = sorted(sys.modules)
names = ['prepare', 'PrepareOptions', 'TokenData', 'PretrainData', 'TrainOptions',
         'Evaluation', 'train', 'evaluate', 'load_run', 'export']
where = {n: getattr(jaxbasics, n).__module__ for n in names}
jaxbasics.GPT_CONFIG_124M, jaxbasics.SimpleNet
assert 'flax' in sys.modules and 'jaxbasics.gpt.config' in sys.modules
print(json.dumps([before, after_parser, after_dir, listed, where]))
"""


@pytest.fixture(scope="module")
def lightness():
    done = run_python(LIGHTNESS_PROBE)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.xdist_group("lightness")
def test_import_and_the_cli_parser_load_no_flax_optax_or_gpt_code(lightness):
    after_import, after_parser = lightness[:2]
    for loaded in (after_import, after_parser):
        heavy = [m for m in loaded if m.split(".")[0] in ("flax", "optax", "torch", "jax")
                 or m.startswith(("jaxbasics.gpt.model", "jaxbasics.gpt.train"))]
        assert not heavy, heavy[:10]


@pytest.mark.xdist_group("lightness")
def test_the_pretraining_api_is_top_level_lazily_and_dir_lists_only_public_names(lightness):
    _, _, after_dir, listed, where = lightness
    assert not [m for m in after_dir if m.startswith(("flax", "optax"))]  # dir() loads none
    assert where == {"prepare": "jaxbasics.data.prepare", "PrepareOptions": "jaxbasics.data.prepare",
                     "TokenData": "jaxbasics.data.batches", "PretrainData": "jaxbasics.gpt.data",
                     "TrainOptions": "jaxbasics.gpt.train", "Evaluation": "jaxbasics.gpt.train",
                     "train": "jaxbasics.gpt.train", "evaluate": "jaxbasics.gpt.evaluate",
                     "load_run": "jaxbasics.gpt.runs", "export": "jaxbasics.gpt.hf"}
    assert not {"Any", "TYPE_CHECKING", "annotations", "importlib", "check_installed"} & set(listed)
    assert all(not n.startswith("_") for n in listed if n != "__version__")
    assert set(where) <= set(listed) and "GPT" in listed and "__version__" in listed
