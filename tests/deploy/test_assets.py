"""``assets --output`` from a source checkout: what it writes and what it refuses to clobber."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlalchemy_pool_exporter.cli import main
from sqlalchemy_pool_exporter.cli.assets import asset_root, is_asset, iter_assets, write_assets
from tests.deploy.tools import ROOT


def test_source_checkout_reads_the_repository_directories() -> None:
    assert asset_root() == ROOT


def test_selection_is_dashboards_provisioning_and_rules_not_tooling() -> None:
    assets = [str(p) for p in iter_assets(ROOT)]
    assert "grafana/dashboards/sqlalchemy-pools.json" in assets
    assert {"prometheus/alerts.yaml", "prometheus/recording.yaml"} <= set(assets)
    assert all(
        p.startswith(("grafana/dashboards/", "grafana/provisioning/", "prometheus/"))
        for p in assets
    )
    assert not is_asset(Path("prometheus/generate.py"))
    assert not is_asset(Path("grafana/dashboards/node_modules/x/package.json"))
    assert not is_asset(Path("prometheus/.hidden.yaml"))
    assert is_asset(Path("prometheus/tests/budget.yaml"))


def test_writes_every_asset_byte_for_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["assets", "--output", str(tmp_path)]) == 0
    expected = list(iter_assets(ROOT))
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / p) for p in expected]
    for relative in expected:
        assert (tmp_path / relative).read_bytes() == (ROOT / relative).read_bytes()
    # Writing again over identical files is fine.
    assert main(["assets", "--output", str(tmp_path)]) == 0


def test_refuses_to_overwrite_edited_files_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_assets(tmp_path)
    edited = tmp_path / "prometheus" / "alerts.yaml"
    edited.write_text("# my local changes\n")
    capsys.readouterr()
    assert main(["assets", "--output", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sqlalchemy-pool-exporter assets: 1 file(s) under ")
    assert "prometheus/alerts.yaml; pass --force to overwrite them" in err
    assert edited.read_text() == "# my local changes\n"
    assert main(["assets", "--output", str(tmp_path), "--force"]) == 0
    assert edited.read_bytes() == (ROOT / "prometheus" / "alerts.yaml").read_bytes()


def test_missing_assets_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no assets under"):
        write_assets(tmp_path / "out", root=tmp_path)
