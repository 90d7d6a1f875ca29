"""``blocks.toml`` decisions at load: ``[experiments.NAME]``, per block ``[blocks.X.variants.NAME]``,
ordered ``[[blocks.X.rules]]`` and ``default``, checked now so a mistake names file, block and rule.

The override model is the same for every kind that has variants (``list`` and ``image``): a variant's
table replaces the block's top-level keys of the same name (``source``, ``fields``, ``fallback``,
``max_items`` of a list; ``layers``, ``background``, ``defaults``, ``link`` of an image, ...), and the
result is validated as a block of that kind, so a variant is never less checked than its block.
Tables are replaced whole, not merged key by key (``fields`` of a variant are all its fields).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from app.decisions.decide import Decider
from app.decisions.experiments import HOLDOUT, Experiment, experiment
from app.decisions.exposure import DEFAULT_VARIANT
from app.decisions.rules import Rule, parse_rule
from app.errors import CampaignError

B = TypeVar("B")
Parse = Callable[[str, dict[str, Any], str], B]
BLOCK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")  # as block names (app.campaigns.loader)
DECISION_KEYS = frozenset({"variants", "rules", "default"})
RESERVED = frozenset({DEFAULT_VARIANT, HOLDOUT})
MAX_VARIANTS = 20
MAX_RULES = 50
EXPERIMENT_KEYS = frozenset({"variants", "holdout_percent", "salt"})


def parse_experiments(spec: Any, campaign: str, where: str) -> dict[str, Experiment]:
    if not isinstance(spec, dict):
        raise CampaignError(f"{where}: expected a table of experiments")
    experiments = {}
    for name, table in spec.items():
        here = f"{where}.{name}"
        if not BLOCK_NAME.fullmatch(name) or not isinstance(table, dict):
            raise CampaignError(f"{here}: experiment names must match {BLOCK_NAME.pattern}, each a table")
        unknown = sorted(set(table) - EXPERIMENT_KEYS)
        if unknown:
            raise CampaignError(f"{here}: unknown key(s) {', '.join(unknown)}")
        weights = table.get("variants")
        if not isinstance(weights, dict) or len(weights) < 1:
            raise CampaignError(f"{here}: variants = {{ a = 50, b = 50 }} (name = weight) is required")
        for variant, weight in weights.items():
            if variant in RESERVED or not BLOCK_NAME.fullmatch(variant):
                raise CampaignError(f"{here}: variant name {variant!r} is reserved or not a valid name")
            if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 < weight <= 1e6:
                raise CampaignError(f"{here}: weight of {variant} must be a number above 0")
        holdout = table.get("holdout_percent", 0)
        if isinstance(holdout, bool) or not isinstance(holdout, int | float) or not 0 <= holdout < 100:
            raise CampaignError(f"{here}: holdout_percent must be a number from 0 to below 100")
        salt = table.get("salt", f"{campaign}/{name}")
        if not isinstance(salt, str) or not salt:
            raise CampaignError(f"{here}: salt must be a non-empty string")
        experiments[name] = experiment(name, {k: float(v) for k, v in weights.items()}, holdout, salt)
    return experiments


def with_decisions(
    name: str,
    spec: dict[str, Any],
    parse: Parse[B],
    experiments: Mapping[str, Experiment],
    where: str,
    *,
    needs_zone_profile: bool,
) -> B:
    """The block parsed by ``parse`` (name, its table without decision keys, where), with its
    ``decider`` when it declares variants or rules. ``needs_zone_profile``: the campaign reads the
    reader's zone from the profile (``zone_field``), so time rules need the profile."""
    own = {k: v for k, v in spec.items() if k not in DECISION_KEYS}
    block = parse(name, own, where)
    if not DECISION_KEYS & set(spec):
        return block
    variants = _variants(name, spec.get("variants", {}), own, parse, where)
    rules = _rules(spec.get("rules", []), variants, experiments, where)
    default = spec.get("default", DEFAULT_VARIANT)
    if default != DEFAULT_VARIANT and default not in variants:
        raise CampaignError(f"{where}: default {default!r} is not one of its variants ({_names(variants)})")
    timed = any(rule.timed for rule in rules)
    decider = Decider(
        block=name,
        rules=rules,
        variants=variants,
        experiments=experiments,
        default=default,
        needs_profile=any(r.needs_profile for r in rules) or (timed and needs_zone_profile),
    )
    return dataclasses.replace(block, decider=decider)  # type: ignore[type-var]


def _variants(name: str, spec: Any, own: dict[str, Any], parse: Parse[B], where: str) -> dict[str, B]:
    if not isinstance(spec, dict) or len(spec) > MAX_VARIANTS:
        raise CampaignError(f"{where}.variants: expected at most {MAX_VARIANTS} tables")
    variants = {}
    for variant, overrides in spec.items():
        here = f"{where}.variants.{variant}"
        if variant in RESERVED or not BLOCK_NAME.fullmatch(variant):
            message = f"variant names must match {BLOCK_NAME.pattern} (not default, holdout)"
            raise CampaignError(f"{here}: {message}")
        if not isinstance(overrides, dict):
            raise CampaignError(f"{here}: expected a table of the block's keys to override")
        if "kind" in overrides or DECISION_KEYS & set(overrides):
            raise CampaignError(f"{here}: a variant cannot change kind, variants, rules or default")
        merged = {**own, **overrides}
        variants[variant] = parse(f"{name}~{variant}", merged, here)
    return variants


def _rules(
    spec: Any, variants: Mapping[str, Any], experiments: Mapping[str, Experiment], where: str
) -> tuple[Rule, ...]:
    if not isinstance(spec, list) or len(spec) > MAX_RULES:
        raise CampaignError(f"{where}.rules: expected at most {MAX_RULES} [[blocks.X.rules]] tables")
    rules = []
    for index, table in enumerate(spec):
        here = f"{where}.rules[{index}]"
        if not isinstance(table, dict):
            raise CampaignError(f"{here}: expected a table")
        rule = parse_rule(index, table, here)
        if rule.variant is not None and rule.variant != DEFAULT_VARIANT and rule.variant not in variants:
            raise CampaignError(f"{here}: variant {rule.variant!r} is not one of {_names(variants)}")
        if rule.experiment is not None:
            known = experiments.get(rule.experiment)
            if known is None:
                raise CampaignError(f"{here}: experiment {rule.experiment!r} is not in [experiments]")
            missing = [v for v in known.variants if v not in variants]
            if missing:
                raise CampaignError(
                    f"{here}: experiment {rule.experiment!r} assigns {', '.join(missing)}, "
                    f"which this block does not declare as variants"
                )
        rules.append(rule)
    return tuple(rules)


def _names(variants: Mapping[str, Any]) -> str:
    return ", ".join(["default", *variants]) or "default"
