"""One block's decision (pure): which of its variants an open gets, and why.

A block with variants or rules carries a ``Decider`` (``block.decider``); a block without has None,
and the open-time path checks only that attribute. ``decide`` walks the rules in order; the first
whose conditions hold chooses a variant, or an experiment's assignment for the recipient (no
recipient, as with a campaign-wide token: the block's default). No rule: the block's ``default``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from app.decisions.context import OpenContext
from app.decisions.experiments import HOLDOUT, Experiment
from app.decisions.rules import Rule

B = TypeVar("B")
# What templates see as ``variant`` for a block without a decision.
DEFAULT_PICKS = {"name": "default", "experiment": None, "rule": None, "why": "no rules"}


@dataclass(slots=True)
class Decision(Generic[B]):  # slotted, not frozen: built per decided open (see OpenContext)
    block: B  # the content to serve: the chosen variant's block (the block itself for the default)
    variant: str  # a variant name, "default" or "holdout"
    experiment: str | None
    rule: int | None  # index of the rule that chose, None when none matched (the default)
    why: str  # for the preview: the rule as written, or "no rule matched"

    def picks(self) -> dict[str, Any]:
        """What templates see as ``variant`` (``variant.name``, ``variant.experiment``, ...)."""
        return {"name": self.variant, "experiment": self.experiment, "rule": self.rule, "why": self.why}


@dataclass(frozen=True, slots=True)
class Decider(Generic[B]):
    block: str
    rules: tuple[Rule, ...]
    variants: Mapping[str, B]  # variant name -> the block with that variant's overrides
    experiments: Mapping[str, Experiment]
    default: str  # the variant shown when no rule matches ("default": the block's own content)
    needs_profile: bool  # a rule reads a profile field (or a time rule needs the profile's zone)

    def decide(self, base: B, context: OpenContext) -> Decision[B]:
        for rule in self.rules:
            if not rule.matches(context):
                continue
            if rule.experiment is None:
                assert rule.variant is not None
                return self._decision(base, rule.variant, None, rule.index, rule.summary)
            if context.recipient is None:
                continue  # nobody to assign: the next rule, or the default
            variant = self.experiments[rule.experiment].assign(context.recipient)
            return self._decision(base, variant, rule.experiment, rule.index, rule.summary)
        return self._decision(base, self.default, None, None, "no rule matched")

    def _decision(
        self, base: B, variant: str, experiment: str | None, rule: int | None, why: str
    ) -> Decision[B]:
        # "default" shows the block itself; the holdout sees what nobody's rule chose (the default).
        shown = self.variants.get(self.default if variant == HOLDOUT else variant, base)
        return Decision(shown, variant, experiment, rule, why)


def cached_names(blocks: Mapping[str, Any]) -> list[str]:
    """Every name content is cached under: each block's, and its variants' (``<block>~<variant>``)."""
    names = []
    for name, block in blocks.items():
        names.append(name)
        decider = block.decider
        if decider is not None:
            names.extend(variant.name for variant in decider.variants.values())
    return names


def decide_all(blocks: Iterable[Mapping[str, Any]], context: OpenContext) -> dict[str, Decision[Any]]:
    """Every deciding block's decision for one context (send time, the web view, the preview)."""
    decided: dict[str, Decision[Any]] = {}
    for group in blocks:
        for name, block in group.items():
            if block.decider is not None:
                decided[name] = block.decider.decide(block, context)
    return decided
