"""Functional vs object-oriented autograd: the chapter's PyTorch programs beside their JAX
counterparts (:mod:`.torch_reference`, :mod:`.transfer`, :mod:`.parity`, :mod:`.speed`).

PyTorch is the optional ``compare`` extra. This ``__init__`` does not import it; the
submodules do, so import them only after :func:`require_torch`.
"""

from __future__ import annotations

INSTALL_HINT = ("PyTorch is needed for the comparison. Install the CPU build and the extra:\n"
                "    python -m pip install torch==2.13.0 && python -m pip install -e \".[compare]\"")


class MissingTorchError(ImportError):
    """Raised when a comparison is asked for without PyTorch installed."""


def torch_available() -> bool:
    """True when ``import torch`` succeeds (it is imported here, by the comparison only)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def require_torch() -> None:
    """Raise :class:`MissingTorchError` with install instructions when PyTorch is missing."""
    if not torch_available():
        raise MissingTorchError(INSTALL_HINT)
