"""docs/configuration.md documents every parameter and every output of template.yaml, by name."""

from __future__ import annotations

import re
from typing import Any

from tests.test_template import ROOT, template  # noqa: F401 - the parsed template fixture
from trailgeo.app.runtime import REASONS

CONFIGURATION = ROOT / "docs" / "configuration.md"
COST = ROOT / "docs" / "cost-and-capacity.md"


def table_names(markdown: str, heading: str) -> set[str]:
    """The names in the first column of the tables of the section whose title starts with ``heading``."""
    match = re.search(
        rf"^## {re.escape(heading)}[^\n]*\n(.*?)(?=^## |\Z)", markdown, re.MULTILINE | re.DOTALL
    )
    assert match, f"docs/configuration.md has no '## {heading}' section"
    return set(re.findall(r"^\| `(\w+)` \|", match.group(1), re.MULTILINE))


def test_given_the_template_then_configuration_md_documents_each_parameter_and_output_and_no_other(
    template: dict[str, Any],  # noqa: F811
) -> None:
    markdown = CONFIGURATION.read_text(encoding="utf-8")
    differences = {}
    for heading, section in (("Template parameters", "Parameters"), ("Stack outputs", "Outputs")):
        declared, documented = set(template[section]), table_names(markdown, heading)
        differences[section] = {
            "undocumented": sorted(declared - documented),
            "not in template.yaml": sorted(documented - declared),
        }
    empty = {"undocumented": [], "not in template.yaml": []}
    assert differences == {"Parameters": empty, "Outputs": empty}


def test_given_the_reason_registry_then_the_cost_page_counts_its_custom_metrics_from_it() -> None:
    markdown = COST.read_text(encoding="utf-8")
    counted = {}
    for name in REASONS:
        row = re.search(rf"^\| `{name}` \| `service`, `reason` \| \d+: (\d+) reasons", markdown, re.MULTILINE)
        counted[name] = int(row.group(1)) if row else None
    assert counted == {name: len(reasons) for name, reasons in REASONS.items()}
