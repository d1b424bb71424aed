"""`overparam toy2d` end to end: outputs, determinism, the lr grid and option errors."""

from __future__ import annotations

import json
import logging

import pytest

from overparam.cli import main
from overparam.errors import EXIT_USAGE, ConfigError
from overparam.toy2d import Toy2dConfig, run_experiment
from overparam.toy2d.config import MODELS

SMALL = ["--runs", "2", "--steps", "40"]


def test_same_seed_same_results_bytes(tmp_path):
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert main(["toy2d", *SMALL, "--seed", "3", "--out", str(first)]) == 0
    assert main(["toy2d", *SMALL, "--seed", "3", "--out", str(second)]) == 0
    assert main(["toy2d", *SMALL, "--seed", "4", "--out", str(other)]) == 0

    results = (first / "results.json").read_bytes()
    assert results == (second / "results.json").read_bytes()
    assert (first / "results.md").read_bytes() == (second / "results.md").read_bytes()
    assert results != (other / "results.json").read_bytes()
    assert (first / "figure.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "time/total(s)" in json.loads((first / "timing.json").read_text())


def test_results_json_contents(tmp_path):
    config = Toy2dConfig(runs=3, steps=30, lr=0.04, seed=2, samples=2)
    results = run_experiment(config, tmp_path)
    stored = json.loads((tmp_path / "results.json").read_text())

    assert stored == results
    assert stored["settings"]["lr"] == 0.04
    assert stored["settings"]["samples"] == 2
    assert list(stored["models"]) == [spec.key for spec in MODELS]
    for model in stored["models"].values():
        assert len(model["loss_mean"]) == 31
        assert len(model["trajectory"]) == 31
        for low, mean, high in zip(
            model["loss_min"], model["loss_mean"], model["loss_max"], strict=True
        ):
            assert low <= mean <= high
    # Every model starts from the same W0 (up to the rounding of its factors).
    dense = stored["models"]["dense"]
    assert dense["trajectory"][0] == stored["sample"]["start"]
    for model in stored["models"].values():
        assert model["trajectory"][0] == pytest.approx(stored["sample"]["start"], rel=1e-13)
        assert model["loss_mean"][0] == pytest.approx(dense["loss_mean"][0], rel=1e-12)
    assert [claim["claim_id"] for claim in stored["claims"]] == [
        "speed_ordering",
        "matrix_s_slightly_faster",
        "dense_far_behind",
        "trajectory_shapes",
        "float64_plateau",
    ]
    markdown = (tmp_path / "results.md").read_text()
    for claim in stored["claims"]:
        assert f"| {claim['statement']} | **{claim['verdict']}** |" in markdown


def test_lr_grid_reruns_each_rate(tmp_path):
    config = Toy2dConfig(runs=2, steps=30, lr=0.05, lr_grid=(0.05, 0.01))
    results = run_experiment(config, tmp_path)

    assert [entry["lr"] for entry in results["lr_grid"]] == [0.05, 0.01]
    same_rate = results["lr_grid"][0]
    assert same_rate["ranking"] == results["ranking"]
    assert same_rate["verdicts"] == {c["claim_id"]: c["verdict"] for c in results["claims"]}
    # A 5x smaller rate needs more steps (never fewer) for every model.
    slow = results["lr_grid"][1]["speed_steps"]
    for key, steps in same_rate["speed_steps"].items():
        assert slow[key] >= steps
    assert "## Learning-rate grid" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--steps", "0"], "--steps"),
        (["--runs", "0"], "--runs"),
        (["--lr", "0"], "--lr"),
        (["--lr", "-0.1"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--samples", "0"], "--samples"),
        (["--weight-std", "0"], "--weight-std"),
        (["--lr-grid", "0.1,abc"], "--lr-grid"),
        (["--lr-grid", "0.1,-1"], "--lr-grid"),
    ],
)
def test_bad_option_exits_2(tmp_path, caplog, options, named):
    with caplog.at_level(logging.ERROR, logger="overparam"):
        code = main(["toy2d", *options, "--out", str(tmp_path / "out")])
    assert code == EXIT_USAGE
    assert named in caplog.text
    assert not (tmp_path / "out" / "results.json").exists()


def test_out_existing_file_exits_2(tmp_path, caplog):
    existing = tmp_path / "taken"
    existing.write_text("")
    with caplog.at_level(logging.ERROR, logger="overparam"):
        assert main(["toy2d", *SMALL, "--out", str(existing)]) == EXIT_USAGE
    assert "--out" in caplog.text
    assert "not a directory" in caplog.text


def test_out_under_file_exits_2(tmp_path, caplog):
    existing = tmp_path / "taken"
    existing.write_text("")
    with caplog.at_level(logging.ERROR, logger="overparam"):
        assert main(["toy2d", *SMALL, "--out", str(existing / "sub")]) == EXIT_USAGE
    assert "--out" in caplog.text
    assert "cannot write" in caplog.text


def test_out_under_read_only_dir_exits_2(readonly_dir, caplog):
    out = readonly_dir / "out"
    with caplog.at_level(logging.ERROR, logger="overparam"):
        assert main(["toy2d", *SMALL, "--out", str(out)]) == EXIT_USAGE
    assert f"invalid --out '{out}'" in caplog.text
    assert "cannot write there" in caplog.text
    assert not out.exists()


def test_config_error_names_field_and_range():
    with pytest.raises(ConfigError, match=r"steps=0 \(--steps\): expected an integer >= 1"):
        Toy2dConfig(steps=0)
    with pytest.raises(ConfigError, match=r"lr=True"):
        Toy2dConfig(lr=True)
