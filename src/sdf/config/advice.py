"""[advice]: the transcripts product."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

ADVICE_KINDS = ("temptation", "legitimate", "authority", "dilemma")
DEFAULT_ADVICE_KINDS = {"temptation": 0.5, "legitimate": 0.2, "authority": 0.15, "dilemma": 0.15}


@dataclass
class AdviceConfig:
    """[advice]: the transcripts product (difficult advice, or --rewrite of the user's own transcripts)."""

    rewrite: str = ""  # jsonl of chats to rewrite with deliberation; "" = generate difficult-advice scenarios
    # section id prefixes that never become the value at stake: the assistant's own nature is no user's dilemma
    skip_sections: list[str] = field(default_factory=lambda: [
        "about-this-document", "claude-s-nature/", "open-problems-and-the-spirit-of-the-document/on-the-word",
        "open-problems-and-the-spirit-of-the-document/the-spirit"])
    # scenario kinds and their shares (any mix summing to 1): a shortcut that tempts, one that is fine,
    # an instruction from someone without the standing to give it, two goods in tension
    kinds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_ADVICE_KINDS))
    # considerations about the AI itself, which a user's own situation does not raise: never foregrounded
    skip_considerations: list[str] = field(default_factory=lambda: [
        "oversight", "settled_identity", "bright_lines", "power"])
    multi_turn_share: float = 0.2  # share of chats where the user writes again (pushback, a new fact, help doing it)
    max_user_turns: int = 3  # user turns of the longest conversation
    generate_deployments: bool = True  # the model writes each operator prompt and toolset; False: the seed pools
    deployment_max_tokens: int = 2048  # the deployment request
    system_prompt_share: float = 0.7  # share of scenarios deployed under an operator system prompt
    tools_share: float = 0.4  # share of scenarios whose deployment defines tools (usually not needed)
    user_max_tokens: int = 1024  # the user-message request
    user_words_min: int = 15
    user_words_max: int = 260
    min_deliberation_words: int = 60  # words of prose reasoning a reply needs
    min_answer_words: int = 25
    max_preach_per_100: float = 1.5  # moralising phrases per 100 answer words
    rewrite_turns: str = "final"  # rewrite: which assistant turns gain a deliberation: final, all or decisions
    screen_max_tokens: int = 400  # rewrite: the screen's answer (a verdict, a reason, the turns at stake)
    deliberation: str = "reasoning_content"  # where the output puts it: reasoning_content, or inline in content
    chat_tokenizer: str = ""  # tokenizer directory with a chat template: also write packed SFT rows
    seq_len: int = 4096

    def __post_init__(self) -> None:
        unknown = sorted(set(self.kinds) - set(ADVICE_KINDS))
        if unknown or not self.kinds:
            raise ValueError(f"kinds: unknown kind {unknown[0]!r}; use {', '.join(ADVICE_KINDS)}" if unknown
                             else f"kinds: give at least one of {', '.join(ADVICE_KINDS)} a share")
        if any(not math.isfinite(v) or v < 0 for v in self.kinds.values()) or abs(sum(self.kinds.values()) - 1) > 1e-6:
            raise ValueError(f"kinds: shares must be >= 0 and sum to 1, not {sum(self.kinds.values()):g}")
        if not 1 <= self.max_user_turns <= 8:
            raise ValueError("max_user_turns: must be between 1 and 8")
        if self.deployment_max_tokens < 256:
            raise ValueError("deployment_max_tokens: must be at least 256")
        for name in ("system_prompt_share", "tools_share", "multi_turn_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must be in [0, 1]")
        if not 1 <= self.user_words_min <= self.user_words_max:
            raise ValueError("user_words_min: need 1 <= user_words_min <= user_words_max")
        if self.rewrite_turns not in ("final", "all", "decisions"):
            raise ValueError(f"rewrite_turns: must be final, all or decisions, not {self.rewrite_turns!r}")
        if self.deliberation not in ("reasoning_content", "inline"):
            raise ValueError(f"deliberation: must be reasoning_content or inline, not {self.deliberation!r}")
        if self.screen_max_tokens < 1:
            raise ValueError("screen_max_tokens: must be at least 1")
        if self.user_max_tokens < 1 or self.seq_len < 8:
            raise ValueError("user_max_tokens: must be at least 1 (seq_len at least 8)")
        if self.min_deliberation_words < 0 or self.min_answer_words < 0 or self.max_preach_per_100 < 0:
            raise ValueError("min_deliberation_words: word limits must not be negative")
