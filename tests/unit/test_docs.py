"""The documentation: the metric reference matches the catalog; links stay in the repository."""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy_pool_exporter.protocol.catalog import CATALOG
from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "metrics.md"


def test_metric_reference_is_generated_from_the_catalog() -> None:
    generator = load_script(ROOT / "scripts" / "metrics_doc.py", "metrics_doc")
    expected = generator.render()
    assert REFERENCE.read_text() == expected, (
        "docs/metrics.md differs from the catalog; regenerate it with: "
        "python scripts/metrics_doc.py --write"
    )
    for row in CATALOG:
        assert f"| `{row.exposed}` |" in expected, row.name


LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_every_relative_link_of_the_docs_resolves_inside_the_repository() -> None:
    documents = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for doc in documents:
        for target in LINK.findall(doc.read_text()):
            if target.startswith(("#", "http://", "https://")):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert broken == []
    assert "](docs/metrics.md)" in (ROOT / "README.md").read_text()
