"""FPGA device spec files: load, validate, and give typed access to sourced figures.

A spec file (``kernels_fpga/specs/<name>.yaml``) describes one card for the analytic model
(:mod:`kernels_fpga.model`). Every numeric figure is a mapping::

    bw_per_pc: {value: 12.292e9, unit: B/s, source: "xbtest ... json", tag: repo, note: "...", range: [..]}

``source`` names the document, repository file, issue or paper the figure comes from (as in
``/work/shared/reference/hardware.md``) and ``tag`` its confidence: ``doc`` (vendor documentation),
``meas`` (published measurement), ``repo`` (read from a public repository file), ``derived``
(arithmetic on sourced figures) or ``UNVERIFIED`` (recalled or secondary). ``note`` and ``range``
(``[low, high]``, same unit) are optional. A bare number anywhere in the file is an error: no figure
without a source.

Files are parsed with ``yaml.SafeLoader`` only; errors raise :class:`SpecError` (a
:class:`~bench.errors.UsageError`) naming the file, line, field and what was expected.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.errors import UsageError

#: Folder of the spec files shipped with ``bench``.
SPEC_DIR = Path(__file__).resolve().parent / "specs"

TAGS = ("doc", "meas", "repo", "derived", "UNVERIFIED")
LINK_MODES = ("p2p", "host", "network")
_QUANTITY_KEYS = {"value", "unit", "source", "tag", "note", "range"}


class SpecError(UsageError):
    """A spec file is invalid; the message names the file, line, field and what was expected."""

    def __init__(self, file: str, line: int | None, field: str, message: str) -> None:
        self.file, self.line, self.field, self.detail = file, line, field, message
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


@dataclass(frozen=True)
class _Field:
    """What a required field must hold: ``kind`` is int | float | str | segments; ``unit`` is exact."""

    kind: str
    unit: str | None = None


_COMMON: dict[str, _Field] = {
    "part": _Field("str"),
    "platform": _Field("str"),
    "clock.kernel_default": _Field("float", "Hz"),
    "clock.kernel_max": _Field("float", "Hz"),
    "hbm.pseudo_channels": _Field("int", "count"),
    "hbm.pc_capacity": _Field("int", "B"),
    "hbm.capacity": _Field("int", "B"),
    "hbm.bw_per_pc": _Field("float", "B/s"),
    "hbm.bw_per_pc_theoretical": _Field("float", "B/s"),
    "hbm.bw_total_measured": _Field("float", "B/s"),
    "hbm.random_bw_64b": _Field("float", "B/s"),
    "hbm.random_bw_512b": _Field("float", "B/s"),
    "hbm.random_bw_cross_pc_64b": _Field("float", "B/s"),
    "onchip.bram_bytes": _Field("int", "B"),
    "onchip.uram_bytes": _Field("int", "B"),
    "onchip.bram_bw": _Field("float", "B/s"),
    "onchip.uram_bw": _Field("float", "B/s"),
    "pe.topk_ii": _Field("int", "cycles"),
    "pe.fill_latency": _Field("int", "cycles"),
    "link.host.alpha": _Field("float", "s"),
    "link.host.beta_to_fpga": _Field("float", "B/s"),
    "link.host.beta_to_gpu": _Field("float", "B/s"),
    "link.host.small_transfer_4k": _Field("float", "s"),
    "link.host.gpu_hop_alpha": _Field("float", "s"),
    "launch.host_started": _Field("float", "s"),
    "launch.auto_restart": _Field("float", "s"),
    "launch.free_running": _Field("float", "s"),
    "power.static": _Field("float", "W"),
    "power.hbm_full_rate_board": _Field("float", "W"),
    "power.hbm_full_rate_bw": _Field("float", "B/s"),
    "power.logic_dynamic": _Field("float", "W"),
    "power.logic_dynamic_clock": _Field("float", "Hz"),
    "power.cap": _Field("float", "W"),
    "xclbin_load": _Field("float", "s"),
}

_PER_LINK: dict[str, dict[str, _Field]] = {
    "p2p": {
        "link.p2p.to_fpga": _Field("segments", "KiB -> GiB/s"),
        "link.p2p.to_gpu": _Field("segments", "KiB -> GiB/s"),
        "link.p2p.measured_to_fpga_64mb": _Field("float", "B/s"),
        "link.p2p.measured_to_gpu_64mb": _Field("float", "B/s"),
    },
    "host": {},
    "network": {
        "link.network.alpha": _Field("float", "s"),
        "link.network.beta": _Field("float", "B/s"),
        "link.network.line_rate": _Field("float", "B/s"),
    },
}


@dataclass(frozen=True)
class Quantity:
    """One sourced figure of a spec file.

    Attributes:
        value: The figure (int, float, str, or piecewise segments ``[[upper, slope, intercept], ...]``).
        unit: Its unit as written in the file (``Hz``, ``B/s``, ``s``, ``W``...), or None for text.
        source: Document, file, issue or paper it comes from.
        tag: Confidence tag, one of :data:`TAGS`.
        note: Optional remark (basis of a derived figure, observed spread).
        range: Optional ``(low, high)`` spread in the same unit.
    """

    value: Any
    unit: str | None
    source: str
    tag: str
    note: str | None = None
    range: tuple[float, float] | None = None


class DeviceSpec:
    """A validated spec file with typed access to its figures.

    Attributes:
        path: The file it was loaded from.
        name: Short device name (``u55c``, ``u280``...).
        description: One-line description of the card.
        sha256: Hex SHA-256 of the file bytes, for provenance.
        link_modes: GPU<->FPGA link modes the file defines (subset of :data:`LINK_MODES`).
        default_link: The link mode the model uses unless told otherwise.
    """

    def __init__(self, path: Path, raw: bytes, data: Mapping[str, Any], quantities: dict[str, Quantity]):
        self.path = path
        self.sha256 = hashlib.sha256(raw).hexdigest()
        self.name: str = data["name"]
        self.description: str = data["description"]
        self._quantities = quantities
        link = data["link"]
        self.link_modes: tuple[str, ...] = tuple(m for m in LINK_MODES if m in link)
        self.default_link: str = link["default"]

    def quantity(self, field: str) -> Quantity:
        """The sourced figure at a dotted field path, e.g. ``"hbm.bw_per_pc"``.

        Raises:
            KeyError: The file has no such field (message lists the nearest known fields).
        """
        try:
            return self._quantities[field]
        except KeyError:
            prefix = field.rsplit(".", 1)[0]
            near = sorted(f for f in self._quantities if f.startswith(prefix)) or sorted(self._quantities)
            raise KeyError(f"{self.path.name} has no field {field!r}; known: {', '.join(near[:12])}") from None

    def value(self, field: str) -> Any:
        """The value at a dotted field path, in the unit the file states (see :meth:`quantity`)."""
        return self.quantity(field).value

    def source_of(self, field: str) -> str:
        """Where the figure at ``field`` comes from, with its tag, e.g. ``"UG1393 HBM [doc]"``."""
        q = self.quantity(field)
        return f"{q.source} [{q.tag}]"

    def has(self, field: str) -> bool:
        """Whether the file defines ``field``."""
        return field in self._quantities

    def fields(self) -> list[str]:
        """All dotted field paths that hold sourced figures, in file order."""
        return list(self._quantities)

    def __repr__(self) -> str:
        return f"DeviceSpec({self.name!r}, path={str(self.path)!r}, sha256={self.sha256[:12]})"


def builtin_spec_path(name: str) -> Path:
    """Path of a spec shipped with ``bench`` (``u55c``, ``u280``, ``v80``, ``u55c-100gbe``).

    Raises:
        UsageError: No such spec; the message lists the shipped ones.
    """
    path = SPEC_DIR / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SPEC_DIR.glob("*.yaml")))
        raise UsageError(f"no FPGA spec named {name!r}; shipped specs: {known} (or pass a path to a .yaml)")
    return path


def load_spec(path: str | Path) -> DeviceSpec:
    """Load and validate a spec file.

    Args:
        path: A ``.yaml`` spec file, or the name of a shipped spec (``"u55c"``).

    Returns:
        The validated :class:`DeviceSpec`.

    Raises:
        SpecError: Unreadable file, bad YAML, missing field, wrong type or unit, or a figure without a
            source; the message names file, line, field and what is expected.
    """
    p = Path(path)
    if not p.suffix and not p.exists():
        p = builtin_spec_path(str(path))
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise SpecError(str(p), None, "", f"cannot read the spec file ({exc.strerror})") from None
    text = raw.decode("utf-8", errors="replace")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise SpecError(str(p), line, "", f"not valid YAML: {getattr(exc, 'problem', exc)}") from None
    lines = dict(_node_lines(root, "")) if root is not None else {}
    return _validate(p, raw, data, lines)


def _node_lines(node: yaml.Node, prefix: str) -> Iterator[tuple[str, int]]:
    """Yield (dotted path, 1-based line) for every mapping key under ``node``."""
    if isinstance(node, yaml.MappingNode):
        for key, child in node.value:
            path = f"{prefix}.{key.value}" if prefix else str(key.value)
            yield path, key.start_mark.line + 1
            yield from _node_lines(child, path)


def _validate(path: Path, raw: bytes, data: Any, lines: dict[str, int]) -> DeviceSpec:
    file = str(path)

    def fail(field: str, message: str) -> SpecError:
        parent = field
        while parent and parent not in lines:
            parent = parent.rpartition(".")[0]
        return SpecError(file, lines.get(parent), field, message)

    if not isinstance(data, dict):
        raise fail("", "expected a mapping of fields at the top level")
    for key in ("name", "description"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise fail(key, "expected a non-empty string")
    link = data.get("link")
    if not isinstance(link, dict):
        raise fail("link", f"expected a mapping with a 'default' and at least one of {', '.join(LINK_MODES)}")
    modes = [m for m in LINK_MODES if m in link]
    if not modes:
        raise fail("link", f"expected at least one link section: {', '.join(LINK_MODES)}")
    if link.get("default") not in modes:
        raise fail("link.default", f"expected one of the link sections present ({', '.join(modes)}), "
                                   f"got {link.get('default')!r}")

    quantities: dict[str, Quantity] = {}
    _collect(data, "", quantities, fail)

    required = dict(_COMMON)
    for mode in modes:
        required.update(_PER_LINK[mode])
    for field, want in required.items():
        if field not in quantities:
            unit = f", unit: {want.unit}" if want.unit else ""
            raise fail(field, f"missing; expected {{value: <{want.kind}>{unit}, source: ..., tag: ...}}")
        _check_kind(field, quantities[field], want, fail)
    return DeviceSpec(path, raw, data, quantities)


def _collect(node: Any, prefix: str, out: dict[str, Quantity], fail: Any) -> None:
    """Walk the parsed YAML; every mapping with a ``value`` key is a sourced figure."""
    if isinstance(node, dict):
        if "value" in node:
            out[prefix] = _quantity(prefix, node, fail)
            return
        for key, child in node.items():
            _collect(child, f"{prefix}.{key}" if prefix else str(key), out, fail)
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        raise fail(prefix, f"bare number {node!r} has no source; expected {{value: {node!r}, unit: ..., "
                           "source: ..., tag: ...}")
    elif isinstance(node, list):
        raise fail(prefix, "bare list has no source; wrap it as {value: [...], unit: ..., source: ..., tag: ...}")


def _quantity(field: str, node: dict[str, Any], fail: Any) -> Quantity:
    extra = set(node) - _QUANTITY_KEYS
    if extra:
        raise fail(field, f"unknown keys {sorted(extra)}; allowed: {sorted(_QUANTITY_KEYS)}")
    source = node.get("source")
    if not isinstance(source, str) or not source.strip():
        raise fail(field, "value without a source; expected source: \"<document, file, issue or paper>\"")
    tag = node.get("tag")
    if tag not in TAGS:
        raise fail(field, f"expected tag one of {', '.join(TAGS)}, got {tag!r}")
    unit = node.get("unit")
    if unit is not None and not isinstance(unit, str):
        raise fail(field, f"expected unit to be a string, got {unit!r}")
    value = node["value"]
    if _is_number(value) and unit is None:
        raise fail(field, "numeric value without a unit; expected unit: <Hz | B | B/s | s | W | ...>")
    note = node.get("note")
    if note is not None and not isinstance(note, str):
        raise fail(field, "expected note to be a string")
    rng = node.get("range")
    if rng is not None:
        if not (isinstance(rng, list) and len(rng) == 2 and all(_is_number(x) for x in rng) and rng[0] <= rng[1]):
            raise fail(field, f"expected range: [low, high] with low <= high, got {rng!r}")
        rng = (float(rng[0]), float(rng[1]))
    return Quantity(value=value, unit=unit, source=source.strip(), tag=tag, note=note, range=rng)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_kind(field: str, q: Quantity, want: _Field, fail: Any) -> None:
    v = q.value
    if want.kind == "int":
        ok = isinstance(v, int) and not isinstance(v, bool) and v > 0
        expected = "a positive integer"
    elif want.kind == "float":
        ok = _is_number(v) and v >= 0
        expected = "a non-negative number"
    elif want.kind == "str":
        ok = isinstance(v, str) and bool(v)
        expected = "a non-empty string"
    else:
        ok = _valid_segments(v)
        expected = ("piecewise segments [[upper_KiB or null, slope, intercept], ...], uppers increasing, "
                    "the last one null")
    if not ok:
        hint = ""
        if isinstance(v, str) and want.kind in ("int", "float"):
            hint = " (YAML 1.1 reads 1.0e9 as text: write the exponent with a sign, 1.0e+9)"
        raise fail(field, f"expected {expected}, got {v!r}{hint}")
    if want.unit is not None and q.unit != want.unit:
        raise fail(field, f"expected unit {want.unit!r}, got {q.unit!r}")


def _valid_segments(v: Any) -> bool:
    if not isinstance(v, list) or not v:
        return False
    last_upper = -math.inf
    for i, seg in enumerate(v):
        if not (isinstance(seg, list) and len(seg) == 3 and _is_number(seg[1]) and _is_number(seg[2])):
            return False
        upper = seg[0]
        if i == len(v) - 1:
            if upper is not None:
                return False
        elif not _is_number(upper) or upper <= last_upper:
            return False
        else:
            last_upper = upper
    return True
