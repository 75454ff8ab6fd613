"""write_report on real run directories: what it writes, what the page holds, the CLI command."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
import torch
from PIL import Image

from tripletkit.cli import main as cli_main
from tripletkit.report import CONTENT_SECURITY_POLICY, write_report

FIGURES = ("curves", "histograms", "roc", "map", "gallery")


class _Page(HTMLParser):
    """The tags of a page with their attributes, and the text of each table cell."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _page(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


def test_train_writes_a_self_contained_report_and_the_pngs(digits_run):
    html = (digits_run / "report.html").read_text()
    page = _page(html)
    for key in FIGURES:
        png = (digits_run / f"report-{key}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), key
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    assert len(images) == len(FIGURES)
    assert all(a["src"].startswith("data:image/png;base64,") and a.get("alt") for a in images)
    csp = [a for tag, a in page.tags if tag == "meta" and a.get("http-equiv")]
    assert csp == [{"http-equiv": "Content-Security-Policy", "content": CONTENT_SECURITY_POLICY}]
    # Nothing that could reach out: no external src/href, no scripts, no stylesheets to fetch.
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE)
    assert not [tag for tag, _ in page.tags if tag in ("script", "link", "iframe", "object")]


def test_the_overlap_numbers_are_stated_and_are_areas(digits_run):
    html = (digits_run / "report.html").read_text()
    overlaps = re.findall(r"distance overlap, (before|after) training<b>([0-9.]+)</b>", html)
    assert [name for name, _ in overlaps] == ["before", "after"]
    assert all(0.0 <= float(value) <= 1.0 for _, value in overlaps)
    assert "Overlap area of the positive- and negative-pair histograms" in html


def test_per_class_table_is_worst_first_and_matches_the_evaluation(digits_run):
    from tripletkit.evaluation import evaluate_retrieval
    from tripletkit.inference import load_run
    from tripletkit.training.build import build_run

    page = _page((digits_run / "report.html").read_text())
    table = next(
        t for t in page.tables if t and t[0][:5] == ["class", "name", "items", "Recall@1", "MAP@R"]
    )
    rows = table[1:]
    assert sorted(int(r[0]) for r in rows) == [5, 6, 7, 8, 9]  # the held-out digits
    map_at_r = [float(r[4].rstrip("%")) for r in rows]
    assert map_at_r == sorted(map_at_r)
    # Independently: embed the validation set with the saved model and evaluate per class.
    run = load_run(digits_run)
    validation = build_run(run.config).data.validation
    loader = torch.utils.data.DataLoader(validation, batch_size=256)
    labels = np.asarray(validation.labels)
    result = evaluate_retrieval(run.model.embed(loader), labels)
    for row in rows:
        label = int(row[0])
        assert int(row[2]) == int((labels == label).sum())
        assert float(row[4].rstrip("%")) == pytest.approx(
            100 * result.per_class["map_at_r"][label], abs=0.006
        )


def test_report_states_the_run_config_data_and_timings(digits_run):
    page = _page((digits_run / "report.html").read_text())
    cells = {row[0]: row[1:] for table in page.tables for row in table if len(row) >= 2}
    assert cells["data.dataset"] == ['"digits"']
    assert cells["data.batches_per_epoch"] == ["6"]
    assert cells["train classes"] == ["0, 1, 2, 3, 4"]
    assert cells["skipped files"] == ["0"]
    assert cells["training (total)"][0].endswith(" s")
    assert cells["report: report (total)"][0].endswith(" s")


def test_cli_report_rewrites_the_report(digits_run, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(digits_run, copy)
    (copy / "report.html").unlink()
    assert cli_main(["report", str(copy), "--tsne", "--tsne-items", "60"]) == 0
    assert f"report: {copy / 'report.html'}" in capsys.readouterr().out
    html = (copy / "report.html").read_text()
    assert "448 (per-class table), 448 (figures)" in html  # every validation item of digits 5-9
    # The t-SNE panel is drawn into the map figure (the title is inside the PNG, not the HTML).
    assert "Right: t-SNE (keeps neighbourhoods, not distances)." in html
    with_tsne = Image.open(copy / "report-map.png").size
    without = Image.open(digits_run / "report-map.png").size
    assert with_tsne[0] > 1.5 * without[0] and with_tsne[1] == without[1]


def test_cli_report_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path)]) == 2  # bad usage: not a run directory
    err = capsys.readouterr().err
    assert "not a run directory" in err and len(err.strip().splitlines()) == 1
    assert cli_main(["report", str(tmp_path), "--max-items", "1"]) == 2
    assert "--max-items must be at least 2" in capsys.readouterr().err


