"""Prompt and response texts, and their token ids: the one place where text meets the tokenizer.

Prompt and response are tokenized separately and concatenated, so the response token ids seen in
training are exactly the ids the catalogue prefix tree constrains decoding to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PromptTemplate:
    """``template`` gets ``{instruction}`` and ``{history}``; ``item_line`` gets ``{index}``, ``{title}``."""

    instruction: str
    item_line: str
    template: str
    response_prefix: str = " "

    def prompt(self, history_titles: Sequence[str]) -> str:
        lines = "\n".join(self.item_line.format(index=i + 1, title=t) for i, t in enumerate(history_titles))
        return self.template.format(instruction=self.instruction, history=lines)

    def prompt_ids(self, tokenizer, history_titles: Sequence[str]) -> list[int]:
        return tokenizer(self.prompt(history_titles)).input_ids

    def response_ids(self, tokenizer, title: str) -> list[int]:
        """Title tokens plus EOS: the EOS closes the item, so no title is a prefix of another."""
        ids = tokenizer(self.response_prefix + title, add_special_tokens=False).input_ids
        return [*ids, tokenizer.eos_token_id]
