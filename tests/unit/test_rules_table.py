"""docs/rules.md is generated from the rule enums and the code; CI fails when it is stale."""
from __future__ import annotations

from bft.app import rules_table


def test_docs_rules_md_is_current() -> None:
    assert rules_table.DOC.exists(), "run: python -m bft.app.rules_table --write"
    assert rules_table.DOC.read_text() == rules_table.render(), \
        "docs/rules.md is stale: run python -m bft.app.rules_table --write"


def test_every_rule_cites_a_source_and_is_checked_somewhere() -> None:
    fams, checked, _tested = rules_table.collect()
    assert {f.__name__ for f in fams} >= {"LedgerRule", "StepRule", "RequestRule", "PbftRule"}
    for fam in fams:
        for rule in fam:
            assert rule.text and rule.source, rule.label
            assert checked.get(rule), f"{rule.label} is defined but no code checks it"


def test_the_generator_finds_a_known_check() -> None:
    from bft.pbft.rules import PbftRule
    _fams, checked, tested = rules_table.collect()
    assert "bft.pbft.core.PbftCore._on_pre_prepare" in checked[PbftRule.NOT_FROM_PRIMARY]
    assert any("test_pbft_rules.py" in t for t in tested[PbftRule.NOT_FROM_PRIMARY])
