"""The executors that run a product's filter, dedup and pack stages: `local` (sdf.executors.local, streaming
with worker processes) or `ray` (sdf.executors.ray, the same steps on Ray Data). Both write the same
artifacts. A product names the executors it runs on (`Product.executors`); `sdf.products.stage_of` picks."""

from __future__ import annotations

from sdf.errors import SdfError

KINDS = ("local", "ray")
RAY_INSTALL = "pip install 'sdf[ray]'"


def require(kind: str) -> None:
    """Fail in one line, before any work, when an executor is asked for but not installed."""
    if kind == "ray":
        try:
            import ray.data  # noqa: F401
        except ImportError:
            raise SdfError(f"--executor ray needs Ray Data, which is not installed: {RAY_INSTALL}") from None
