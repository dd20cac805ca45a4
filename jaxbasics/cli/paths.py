"""Output locations checked before any compute is spent on what goes there (``jaxbasics train
--out``, ``jaxbasics bench --out/--plot``)."""

from __future__ import annotations

from pathlib import Path


def cannot_write(path: Path, is_dir: bool) -> str | None:
    """Why a file at ``path`` (or files in the folder ``path``) cannot be written, or None.
    Creates the missing folders, as the writes later would; leaves no file behind."""
    folder = path if is_dir else path.parent
    probe = folder / f".{path.name}.probe" if is_dir else path.with_name(path.name + ".part")
    try:
        if path.is_dir() and not is_dir:
            return "it is a folder"
        folder.mkdir(parents=True, exist_ok=True)
        probe.touch()
        probe.unlink()
    except (FileExistsError, NotADirectoryError):
        blocker = next(p for p in (folder, *folder.parents) if p.exists())
        return f"{blocker} is a file, not a folder"
    except OSError as err:
        return err.strerror or str(err)
    return None


def require_writable(path: Path, option: str, *, is_dir: bool) -> None:
    """Raise ``ValueError`` ("OPTION PATH: cannot write there (why)") unless
    :func:`cannot_write` finds nothing against ``path``."""
    if (problem := cannot_write(path, is_dir)) is not None:
        raise ValueError(f"{option} {path}: cannot write there ({problem})")
