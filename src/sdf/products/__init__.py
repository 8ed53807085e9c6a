"""The products sdf builds, in one registry: name -> the module that declares it.

Each product module declares a `PRODUCT`: its stages, in pipeline order, as data (a stage name and
the function that runs it over a `Run`). The CLI looks up the run's product here and calls its
stages by name, so every stage command works on every product. A third product is one module with
a `PRODUCT` plus its prompts, and one line below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sdf.errors import SdfError

# name -> module; imported on first use so that the CLI starts without loading every product
REGISTRY = {"documents": "sdf.products.documents", "advice": "sdf.products.transcripts"}
# Every stage a product may declare, in pipeline order; the commands of the CLI run these by name.
STAGE_NAMES = ("plan", "generate", "extract", "filter", "judge", "decontaminate", "dedup", "diversity", "pack",
               "report")


@dataclass(frozen=True)
class Stage:
    name: str  # one of STAGE_NAMES
    run: Callable[..., Any] | None  # None: the stage runs inside the one before it (the judge inside filter)
    doc: str = ""
    # With `reads`, the stage is skipped when what it reads (RunDir attributes), the settings and sdf are
    # unchanged since it last completed and what it writes (RunDir attributes, and the rejects of `drops`)
    # is as it left it (sdf.executors.local.skipping).
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    drops: tuple[str, ...] = ()


@dataclass(frozen=True)
class Product:
    name: str
    item: str  # what one row is called in messages: "documents", "chats"
    stages: tuple[Stage, ...]
    usage_estimate: Callable[..., dict[str, Any]]  # (run, specs) -> tokens and USD, before anything is sent
    final: str  # the RunDir attribute of the final items (corpus, sft)
    extras: dict[str, Any] = field(default_factory=dict)
    # executor kind -> the module whose `<stage>_stage` functions run this product's stages there; a stage
    # the module lacks runs locally. "local" is the stages above and needs no entry.
    executors: dict[str, str] = field(default_factory=dict)

    def stage(self, name: str) -> Callable[..., Any]:
        return self.declared(name).run  # type: ignore[return-value]

    def declared(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name and s.run is not None:
                return s
        raise SdfError(f"the {self.name} product has no {name} stage")

    def has(self, name: str) -> bool:
        return any(s.name == name for s in self.stages)


def product(name: str) -> Product:
    """The product called `name`; an unknown one is a one-line error listing the known ones."""
    if name not in REGISTRY:
        raise SdfError(f"unknown product {name!r}; known products: {', '.join(REGISTRY)}")
    found = importlib.import_module(REGISTRY[name]).PRODUCT
    assert isinstance(found, Product) and [s.name for s in found.stages] == sorted(
        (s.name for s in found.stages), key=STAGE_NAMES.index), f"{name}: stages out of pipeline order"
    return found


def product_of(run: Any) -> Product:
    """The product a run holds (its config.toml's [run].product)."""
    return product(run.settings.run.product)


def check_executor(prod: Product, kind: str) -> None:
    """A one-line error when `prod` has no stages for executor `kind`, or the executor is not installed."""
    if kind != "local" and kind not in prod.executors:
        raise SdfError(f"the {kind} executor does not run {prod.name} runs yet; use --executor local")
    from sdf.executors import require

    require(kind)


def stage_of(run: Any, name: str) -> Callable[..., Any]:
    """The function that runs stage `name` of the run's product on the run's executor ([executor].kind),
    skipped when nothing it depends on changed since it last completed (see `Stage.reads`)."""
    from sdf.executors.local import skipping

    prod, kind = product_of(run), run.settings.executor.kind
    declared = prod.declared(name)
    fn = declared.run
    if kind != "local":
        check_executor(prod, kind)
        fn = getattr(importlib.import_module(prod.executors[kind]), f"{name}_stage", None) or fn
    if not declared.reads:
        return fn  # type: ignore[return-value]

    def writes() -> list[Any]:
        return [getattr(run.dir, a) for a in declared.writes] + [run.dir.rejects(s) for s in declared.drops]

    return skipping(run, name, declared.reads, writes, fn)  # type: ignore[arg-type]
