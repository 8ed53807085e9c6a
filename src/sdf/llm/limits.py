"""How much a model can read: a table of context windows, and the check `sdf plan` and `sdf build` make.

A prompt beyond the window is refused by the API on every request, so the plan says so before any
money is spent. The table covers the models sdf prices; `[llm].context_window` overrides it (a newer
model, a long-context beta, an endpoint behind LangChain).
"""

from __future__ import annotations

from sdf.config import LLMConfig

# tokens of prompt plus max_tokens that each model accepts (without long-context betas)
CONTEXT_WINDOWS: dict[str, int] = {
    "claude-opus-4-5": 200_000,
    "claude-opus-4-1": 200_000,
    "claude-opus-4-0": 200_000,
    "claude-sonnet-4-5": 200_000,
    "claude-sonnet-4-0": 200_000,
    "claude-3-7-sonnet-latest": 200_000,
    "claude-haiku-4-5": 200_000,
    "claude-3-5-haiku-latest": 200_000,
}
PROMPT_ALLOWANCE = 4_000  # the per-item prompt beside the shared system prompt: a spec, never this long


def context_window(cfg: LLMConfig) -> int | None:
    """The window of cfg.model: the override, the table's entry (dated snapshots match their alias), or None."""
    if cfg.context_window:
        return cfg.context_window
    if cfg.model in CONTEXT_WINDOWS:
        return CONTEXT_WINDOWS[cfg.model]
    base = next((name for name in CONTEXT_WINDOWS if cfg.model.startswith(name + "-")), None)
    return CONTEXT_WINDOWS[base] if base else None


def context_problem(cfg: LLMConfig, system_tokens: int) -> str:
    """Why requests of this plan cannot fit the model's window ("" when they can, or the window is unknown)."""
    window = context_window(cfg)
    need = system_tokens + PROMPT_ALLOWANCE + cfg.max_tokens
    if window is None or need <= window:
        return ""
    return (f"each request needs about {need:,} tokens (system prompt ~{system_tokens:,} + prompt + max_tokens "
            f"{cfg.max_tokens:,}), beyond the {window:,}-token context window of {cfg.model}: the API would refuse "
            "every request; leave sections out with --exclude-section, lower [llm].max_tokens, or set "
            "[llm].context_window if this model takes more")
