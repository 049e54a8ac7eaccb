"""Candidacy rules: rules files (YAML, with a version) and the pure engine that applies them.

Importing this package never imports torch.
"""

from __future__ import annotations

from scalpscan.inference.rules.engine import (
    CAUTIONS,
    DECISIONS,
    DEFAULT_RULES_PATH,
    RECOMMENDATIONS,
    Assessment,
    Reason,
    Rules,
    RulesError,
    assess,
    load_rules,
    rules_from_dict,
)

__all__ = [
    "CAUTIONS",
    "DECISIONS",
    "DEFAULT_RULES_PATH",
    "RECOMMENDATIONS",
    "Assessment",
    "Reason",
    "Rules",
    "RulesError",
    "assess",
    "load_rules",
    "rules_from_dict",
]
