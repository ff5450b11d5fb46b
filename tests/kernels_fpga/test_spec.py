"""kernels_fpga.spec: shipped specs load; malformed specs fail with file, line, field and what is expected."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from bench.errors import UsageError
from kernels_fpga.spec import SPEC_DIR, TAGS, DeviceSpec, SpecError, load_spec

SHIPPED = ("u55c", "u280", "v80", "u55c-100gbe")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_specs_load_with_a_source_and_tag_on_every_figure(name):
    spec = load_spec(name)
    assert isinstance(spec, DeviceSpec) and spec.name == name
    assert spec.sha256 == hashlib.sha256((SPEC_DIR / f"{name}.yaml").read_bytes()).hexdigest()
    assert len(spec.fields()) > 40
    for field in spec.fields():
        q = spec.quantity(field)
        assert q.source and q.tag in TAGS
        assert spec.source_of(field).endswith(f"[{q.tag}]")


def test_u55c_values_match_hardware_reference():
    spec = load_spec(SPEC_DIR / "u55c.yaml")
    assert spec.value("clock.kernel_default") == 250e6 and spec.value("clock.kernel_max") == 300e6
    assert spec.value("hbm.pseudo_channels") == 32
    assert spec.value("hbm.bw_per_pc") == pytest.approx(12.292e9)
    assert spec.value("hbm.bw_per_pc_theoretical") * 32 == pytest.approx(460e9)
    assert spec.value("pe.topk_ii") == 1 and spec.value("pe.fill_latency") == 71
    assert not spec.has("pe.n_pe") and not spec.has("pe.macs_per_cycle")  # kernel structure: bench_params.h
    assert spec.quantity("power.static").range == (14.5, 21.8)
    assert spec.quantity("launch.free_running").tag == "UNVERIFIED"
    assert spec.default_link == "p2p" and spec.link_modes == ("p2p", "host")
    assert load_spec("u55c-100gbe").default_link == "network"


def test_unknown_field_lists_neighbours():
    spec = load_spec("u55c")
    with pytest.raises(KeyError, match=r"hbm\.bw_per_pc"):
        spec.value("hbm.bandwidth")
    assert not spec.has("hbm.bandwidth") and spec.has("hbm.capacity")


def test_unknown_shipped_name_lists_the_shipped_specs():
    with pytest.raises(UsageError, match="u280"):
        load_spec("u999")


def write_variant(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    """A copy of u55c.yaml with one line replaced; returns the path and that line's 1-based number."""
    lines = (SPEC_DIR / "u55c.yaml").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(old))
    lines[at] = new
    path = tmp_path / "variant.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path, at + 1


def test_missing_field_names_file_field_and_expectation(tmp_path):
    path, line = write_variant(tmp_path, "  pseudo_channels:", "  # pseudo_channels removed")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    e = err.value
    assert e.field == "hbm.pseudo_channels" and e.file == str(path)
    assert e.line == line - 1  # reported at the enclosing 'hbm:' section, the nearest line that exists
    assert "missing" in str(e) and "unit: count" in str(e)
    assert isinstance(e, UsageError) and e.exit_code == 2


def test_wrong_type_gives_the_line_and_a_yaml_exponent_hint(tmp_path):
    path, line = write_variant(
        tmp_path, "  kernel_max:", '  kernel_max: {value: 3.0e8, unit: Hz, source: "UG1393", tag: doc}')
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert err.value.line == line and err.value.field == "clock.kernel_max"
    assert "non-negative number" in str(err.value) and "1.0e+9" in str(err.value)
    assert str(err.value).startswith(f"{path}:{line}: clock.kernel_max:")


@pytest.mark.parametrize(("replacement", "expected"), [
    ('  hbm_axi: {value: 4.5e+8, unit: Hz, tag: doc}', "without a source"),
    ('  hbm_axi: {value: 4.5e+8, unit: Hz, source: "x", tag: guessed}', "tag one of"),
    ('  hbm_axi: {value: 4.5e+8, source: "x", tag: doc}', "without a unit"),
    ('  hbm_axi: 4.5e+8', "bare number"),
    ('  hbm_axi: {value: 4.5e+8, unit: Hz, source: "x", tag: doc, range: [5.0, 1.0]}', "low <= high"),
    ('  hbm_axi: {value: 4.5e+8, unit: Hz, source: "x", tag: doc, confidence: high}', "unknown keys"),
])
def test_bad_figures_are_rejected_at_their_line(tmp_path, replacement, expected):
    path, line = write_variant(tmp_path, "  hbm_axi:", replacement)
    with pytest.raises(SpecError, match=expected) as err:
        load_spec(path)
    assert err.value.line == line and err.value.field == "clock.hbm_axi"


def test_wrong_unit_is_rejected(tmp_path):
    path, line = write_variant(
        tmp_path, "  kernel_max:", '  kernel_max: {value: 300.0, unit: MHz, source: "UG1393", tag: doc}')
    with pytest.raises(SpecError, match="expected unit 'Hz', got 'MHz'") as err:
        load_spec(path)
    assert err.value.line == line


def test_bad_piecewise_segments_are_rejected(tmp_path):
    text = (SPEC_DIR / "u55c.yaml").read_text().replace("[[128, 0.0572196, 0.146988822], [null, 0.0, 4.0]]",
                                                         "[[128, 0.0572196, 0.146988822], [256, 0.0, 4.0]]")
    path = tmp_path / "seg.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match="piecewise segments") as err:
        load_spec(path)
    assert err.value.field == "link.p2p.to_fpga"


def test_link_default_must_be_a_defined_section(tmp_path):
    path, line = write_variant(tmp_path, "  default: p2p", "  default: network")
    with pytest.raises(SpecError, match="link sections present") as err:
        load_spec(path)
    assert err.value.line == line


def test_unsafe_yaml_tags_are_not_constructed(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("name: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(path)


def test_unreadable_file(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "absent.yaml")
