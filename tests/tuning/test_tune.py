"""tune_margin and the tune-margin / suggest-margin commands, on digits with tiny runs."""

from __future__ import annotations

import json

import pytest
import torch

from tripletkit.cli import main as cli_main
from tripletkit.training import resolve_config
from tripletkit.tuning import check_margin_grid, tune_margin

FAST = {
    "data.dataset": "digits",
    "data.p": 5,
    "data.k": 8,
    "train.epochs": 7,  # the full run's epochs: the trials use their own
    "train.quiet": True,
    "train.tensorboard": False,
}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    out = tmp_path_factory.mktemp("tuning")
    seen = []
    config = resolve_config(overrides=FAST)
    result = tune_margin(
        config,
        [0.05, 0.4],
        ["squared_euclidean", "cosine"],
        epochs=1,
        batches_per_epoch=3,
        out_dir=out,
        progress=lambda trial, index, total: seen.append((trial.margin, index, total)),
    )
    return config, result, out, seen


def test_each_trial_is_a_run_with_its_margin(tuned):
    config, result, out, seen = tuned
    assert seen == [(0.05, 1, 4), (0.4, 2, 4), (0.05, 3, 4), (0.4, 4, 4)]
    for trial in result.trials:
        run = out / trial.run_dir
        saved = json.loads((run / "config.json").read_text())
        assert saved["loss"]["margin"] == trial.margin
        assert saved["loss"]["distance"] == trial.distance
        assert saved["train"]["epochs"] == 1 and saved["data"]["batches_per_epoch"] == 3
        summary = json.loads((run / "summary.json").read_text())
        assert trial.score == summary["after"]["map_at_r"]
        assert trial.score_before == summary["before"]["map_at_r"]
    assert config.loss.margin is None and config.train.epochs == 7  # the input is untouched


