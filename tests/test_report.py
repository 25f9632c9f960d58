"""``tacfn report``: paper-ready tables and figures, read back from the files it writes.

The numbers of the Markdown, LaTeX and CSV tables are checked against what the dashboard
computes for the same store (:func:`dashboards.ablation_table`, the chosen trial's row);
the LaTeX compiles where a TeX engine is installed; the SVGs parse and the PNGs are PNGs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import polars as pl
import pytest
from _stores import write_ablation_store, write_search_store

import dashboards
from dashboards._report_tables import _get_ablation_report_info, latex_escape, to_latex
from dashboards.report import write_report
from tacfn.cli import main
from tacfn.errors import ConfigError, DataError
from tacfn.outputs import check_output_folder
from tacfn.store import ExperimentStore

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TEX_ENGINES = ("pdflatex", "lualatex", "tectonic")
ABLATION_FILES = ["fusion_ablation-ablation.md", "fusion_ablation-ablation.tex", "fusion_ablation-ablation.csv"]


@pytest.fixture(scope="module")
def ablation_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ablation_store(tmp_path_factory.mktemp("ablation") / "fusion_ablation")


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_search_store(tmp_path_factory.mktemp("search") / "quick", trials=12)


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def markdown_rows(text: str) -> list[list[str]]:
    """The body rows of the Markdown file's table, as cells."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows[2:]]


def latex_rows(text: str) -> list[list[str]]:
    """The tabular's rows (header first), cells with the table's math turned back into text."""
    body = text.split(r"\toprule", 1)[1].split(r"\bottomrule", 1)[0]
    plain = {r"$\pm$": "±", r"$\Delta$": "Δ", "$-$": "-", "$>$": ">", r"\%": "%", r"\_": "_"}
    rows = []
    for line in body.splitlines():
        line = line.strip()
        if not line.endswith(r"\\"):
            continue
        for tex, text_ in plain.items():
            line = line.replace(tex, text_)
        rows.append([cell.strip() for cell in line.removesuffix(r"\\").split("&")])
    return rows


def numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"[-+]?\d+\.\d+|[-+]?\d+", cell.replace(",", ""))]


# --- the ablation table ------------------------------------------------------------------------------


def test_the_ablation_tables_hold_the_dashboards_numbers(ablation_dir: Path, tmp_path: Path) -> None:
    report = write_report([ablation_dir], tmp_path / "out", figures=False)
    assert report.files == [*ABLATION_FILES, "report.json"]
    expected = dashboards.ablation_table(dashboards.load_experiment(ablation_dir))
    assert expected is not None

    csv = pl.read_csv(tmp_path / "out" / "fusion_ablation-ablation.csv")
    assert set(csv["metric"]) == {"test_score"} and set(csv["baseline"]) == {"tacfn"}
    for column in expected.columns:  # unrounded, every column the dashboard computes
        got, want = csv[column].to_list(), expected[column].to_list()
        if expected[column].dtype == pl.Utf8:
            got = [g or "" for g in got]
            want = [w or "" for w in want]
        assert got == want, column

    md = markdown_rows((tmp_path / "out" / "fusion_ablation-ablation.md").read_text())
    tex = latex_rows((tmp_path / "out" / "fusion_ablation-ablation.tex").read_text())
    header, *tex = tex
    assert header[:3] == ["variant", "n pairs", "mean ± std"] and header[-1] == "verdict"
    for rows in (md, tex):
        assert [r[0] for r in rows] == expected["variant"].to_list()
        for row, want in zip(rows, expected.iter_rows(named=True)):
            variant, n, mean_std, base, diff_ci, prob, p_holm, verdict = row
            assert (int(n), verdict) == (want["n"], want["verdict"])
            assert numbers(mean_std) == pytest.approx([round(want["mean"], 3), round(want["std"], 3)])
            if want["verdict"] == "baseline":
                assert base == diff_ci == prob == p_holm == ""
                continue
            assert numbers(base) == pytest.approx([round(want["baseline_mean"], 3)])
            assert numbers(diff_ci) == pytest.approx([round(want[k], 3) for k in ("diff", "ci_low", "ci_high")])
            assert numbers(prob) == pytest.approx([round(100 * want["prob_improvement"])])
            assert float(p_holm) == pytest.approx(want["p_holm"], rel=1e-2)
    # the store's planted effects, as the table reads them
    diffs = dict(zip(expected["variant"], expected["diff"]))
    assert diffs["modality_dropout"] == pytest.approx(0.05, abs=0.01) and diffs["late_average"] == pytest.approx(-0.05, abs=0.01)


