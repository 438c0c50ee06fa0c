"""Export trained variants as a Triton model repository (Python backend, dynamic batching).

Layout (one model per variant, named ``<name>-small``, ``<name>-int8`` and ``<name>-large``)::

    <repository>/<model>/config.pbtxt
    <repository>/<model>/1/model.py              # triton_model.py
    <repository>/<model>/1/runtime/modelpool/... # vendored modelpool.models code
    <repository>/<model>/1/artifacts/...         # weights + VERSION.json

``VERSION.json`` holds the model digest (SHA-256 over the artifacts and the encoder weights) and the
creation time; capability profiles record both so a stale profile can be detected.

Dynamic batching waits ``max_queue_delay_microseconds`` (default 0) for more requests before a batch
runs: with 0 a lone request runs at once, and requests that queue while the instance is busy still
run together as one batch. A positive delay is worth it only when batches must grow beyond what
queues on its own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from modelpool.models.runtime import Variant

PACKAGE_DIR = Path(__file__).resolve().parent
VERSION_FILE = "VERSION.json"
DEFAULT_MAX_BATCH = 64
DEFAULT_QUEUE_DELAY_US = 0  # a lone request is not held back waiting for company
DEFAULT_TORCH_THREADS = 1  # intra-op threads per model instance; scale with instances/replicas instead
_GPU_CAPABLE = frozenset({Variant.LARGE})


@dataclass(frozen=True)
class ModelVersion:
    """Identity of one exported model."""

    name: str
    variant: Variant
    digest: str
    created: dt.datetime
    num_classes: int

    def to_json(self) -> str:
        """JSON text of this version (``VERSION.json``)."""
        return json.dumps(
            {
                "name": self.name,
                "variant": self.variant.value,
                "digest": self.digest,
                "created": self.created.isoformat(),
                "num_classes": self.num_classes,
            },
            indent=1,
        )


MODEL_SUFFIX = {Variant.SMALL: "small", Variant.QUANTIZED: "int8", Variant.LARGE: "large"}


def model_name(prefix: str, variant: Variant) -> str:
    """Triton model name of ``variant``: ``<prefix>-small``, ``<prefix>-int8`` or ``<prefix>-large``."""
    return f"{prefix}-{MODEL_SUFFIX[variant]}"


def artifact_files(variant: Variant) -> tuple[str, ...]:
    """Files of the trained-model folder that ``variant`` needs."""
    from modelpool.models.large import HEAD_WEIGHTS, LARGE_META
    from modelpool.models.small import SMALL_META, SMALL_WEIGHTS

    return (SMALL_WEIGHTS, SMALL_META) if variant is Variant.SMALL else (HEAD_WEIGHTS, LARGE_META)


def digest_files(paths: Iterable[Path], extra: str = "") -> str:
    """SHA-256 (first 16 hex digits) over the contents of ``paths`` in order, plus ``extra``."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    digest.update(extra.encode())
    return digest.hexdigest()[:16]


def render_config(
    name: str,
    variant: Variant,
    num_classes: int,
    digest: str,
    *,
    gpu: bool,
    max_batch_size: int,
    instances: int = 1,
    torch_threads: int = DEFAULT_TORCH_THREADS,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
) -> str:
    """``config.pbtxt`` text for one variant, following the project's model I/O contract."""
    if queue_delay_us < 0:
        raise ValueError(f"queue delay {queue_delay_us} µs: give 0 or more microseconds")
    kind = "KIND_GPU" if gpu and variant in _GPU_CAPABLE else "KIND_CPU"
    return "\n".join(
        [
            f'name: "{name}"',
            'backend: "python"',
            f"max_batch_size: {max_batch_size}",
            'input [ { name: "TEXT", data_type: TYPE_STRING, dims: [ 1 ] } ]',
            "output [",
            f'  {{ name: "PROBABILITIES", data_type: TYPE_FP32, dims: [ {num_classes} ] }},',
            '  { name: "LABEL", data_type: TYPE_INT64, dims: [ 1 ] }',
            "]",
            f"instance_group [ {{ kind: {kind}, count: {instances} }} ]",
            f"dynamic_batching {{ max_queue_delay_microseconds: {queue_delay_us} }}",
            f'parameters: {{ key: "variant" value: {{ string_value: "{variant.value}" }} }}',
            f'parameters: {{ key: "model_digest" value: {{ string_value: "{digest}" }} }}',
            f'parameters: {{ key: "torch_threads" value: {{ string_value: "{torch_threads}" }} }}',
            "",
        ]
    )


