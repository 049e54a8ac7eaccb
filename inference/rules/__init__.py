"""Candidacy rules: rules files (YAML, with a version) and the pure engine that applies them.

- ``rules_file``: the rules file's keys, their validation, and the `Rules` the engine reads;
- ``engine``: `assess`, built from small pure steps;
- ``progression``: progressing loss, from the intake notes and measured between visits
  (`PriorVisit`, `zone_changes`);
- ``assessment``: what `assess` returns (`Assessment`, `Reason`).

Importing this package never imports torch.
"""

from __future__ import annotations

from scalpscan.inference.rules.assessment import Assessment, Reason
from scalpscan.inference.rules.engine import assess
from scalpscan.inference.rules.progression import PriorVisit, zone_changes
from scalpscan.inference.rules.rules_file import (
    CAUTIONS,
    DECISIONS,
    DEFAULT_RULES_PATH,
    RECOMMENDATIONS,
    Rules,
    RulesError,
    load_rules,
    rules_from_dict,
)

__all__ = [
    "CAUTIONS",
    "DECISIONS",
    "DEFAULT_RULES_PATH",
    "RECOMMENDATIONS",
    "Assessment",
    "PriorVisit",
    "Reason",
    "Rules",
    "RulesError",
    "assess",
    "load_rules",
    "rules_from_dict",
    "zone_changes",
]