def test_the_latex_is_booktabs_with_every_name_escaped(ablation_dir: Path, tmp_path: Path) -> None:
    """Variant names with LaTeX's special characters typeset as written; where a TeX engine
    is installed, a document that inputs the table compiles."""
    exp = dashboards.load_experiment(ablation_dir)
    odd = {"no_selection": "no_sel & 50% #1", "late_average": "late~{avg}^2 $x$ \\o/"}
    exp = dataclasses.replace(
        exp,
        trials=exp.trials.with_columns(pl.col("variant").replace(odd)),
        spec={**exp.spec, "variants": {odd.get(k, k): v for k, v in exp.spec["variants"].items()}},
    )
    tex = to_latex(_get_ablation_report_info(exp), "tab:odd")
    assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == 1 and tex.count(r"\midrule") == 1
    assert r"no\_sel \& 50\% \#1" in tex and r"late\textasciitilde{}\{avg\}\textasciicircum{}2 \$x\$ \textbackslash{}o/" in tex
    table = tex.split(r"\begin{table}", 1)[1].split(r"\end{table}", 1)[0].replace("{%\n", "{\n")  # the resizebox's own %
    assert not re.search(r"(?<!\\)[_&%#]", table.replace(" & ", " ")), "an unescaped special character"
    assert latex_escape("a_b ± 0.5, -0.02 [-0.1, +0.2], P(Δ > 0)") == r"a\_b $\pm$ 0.5, $-$0.02 [$-$0.1, +0.2], P($\Delta$ $>$ 0)"
    engine = next((e for e in TEX_ENGINES if shutil.which(e)), None)
    if engine is None:
        pytest.skip(f"no TeX engine on PATH ({', '.join(TEX_ENGINES)}): the LaTeX is checked as text only")
    (tmp_path / "table.tex").write_text(tex)
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{graphicx}\n"
        "\\begin{document}\n\\input{table.tex}\nSee Table~\\ref{tab:odd}.\n\\end{document}\n"
    )
    argv = [engine, "doc.tex"] if engine == "tectonic" else [engine, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"]
    done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_a_report_imports_neither_torch_nor_ray(ablation_dir: Path, tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from dashboards.report import write_report\n"
        f"write_report([{str(ablation_dir)!r}], {str(tmp_path / 'out')!r}, figures=False)\n"
        "loaded = [m for m in ('torch', 'ray') if m in sys.modules]\n"
        "assert not loaded, f'write_report loaded {loaded}'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "fusion_ablation-ablation.tex").is_file()


# --- the chosen configuration --------------------------------------------------------------------------


def test_a_search_reports_its_chosen_configuration(search_dir: Path, tmp_path: Path) -> None:
    report = write_report([search_dir], tmp_path / "out", figures=False)
    assert report.files == ["quick-chosen.md", "quick-chosen.tex", "quick-chosen.csv", "report.json"]
    exp = dashboards.load_experiment(search_dir)
    chosen = exp.trials.filter(pl.col("chosen")).to_dicts()
    assert len(chosen) == 1
    row = chosen[0]
    csv = pl.read_csv(tmp_path / "out" / "quick-chosen.csv", infer_schema=False)
    assert csv.columns == ["section", "name", "searched", row["trial_id"]]
    values = dict(zip(csv["name"], csv[row["trial_id"]]))
    for key in ("model.fusion.name", "train.lr", "model.modality_dropout.audio"):  # what the search sampled
        sampled = row[f"param.{key}"]
        assert values[key] == (str(sampled) if isinstance(sampled, str) else repr(float(sampled)))
    assert int(values["train.batch_size"]) == row["param.train.batch_size"]
    assert float(values["validation val_score"]) == row["val_score"] and float(values["test score"]) == row["test_score"]
    assert float(values["test score without audio"]) == row["test_missing_audio"]
    assert int(values["parameters"]) == row["num_parameters"]
    if row["param.model.fusion.heads"] is None:  # a block without attention: heads not sampled
        assert values["model.fusion.heads"] is None

    md = {r[0]: r for r in markdown_rows((tmp_path / "out" / "quick-chosen.md").read_text())}
    assert md["test score"][2] == f"{row['test_score']:.3f}" and md["parameters"][2] == f"{row['num_parameters']:,}"
    assert md["train.lr"][1] == "[0.0001, 0.01], log" and md["train.lr"][2] == f"{row['param.train.lr']:.4g}"
    tex = {r[0]: r for r in latex_rows((tmp_path / "out" / "quick-chosen.tex").read_text())}
    assert tex["test score"][2] == md["test score"][2] and tex[r"train.batch_size"][2] == md["train.batch_size"][2]


def test_a_search_not_yet_chosen_has_no_table_and_says_why(tmp_path: Path) -> None:
    running = write_search_store(tmp_path / "running", trials=12, recorded=8)
    notes: list[str] = []
    with pytest.raises(DataError, match="nothing to report: .*no configuration is chosen yet"):
        write_report([running], tmp_path / "out", figures=False, on_note=notes.append)
    assert not (tmp_path / "out").exists()
    ablation = write_ablation_store(tmp_path / "abl")
    report = write_report([running, ablation], tmp_path / "out", figures=False, on_note=notes.append)
    assert report.files == [*ABLATION_FILES, "report.json"]
    assert "quick: In progress: 8 trials finished of 12 planned, 0 running. The views show finished trials only." in notes
    assert (
        "quick: chosen configuration: no configuration is chosen yet "
        "(the search chooses and tests one once every trial has finished)"
    ) in notes


# --- the output folder ---------------------------------------------------------------------------------


def test_out_is_new_or_a_report_and_never_loses_a_file_it_did_not_write(ablation_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "paper"
    write_report([ablation_dir], out, figures=False)
    assert json.loads((out / "report.json").read_text())["files"] == sorted(ABLATION_FILES)
    (out / "fusion_ablation-ablation.md").write_text("stale")
    write_report([ablation_dir], out, figures=False)  # a report folder: its own files are replaced
    assert (out / "fusion_ablation-ablation.md").read_text().startswith("## fusion_ablation: ablation table")

    mine = tmp_path / "mine"  # a folder of the user's own: the report goes beside its files
    mine.mkdir()
    (mine / "paper.tex").write_text("my paper")
    write_report([ablation_dir], mine, figures=False)
    assert (mine / "paper.tex").read_text() == "my paper"

    taken = tmp_path / "taken"  # ... but a name the report would write is refused, whole
    taken.mkdir()
    (taken / "fusion_ablation-ablation.csv").write_text("my numbers")
    before = snapshot(taken)
    with pytest.raises(ConfigError, match=r"fusion_ablation-ablation.csv exists and tacfn report did not write it; nothing is written"):
        write_report([ablation_dir], taken, figures=False)
    assert snapshot(taken) == before

    before = snapshot(ablation_dir)
    with pytest.raises(ConfigError, match=r"holds an experiment \(experiment.json\), not a tacfn report"):
        write_report([ablation_dir], ablation_dir, figures=False)
    assert snapshot(ablation_dir) == before
    (out / "report.json").write_text("{")
    with pytest.raises(ConfigError, match="report.json is unreadable"):
        write_report([ablation_dir], out, figures=False)
    with pytest.raises(ConfigError, match="is named twice"):
        write_report([ablation_dir, ablation_dir], tmp_path / "twice", figures=False)
    with pytest.raises(ConfigError, match=r"holds a tacfn report \(report.json\), not a training run"):
        check_output_folder(mine, "--out", own="run")  # and other commands leave a report alone
    assert not (tmp_path / "twice").exists()


def test_experiments_of_one_name_get_files_of_their_own(ablation_dir: Path, tmp_path: Path) -> None:
    twin = write_ablation_store(tmp_path / "twin", seed=1)  # also named fusion_ablation
    report = write_report([ablation_dir, twin], tmp_path / "out", figures=False)
    assert report.files == [*ABLATION_FILES, *(f.replace("fusion_ablation", "fusion_ablation-2") for f in ABLATION_FILES), "report.json"]
    first, second = (pl.read_csv(tmp_path / "out" / name) for name in ("fusion_ablation-ablation.csv", "fusion_ablation-2-ablation.csv"))
    assert first["mean"].to_list() != second["mean"].to_list()


def test_without_kaleido_or_a_browser_the_tables_are_written_and_a_note_says_why(
    ablation_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    earlier = tmp_path / "a"  # an earlier report's figure: it would stand beside newer tables
    earlier.mkdir()
    (earlier / "fusion_ablation-forest.svg").write_text("<svg/>")
    (earlier / "report.json").write_text(json.dumps({"files": ["fusion_ablation-forest.svg"]}))
    monkeypatch.setitem(sys.modules, "kaleido", None)  # import kaleido raises ImportError
    assert main(["report", str(ablation_dir), "--out", str(tmp_path / "a")]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "tacfn: note: figures not written (fusion_ablation: forest plot, learning curves, confusion matrix): "
        "kaleido, Plotly's image export, is not installed; pip install 'kaleido>=1.0,<2' (tacfn's report extra) adds it"
    ]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted([*ABLATION_FILES, "report.json"])
    assert out.splitlines()[0] == f"report: 4 files in {tmp_path / 'a'}"

    monkeypatch.delitem(sys.modules, "kaleido")
    pytest.importorskip("kaleido", reason="kaleido (the report extra) is not installed")
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "no-such-chrome"))
    assert main(["report", str(ablation_dir), "--out", str(tmp_path / "b")]) == 0
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("tacfn: note: figures not written") and "found no Chrome or Chromium" in line and "apt-get install chromium" in line
    assert not list((tmp_path / "b").glob("*.svg"))


def test_a_folder_that_is_not_an_experiment_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    with pytest.raises(DataError, match=r"is not a tacfn experiment folder \(no experiment.json\)"):
        write_report([tmp_path / "notes"], tmp_path / "out")
    empty = tmp_path / "empty"
    ExperimentStore.create(empty, "ablation", "empty", {"baseline": "tacfn"})
    with pytest.raises(DataError, match="nothing to report: empty: No trials recorded yet"):
        write_report([empty], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- figures, end to end ----------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.slow  # starts a headless Chromium (through kaleido)
def test_tacfn_report_end_to_end_writes_svg_and_png_figures(ablation_dir: Path, search_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("kaleido", reason="kaleido (the report extra) is not installed")
    out = tmp_path / "paper"
    done = subprocess.run(
        [sys.executable, "-m", "tacfn.cli", "report", str(ablation_dir), str(search_dir), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    notes = [line for line in done.stderr.splitlines() if line.strip()]
    assert all(line.startswith("tacfn: note: ") for line in notes), done.stderr
    if any("figures not written" in line for line in notes):
        pytest.skip(f"kaleido could not start a browser here: {notes}")
    figures = ["fusion_ablation-forest", "fusion_ablation-curves", "fusion_ablation-confusion", "quick-curves", "quick-confusion"]
    listed = done.stdout.splitlines()
    assert listed[0] == f"report: {len(listed) - 1} files in {out}"
    files = [line.strip() for line in listed[1:]]
    assert sorted(files) == sorted(p.name for p in out.iterdir())
    assert set(files) == {*ABLATION_FILES, "quick-chosen.md", "quick-chosen.tex", "quick-chosen.csv", "report.json",
                          *(f"{f}.{fmt}" for f in figures for fmt in ("svg", "png"))}
    for figure in figures:
        root = ET.parse(out / f"{figure}.svg").getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        width, height = float(root.attrib["width"]), float(root.attrib["height"])
        assert png_size((out / f"{figure}.png").read_bytes()) == (2 * width, 2 * height)  # PNG at scale 2
    svg = (out / "fusion_ablation-forest.svg").read_text()
    assert all(v in svg for v in ("no_selection", "modality_dropout", "late_average"))
    assert json.loads((out / "report.json").read_text())["files"] == sorted(set(files) - {"report.json"})
