"""Figures: files written from the fixture and a CPU run, skipped with reasons, readable in greyscale."""

import logging

import pytest

from bench.report import figures as figs

NAMES = [name for name, _, _ in figs.FIGURES]


def _files(paths):
    return sorted(p for p in paths if p.parent.name == "figures")


def test_every_figure_is_written_as_png_and_pdf(html_report):
    files = _files(html_report)
    assert [p.name for p in files] == sorted(f"{n}.{ext}" for n in NAMES for ext in ("png", "pdf"))
    for p in files:
        data = p.read_bytes()
        assert len(data) > 5000
        assert data.startswith(b"\x89PNG" if p.suffix == ".png" else b"%PDF")


def test_a_cpu_run_skips_the_energy_figure_and_keeps_the_rest(md_report):
    names = {p.stem for p in _files(md_report)}
    assert names == set(NAMES) - {"energy_breakdown"}
    assert len(_files(md_report)) == 2 * len(names)


def test_skipped_and_failing_figures_are_logged_and_the_others_written(tmp_path, tiny_run, monkeypatch,
                                                                        caplog):
    def broken(runs, ctx):
        raise RuntimeError("boom")

    monkeypatch.setattr(figs, "FIGURES", (("broken", "Broken", broken),
                                          ("energy_breakdown", "Energy", figs.energy_breakdown),
                                          ("headline", "Headline", figs.headline)))
    with caplog.at_level(logging.WARNING, logger="bench.report"):
        results, _ = figs.write_figures(figs.load_runs([tiny_run]), tmp_path, formats=("png",))
    by_name = {r.name: r for r in results}
    assert by_name["broken"].skipped == "failed to draw: RuntimeError: boom" and not by_name["broken"].paths
    assert "no energy in any run: gpu: no GPU" in by_name["energy_breakdown"].skipped
    assert by_name["headline"].paths == [tmp_path / "headline.png"] and by_name["headline"].skipped is None
    assert by_name["headline"].provenance == ["emulated", "measured"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "figure broken skipped: failed to draw" in logged and "figure energy_breakdown skipped" in logged


def test_one_context_length_or_one_batch_size_skips_those_figures(fixture_run):
    (run,) = figs.load_runs([fixture_run])
    run.rows = [r for r in run.rows if r["context"] == 16384 and r["batch"] == 1]
    with pytest.raises(figs.FigureSkipped, match="single context length"):
        figs.step_breakdown([run], {})
    with pytest.raises(figs.FigureSkipped, match="single batch size"):
        figs.batch_scaling([run], {})


def test_no_baseline_skips_the_headline_with_the_reason(tiny_run):
    (run,) = figs.load_runs([tiny_run])
    for row in run.rows:
        for m in ("speedup", "energy_reduction"):
            row["figures"][m] = {**row["figures"][m], "ratio": None,
                                 "reason": "no 'baseline' placement in this run"}
    with pytest.raises(figs.FigureSkipped, match="no 'baseline' placement"):
        figs.headline([run], {})


def test_series_of_several_runs_are_labelled_by_device(fixture_run, tiny_run):
    runs = figs.load_runs([fixture_run, tiny_run])
    assert [r.label for r in runs] == ["NVIDIA H200", tiny_run.meta()["gpu"]["name"]]
    built = figs.headline(runs, {})
    labels = built.fig.axes[0].get_legend_handles_labels()[1]
    assert "hetero (emulated) [NVIDIA H200]" in labels
    assert any(label.startswith("hetero (emulated) [") and "H200" not in label for label in labels)
    assert built.provenance == {"measured", "emulated"}
    twice = figs.load_runs([fixture_run, fixture_run])
    assert twice[0].label == twice[1].label == f"NVIDIA H200 {fixture_run.run_id}"


def test_series_differ_without_colour():
    styles = [figs.series_style(i) for i in range(16)]
    assert len({(s["face"], s["hatch"]) for s in styles}) == 16
    assert len({s["marker"] for s in styles[:8]}) == 8 and len({str(s["linestyle"]) for s in styles[:7]}) == 7
    assert all(float(s["face"]) in {float(g) for g in figs.GREYS} for s in styles)  # grey levels only