def test_report_of_a_feature_vector_run_has_a_gallery_table(tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tripletkit.training import resolve_config
    from tripletkit.training.build import train

    generator = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 24)
    x = generator.normal(size=(10, 12))[labels] * 2 + generator.normal(size=(240, 12))
    table = pa.table({"label": labels, "features": [row.tolist() for row in x]})
    pq.write_table(table, tmp_path / "features.parquet")
    config = resolve_config(
        overrides={
            "data.dataset": "vectors",
            "data.path": str(tmp_path / "features.parquet"),
            "data.p": 4,
            "data.k": 6,
            "data.batches_per_epoch": 3,
            "train.epochs": 1,
            "train.quiet": True,
            "train.tensorboard": False,
            "train.report": False,
        }
    )
    run_dir = tmp_path / "run"
    train(config, run_dir=run_dir)
    path = write_report(run_dir)
    page = _page(path.read_text())
    images = [a for tag, a in page.tags if tag == "img"]
    assert len(images) == 4  # no picture gallery for vectors ...
    gallery = next(t for t in page.tables if t and t[0][:2] == ["query (class)", "#1"])
    assert len(gallery) == 1 + 8 and all(len(row) == 6 for row in gallery[1:])  # ... a table
    assert all(re.fullmatch(r"item \d+ \(\d+, d=[0-9.]+\)", cell) for cell in gallery[1][1:])
    assert json.loads((run_dir / "summary.json").read_text())["data"]["dataset"] == "vectors"


def test_text_data_gets_its_gallery_as_a_table_of_texts():
    from tripletkit.data import TextDataset
    from tripletkit.report.writer import _gallery

    texts = [f"{kind} number {i}" for kind in ("shoe", "hat", "bag") for i in range(4)]
    dataset = TextDataset(texts, [t.split()[0] for t in texts])
    labels = np.asarray(dataset.labels)
    # Embeddings that put each text next to the others of its class.
    embeddings = torch.nn.functional.one_hot(torch.as_tensor(labels), 3).float()
    embeddings = embeddings + 0.01 * torch.arange(12).float()[:, None]
    table = _gallery(None, dataset, np.arange(12), embeddings, labels, dataset.classes, seed=0)
    assert len(table) == 8
    for row in table:
        assert row["query"] in texts and row["label"] == row["query"].split()[0]
        assert len(row["hits"]) == 5 and row["query"] not in [h["text"] for h in row["hits"]]
        # Three neighbours of its own class, then two of another.
        assert [h["correct"] for h in row["hits"]] == [True, True, True, False, False]
        assert all(h["label"] == h["text"].split()[0] for h in row["hits"])


def test_a_run_without_the_initial_model_says_so_and_shows_after_only(digits_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(digits_run, copy, ignore=shutil.ignore_patterns("model_initial", "report*"))
    html = write_report(copy, max_items=200).read_text()
    assert "no model_initial/ in the run" in html
    assert "distance overlap, after training" in html
    assert "distance overlap, before training" not in html
    assert "MAP@R before training" not in html
    assert Image.open(copy / "report-histograms.png").size[0] < 800  # one panel


@pytest.mark.parametrize("reliable", [True, False])
def test_thresholds_too_few_pairs_can_measure_are_marked(digits_run, tmp_path, reliable):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(digits_run, copy, ignore=shutil.ignore_patterns("report*"))
    calibration = json.loads((copy / "calibration.json").read_text())
    for entry in calibration["thresholds"].values():
        entry["reliable"] = True
    calibration["thresholds"]["0.0001"]["reliable"] = reliable
    (copy / "calibration.json").write_text(json.dumps(calibration))
    html = write_report(copy, max_items=200).read_text()
    assert ("0.0001 *</td>" in html) == (not reliable)
    assert ("Too few different-class validation pairs" in html) == (not reliable)
    # A calibration.json that is not a mapping leaves the table out instead of failing.
    (copy / "calibration.json").write_text("[1, 2]")
    assert "Calibrated verification thresholds" not in write_report(copy, max_items=200).read_text()


def test_a_run_without_its_model_is_refused_with_a_clear_error(digits_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(digits_run, copy, ignore=shutil.ignore_patterns("model", "report*"))
    with pytest.raises(FileNotFoundError, match="did the training run finish"):
        write_report(copy)


def test_report_includes_the_margin_tuning_curve_when_the_run_has_one(digits_run, tmp_path):
    import shutil

    from tripletkit.report import write_report

    run = tmp_path / "tuned"
    shutil.copytree(digits_run, run)
    trials = [
        {
            "distance": "squared_euclidean",
            "margin": m,
            "status": "ok",
            "score": s,
            "score_before": 0.4,
        }
        for m, s in ((0.1, 0.45), (0.2, 0.48), (0.4, 0.46))
    ]
    payload = {
        "trials": trials,
        "best": trials[1],
        "suggestion": {"margin": 0.15, "distance": "squared_euclidean"},
    }
    (run / "margin_tuning.json").write_text(json.dumps(payload))
    html = write_report(run).read_text()
    assert "Margin tuning" in html
    assert (run / "report-margin-tuning.png").stat().st_size > 1000
    assert "Margin tuning" not in (digits_run / "report.html").read_text()


def test_with_a_projector_the_margin_is_not_drawn_on_the_embedding(tmp_path):
    from tripletkit.training import resolve_config
    from tripletkit.training.build import train

    from .conftest import TINY_DIGITS

    run_dir = tmp_path / "run"
    overrides = {**TINY_DIGITS, "model.projector": [16, 8]}
    train(resolve_config(overrides=overrides), run_dir=run_dir)
    html = (run_dir / "report.html").read_text()
    assert "the model trains through a projector" in html
    assert "margin, which applies to the projector" in html and "output, is not drawn" in html