def _vendor_runtime(dest: Path) -> None:
    """Copy the ``modelpool.models`` sources the served model imports into ``dest/modelpool``."""
    package = dest / "modelpool"
    (package / "models").mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""Vendored ModelPool runtime for Triton."""\n', encoding="utf-8")
    for source in sorted(PACKAGE_DIR.glob("*.py")):
        if source.name not in {"cli.py", "triton_model.py"}:
            shutil.copy2(source, package / "models" / source.name)


def export_variant(
    trained: Path,
    repository: Path,
    variant: Variant,
    prefix: str,
    *,
    gpu: bool = False,
    max_batch_size: int = DEFAULT_MAX_BATCH,
    instances: int = 1,
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US,
) -> ModelVersion:
    """Write one variant of the trained-model folder ``trained`` into ``repository``."""
    from modelpool.models.encoder import encoder_digest

    sources = [trained / f for f in artifact_files(variant)]
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing} not found: run `modelpool models train --out {trained}` first")
    meta = json.loads(sources[1].read_text(encoding="utf-8"))
    num_classes = len(meta["label_names"])
    extra = variant.value if variant is Variant.SMALL else f"{variant.value}:{encoder_digest()}"
    name = model_name(prefix, variant)
    version = ModelVersion(name, variant, digest_files(sources, extra), dt.datetime.now(dt.UTC), num_classes)
    model_dir = repository / name
    if model_dir.exists():
        shutil.rmtree(model_dir)
    artifacts = model_dir / "1" / "artifacts"
    artifacts.mkdir(parents=True)
    for source in sources:
        shutil.copy2(source, artifacts / source.name)
    (artifacts / VERSION_FILE).write_text(version.to_json(), encoding="utf-8")
    shutil.copy2(PACKAGE_DIR / "triton_model.py", model_dir / "1" / "model.py")
    _vendor_runtime(model_dir / "1" / "runtime")
    config = render_config(
        name,
        variant,
        num_classes,
        version.digest,
        gpu=gpu,
        max_batch_size=max_batch_size,
        instances=instances,
        queue_delay_us=queue_delay_us,
    )
    (model_dir / "config.pbtxt").write_text(config, encoding="utf-8")
    return version


def export_repository(
    trained: Path,
    repository: Path,
    prefix: str = "banking77",
    variants: Iterable[Variant] = tuple(Variant),
    *,
    gpu: bool = False,
    max_batch_size: int = DEFAULT_MAX_BATCH,
    queue_delay_us: int | Mapping[Variant, int] = DEFAULT_QUEUE_DELAY_US,
) -> list[ModelVersion]:
    """Export every variant in ``variants`` from ``trained`` into the Triton repository ``repository``;
    ``queue_delay_us`` is one delay for all or a delay per variant (the default for the others)."""

    def delay(variant: Variant) -> int:
        if isinstance(queue_delay_us, Mapping):
            return queue_delay_us.get(variant, DEFAULT_QUEUE_DELAY_US)
        return queue_delay_us

    repository.mkdir(parents=True, exist_ok=True)
    return [
        export_variant(
            trained,
            repository,
            v,
            prefix,
            gpu=gpu,
            max_batch_size=max_batch_size,
            queue_delay_us=delay(v),
        )
        for v in variants
    ]


def read_version(model_dir: Path) -> ModelVersion:
    """The ``VERSION.json`` of an exported model folder."""
    data = json.loads((model_dir / "1" / "artifacts" / VERSION_FILE).read_text(encoding="utf-8"))
    return ModelVersion(
        data["name"],
        Variant(data["variant"]),
        data["digest"],
        dt.datetime.fromisoformat(data["created"]),
        int(data["num_classes"]),
    )


def read_label_names(model_dir: Path) -> tuple[str, ...]:
    """The label names an exported model answers with (index ``i`` of ``PROBABILITIES`` is label ``i``),
    from its artifacts (``small.json``, or ``large.json`` for the int8 and large variants)."""
    from modelpool.models.large import LARGE_META
    from modelpool.models.small import SMALL_META

    variant = read_version(model_dir).variant
    meta = model_dir / "1" / "artifacts" / (SMALL_META if variant is Variant.SMALL else LARGE_META)
    return tuple(json.loads(meta.read_text(encoding="utf-8"))["label_names"])


def read_instance_device(model_dir: Path) -> str:
    """Where Triton runs the model's instances by its ``config.pbtxt``: ``gpu`` when an instance group
    is ``KIND_GPU``, ``auto`` for ``KIND_AUTO`` or no kind, else ``cpu``."""
    kinds = set(re.findall(r"\bkind\s*:\s*KIND_([A-Z]+)", (model_dir / "config.pbtxt").read_text("utf-8")))
    if "GPU" in kinds:
        return "gpu"
    if not kinds or "AUTO" in kinds:
        return "auto"
    return "cpu"


def gpu_available() -> bool:
    """Whether torch sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
