"""Which executor runs the filter, dedup and pack stages: `local` (sdf.executor, streaming in this
process) or `ray` (sdf.executors.ray, the same steps on Ray Data). Both write the same artifacts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from sdf.config import Settings
from sdf.errors import SdfError

KINDS = ("local", "ray")
RAY_INSTALL = "pip install 'sdf[ray]'"


class Stages(NamedTuple):
    filter: Callable[..., dict[str, Any]]  # (run, backend=None, progress=True)
    dedup: Callable[..., dict[str, Any]]  # (run)
    pack: Callable[..., dict[str, Any]]  # (run, progress=True)


def require_ray() -> None:
    """Fail in one line, before any work, when Ray is asked for but not installed."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        raise SdfError(f"--executor ray needs Ray Data, which is not installed: {RAY_INSTALL}") from None


def stages_for(settings: Settings) -> Stages:
    """The documents product's filter, dedup and pack stages on the executor `[executor].kind` names."""
    if settings.executor.kind == "ray":
        require_ray()
        from sdf.executors import ray

        return Stages(ray.filter_stage, ray.dedup_stage, ray.pack_stage)
    from sdf.products import documents

    return Stages(documents.filter_stage, documents.dedup_stage, documents.pack_stage)
