"""The notebooks (notebooks/): each runs top to bottom at its small size, in a kernel of its own
(nbclient), and fails on any error, its own checks included; the stored copies, which GitHub
shows, hold the chapter's numbers, come from one full-size run of every cell in order and stay
small.

The kernels inherit this process's environment: the small-size switch set here and the
persistent XLA compilation cache that conftest.py sets up for the whole session.
"""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["01_tensors_and_autodiff", "02_backprop_simplenet", "03_gpt2", "04_functional_vs_oop",
         "05_pretraining", "06_jax_for_pytorch_users", "07_devices_and_data_parallelism"]
#: what the stored outputs must show: the chapter's numbers, and that they ran at full size
STORED = {
    "01_tensors_and_autodiff": [
        "dL/dw = -0.0898", "dL/db = -0.0817", "100,000 per-example",
        # float64 differences from 1.1 and 2.2 as written (from float32 inputs: ...27 / ...25)
        "differences, float64 inputs    dL/dw = -0.08982628   dL/db = -0.08166026",
        "tensor2d.reshape(4, 1)   [[1], [2], [3], [4]]",  # the chapter's 2×2, not the book's 2×3
        "operations reach L", "operations reach dL/dw and dL/db"],  # what the drawing counts
    "02_backprop_simplenet": ["2000 steps of 32 examples", "torch.tensor([1.0]):  ValueError",
                              "hidden units with h <= 0 on every example: [0]"],
    "04_functional_vs_oop": ["4 layers, 256 wide", "49 gradients, 49 within 0.001 relative"],
    "03_gpt2": ["163,009,536 untied", "124,412,160 with the head tied",
                "GPT(GPT_CONFIG_124M): 163,009,536 parameters; tied: 124,412,160",
                "1500 updates of 64 sums",
                "(123 + 489 = 612: padded to four digits, 0612, then reversed, 2160)",
                "of 100,000 activations zeroed"],
    "06_jax_for_pytorch_users": ["10 epochs of the appendix-A loop", "traced for shapes: [(3,), (4,)]",
                                 "accuracy: training 100%, test 100%",
                                 "after loading, max |logit difference|:  0.0"],
    "07_devices_and_data_parallelism": [
        "CPU devices: cpu:0, cpu:1", "eight devices: 1 all-reduce", "one device: 0 all-reduce",
        "300 steps: loss", "fsdp=8: loss", "data=2,fsdp=2,tensor=2: loss"],
    "05_pretraining": ["corpus: the whole standard library", "300 steps of 32×128 tokens",
                       "the whole validation split, stride 64"],
}
MAX_BYTES = 1_000_000
README = NOTEBOOKS.parent / "README.md"


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def _text(output: dict) -> str:
    """The text an output shows: a stream, or the plain/HTML form of a result or display."""
    if output["output_type"] == "stream":
        return output["text"]
    data = output.get("data", {})
    return "\n".join(data.get(kind, "") for kind in ("text/plain", "text/html"))


def _code_cells(nb: nbformat.NotebookNode) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom_at_its_small_size(name, monkeypatch):
    monkeypatch.setenv("JAXBASICS_NOTEBOOK_SMALL", "1")
    nb = _read(name)
    for cell in _code_cells(nb):
        cell.outputs, cell.execution_count = [], None
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    cells = _code_cells(nb)
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    assert all(c.outputs for c in cells), "a code cell showed nothing"
    assert "size: small" in _text(cells[0].outputs[0])  # the switch reached the kernel


@pytest.mark.parametrize("name", NAMES)
def test_stored_notebook_holds_the_chapters_numbers_from_one_full_run(name):
    path = NOTEBOOKS / f"{name}.ipynb"
    assert path.stat().st_size < MAX_BYTES, f"{path.name} is {path.stat().st_size:,} bytes"
    nb = _read(name)
    nbformat.validate(nb)
    cells = _code_cells(nb)
    # every code cell run once, in order, in one session, and showing something
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1))
    for i, cell in enumerate(cells):
        assert cell.outputs, f"code cell {i} of {name} has no stored output"
        assert not [o for o in cell.outputs if o["output_type"] == "error"], \
            f"code cell {i} of {name} stored an error"
        assert not [o for o in cell.outputs if o.get("name") == "stderr"], \
            f"code cell {i} of {name} stored a warning or other stderr"
    text = "\n".join(_text(o) for c in cells for o in c.outputs)
    assert "size: full" in text
    for expected in STORED[name]:
        assert expected in text, f"{name}'s stored outputs lack {expected!r}"
    if name == "04_functional_vs_oop":  # every row of the comparison table within tolerance
        assert re.search(r"\b(\d+) of \1 rows within tolerance", text)
    if name == "05_pretraining":  # BPE beats bytes per byte, while training and on the whole split
        for pattern in (r"validation bits per byte at step 300: BPE ([\d.]+), bytes ([\d.]+)",
                        r"per byte of held-out text: BPE ([\d.]+) bits, bytes ([\d.]+) bits"):
            found = re.search(pattern, text)
            assert found, f"{name}'s stored outputs lack {pattern!r}"
            bpe, byte_level = map(float, found.groups())
            assert 0 < bpe < byte_level < 8, (pattern, bpe, byte_level)
        for run in ("BPE", "bytes"):  # each run's last sample printed, and not blank
            sample = re.search(rf"--- sample \({run}, from 'def ', step 300\):\ndef (.*?)\n\n", text,
                               re.DOTALL)
            assert sample and sample.group(1).strip(), f"{name}'s stored outputs lack the {run} sample"
    # the pictures are inside the notebook, as PNG (notebook 6 teaches with printed values)
    pictures = [o for c in cells for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(pictures) >= (0 if name == "06_jax_for_pytorch_users" else 1)


def test_notebooks_form_a_numbered_path_each_linked_from_the_readme_in_order():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == NAMES
    assert [name[:2] for name in NAMES] == [f"{i:02d}" for i in range(1, len(NAMES) + 1)]
    readme = README.read_text()
    places = [readme.find(f"](notebooks/{name}.ipynb)") for name in NAMES]
    assert -1 not in places, f"the README does not link {NAMES[places.index(-1)]}"
    assert places == sorted(places), "the README links the notebooks out of order"
    for i, name in enumerate(NAMES, start=1):  # each notebook's title carries its number
        assert _read(name).cells[0].source.startswith(f"# {i}. "), name


@pytest.mark.parametrize("name", NAMES)
def test_notebook_says_how_to_install_and_asks_for_pytorch_only_where_it_is_imported(name):
    """A learner without PyTorch runs every cell that does not need it."""
    nb = _read(name)
    # the README's install command, which puts PyTorch's pinned CPU build first
    install = re.search(r'^python -m pip install .*"\.\[notebooks\]"', README.read_text(), re.MULTILINE)
    assert install and f"`{install.group()}`" in nb.cells[0].source, \
        f"{name}'s first cell does not give the README's install command"
    cells = _code_cells(nb)
    assert "require_torch" not in cells[0].source  # the size cell runs without PyTorch
    asked = False
    for i, cell in enumerate(cells):
        needs = re.search(r"^\s*(import torch\b|from jaxbasics\.compare\.\w+ import)",
                          cell.source, re.MULTILINE)  # PyTorch, or the code that imports it
        asked = asked or "require_torch()" in cell.source
        # a cell asks for PyTorch only where it imports it, and before any import of it
        assert bool(needs) == ("require_torch()" in cell.source) or (needs and asked), \
            f"code cell {i} of {name}: require_torch() without import torch, or the reverse"
        if needs:
            assert cell.source.find("require_torch()") < needs.start(), (name, i)