def test_json_records_every_trial_and_the_argmax(tuned):
    _, result, out, _ = tuned
    payload = json.loads((out / "margin_tuning.json").read_text())
    assert payload["format"] == "tripletkit.margin_tuning" and payload["version"] == 1
    assert payload["complete"] and payload["metric"] == "map_at_r"
    assert payload["margins"] == [0.05, 0.4]
    assert payload["distances"] == ["squared_euclidean", "cosine"]
    trials = payload["trials"]
    assert [(t["distance"], t["margin"]) for t in trials] == [
        ("squared_euclidean", 0.05),
        ("squared_euclidean", 0.4),
        ("cosine", 0.05),
        ("cosine", 0.4),
    ]
    assert all(t["status"] == "ok" and 0 < t["score"] <= 1 for t in trials)
    scores = [t["score"] for t in trials]
    winner = trials[scores.index(max(scores))]
    assert payload["best"] == {
        "margin": winner["margin"],
        "distance": winner["distance"],
        "score": winner["score"],
        "run_dir": winner["run_dir"],
    }
    assert (result.best.margin, result.best.distance) == (winner["margin"], winner["distance"])
    png = out / payload["plot"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_written_config_loads_with_the_best_margin(tuned, capsys):
    _, result, out, _ = tuned
    loaded = resolve_config([out / "config.json"])
    assert loaded.loss.margin == result.best.margin
    assert loaded.loss.distance == result.best.distance
    assert loaded.train.epochs == 7 and loaded.data.batches_per_epoch is None
    assert loaded.train.run_dir is None
    assert loaded.to_dict() == result.config.to_dict()
    # `tripletkit train OUT/config.json` reads it (the bad override is reported after loading).
    assert cli_main(["train", str(out / "config.json"), "--set", "train.epochs=0"]) == 2
    assert "'train.epochs' must be > 0" in capsys.readouterr().err


def test_resume_reuses_finished_trials_with_the_same_configuration(tuned):
    config, result, out, _ = tuned
    again = tune_margin(
        config,
        [0.05, 0.4],
        ["squared_euclidean", "cosine"],
        epochs=1,
        batches_per_epoch=3,
        out_dir=out,
        progress=False,
        resume=True,
    )
    assert all(t.reused for t in again.trials)
    assert [t.score for t in again.trials] == [t.score for t in result.trials]
    assert (again.best.margin, again.best.distance) == (result.best.margin, result.best.distance)
    # A different configuration (another seed) is trained again, not reused.
    other = resolve_config(overrides={**FAST, "train.seed": 1})
    fresh = tune_margin(
        other, [0.05], epochs=1, batches_per_epoch=3, out_dir=out, progress=False, resume=True
    )
    assert not fresh.trials[0].reused
    assert (
        json.loads((out / fresh.trials[0].run_dir / "config.json").read_text())["train"]["seed"]
        == 1
    )


@pytest.mark.parametrize(
    ("margins", "distances", "message"),
    [
        ([], ["squared_euclidean"], "the margin grid is empty"),
        ([0.1, -0.2], ["squared_euclidean"], "finite numbers >= 0; got -0.2"),
        ([float("nan")], ["cosine"], "finite numbers >= 0"),
        ([0.1, 0.1], ["cosine"], "listed twice"),
        (
            [4.0],
            ["squared_euclidean"],
            r"outside the range of squared_euclidean distances, \[0, 4\]",
        ),
        ([2.5], ["cosine"], r"outside the range of cosine distances, \[0, 2\]"),
        ([0.1], ["manhattan"], "unknown distance 'manhattan'"),
        ([0.1], [], "the distance list is empty"),
    ],
)
def test_bad_grids_are_clear_errors(margins, distances, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        check_margin_grid(margins, distances)
    with pytest.raises(ValueError, match=message):
        tune_margin(resolve_config(overrides=FAST), margins, distances, out_dir=tmp_path)
    assert not (tmp_path / "margin_tuning.json").exists()


def test_unnormalised_models_only_bound_cosine():
    assert check_margin_grid([6.0], ["squared_euclidean"], normalized=False) == (
        [6.0],
        ["squared_euclidean"],
    )
    with pytest.raises(ValueError, match="cosine"):
        check_margin_grid([6.0], ["cosine"], normalized=False)


def test_losses_without_a_margin_are_refused(tmp_path):
    soft = resolve_config(overrides={**FAST, "loss.soft": True})
    with pytest.raises(ValueError, match="soft-margin loss has no margin"):
        tune_margin(soft, [0.1], out_dir=tmp_path)
    info_nce = resolve_config(overrides={**FAST, "loss.name": "info_nce"})
    with pytest.raises(ValueError, match="'info_nce' has no margin to tune"):
        tune_margin(info_nce, [0.1], out_dir=tmp_path)
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        tune_margin(resolve_config(overrides=FAST), [0.1], epochs=0, out_dir=tmp_path)


@pytest.mark.parametrize("precision", [[], ["--precision", "auto"]])
def test_cli_tune_margin_prints_each_trial_and_writes_the_config(tmp_path, capsys, precision):
    out = tmp_path / "tuned"
    data = ["--data", "digits", "--p", "5", "--k", "8", "--set", "train.tensorboard=false"]
    data += precision
    trials = ["--margins", "0.1,0.3", "--trial-epochs", "1", "--trial-batches", "2"]
    code = cli_main(["tune-margin", *data, *trials, "--out", str(out), "--max-items", "300"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "suggested margin" in printed
    assert "trial 1/2: squared_euclidean margin 0.1: validation MAP@R" in printed
    assert "trial 2/2: squared_euclidean margin 0.3: validation MAP@R" in printed
    payload = json.loads((out / "margin_tuning.json").read_text())
    best = payload["best"]
    assert f"best: margin {best['margin']:g} (squared_euclidean)" in printed
    assert payload["suggestion"]["distance"] == "squared_euclidean"
    assert resolve_config([out / "config.json"]).loss.margin == best["margin"]


@pytest.mark.parametrize(
    ("margins", "message"),
    [
        ("", "the margin grid is empty"),
        ("-0.1", "finite numbers >= 0"),
        ("0.1,five", "--margins expects numbers"),
        ("4", "outside the range of squared_euclidean distances"),
    ],
)
def test_cli_tune_margin_bad_grid_exits_2(margins, message, tmp_path, capsys):
    code = cli_main(
        ["tune-margin", "--data", "digits", f"--margins={margins}", "--out", str(tmp_path)]
    )
    assert code == 2
    assert message in capsys.readouterr().err


def test_cli_suggest_margin_prints_the_margin_and_a_grid(tmp_path, capsys):
    out = tmp_path / "suggestion.json"
    data = ["--data", "digits", "--distance", "cosine", "--max-items", "300"]
    code = cli_main(["suggest-margin", *data, "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["distance"] == "cosine" and 0.01 <= saved["margin"] <= 0.5
    assert f"suggested margin {saved['margin']:.4g} for cosine" in printed
    assert "--margins " in printed


def test_cli_tune_margin_train_best_prints_the_run_its_report_and_precision(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    out = tmp_path / "tuned"
    data = ["--data", "digits", "--p", "5", "--k", "8", "--set", "train.tensorboard=false"]
    data += ["--set", "train.epochs=1", "--set", "data.batches_per_epoch=2", "--precision", "auto"]
    trials = ["--margins", "0.1", "--trial-epochs", "1", "--trial-batches", "2", "--train-best"]
    assert cli_main(["tune-margin", *data, *trials, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"run directory: {out}" in printed
    assert "precision: fp32 (train.precision auto)" in printed
    assert f"report: {out / 'report.html'}" in printed
