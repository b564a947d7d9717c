"""Policies for stacks that compress days into seconds (the demo, the flow tests, the scale-out run)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import yaml

from models import parse_duration

# The notices a compressed stack drops: a standard change's 48 h (the specification's "notify stakeholders 48 hours
# in advance") would hold every change such a stack runs for two days. Longer ones (a major change's 14 days) stay:
# a run waits them out only after an early start, as in production. The notice itself is proved on the shipped
# policy with a set clock (tests/integration/test_bypass.py).
COMPRESSED_NOTICE = timedelta(hours=48)


def compress_notice(config: Path) -> None:
    """Drop, in config/policies.yaml, every type's notice up to COMPRESSED_NOTICE."""
    path = config / "policies.yaml"
    policies = yaml.safe_load(path.read_text())
    for policy in policies["types"].values():
        notice = parse_duration(policy.get("notice", "0s"))
        if isinstance(notice, timedelta) and notice <= COMPRESSED_NOTICE:
            policy["notice"] = "0s"
    path.write_text(yaml.safe_dump(policies, sort_keys=False))
