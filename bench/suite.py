"""Declarative suites: what to run, where, and how to measure it, loaded and validated from YAML.

A suite names a model, a method and its parameters, a matrix of cases (context length, batch size and any
method parameter), named placements (which device runs each step), the devices, and the measurement
settings. :func:`load_suite` validates everything before anything runs; an invalid suite raises
:class:`~bench.errors.SuiteError` naming the file, line and field and what was expected.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from bench.errors import UsageError, did_you_mean
from bench.methods import METHODS, get_method
from bench.model.presets import INLINE_FIELDS, PRESETS, ModelShape
from bench.pipeline import STEPS, Placement
from bench.schema import (
    Located,
    build,
    compose,
    convert,
    mapping_items,
    param,
    scalar,
    sequence_items,
    unknown_key,
)


@dataclass(frozen=True)
class ModelConfig:
    """The model: a preset or an inline shape; weights are always synthetic."""

    preset: str | None = param(None, help=f"a preset: {', '.join(PRESETS)}")
    layers: int | None = param(None, min=1, help="run only this many decoder layers (the record says so)")
    hidden: int | None = param(None, min=1, help="inline shape: hidden size")
    heads: int | None = param(None, min=1, help="inline shape: query heads")
    kv_heads: int | None = param(None, min=1, help="inline shape: key/value heads")
    head_dim: int | None = param(None, min=2, help="inline shape: dimension per head")
    ffn: int | None = param(None, min=1, help="inline shape: MLP intermediate size")
    vocab: int | None = param(None, min=2, help="inline shape: vocabulary size")
    rope_theta: float = param(10000.0, min=1.0, help="inline shape: RoPE base")
    qk_norm: bool = param(False, help="inline shape: per-head RMSNorm on q and k (Qwen3)")
    dtype: Literal["bf16", "fp16", "fp32"] = param("bf16", help="weights, activations and KV cache dtype")
    seed: int = param(0, help="seed of the synthetic weights and KV cache")

    def shape(self) -> ModelShape:
        """The model shape this config describes (layers reduced if asked)."""
        if self.preset is not None:
            base = PRESETS[self.preset]
        else:
            base = ModelShape("inline", self.layers or 1, self.hidden or 0, self.heads or 0, self.kv_heads or 0,
                              self.head_dim or 0, self.ffn or 0, self.vocab or 0, 1 << 30, self.rope_theta,
                              self.qk_norm, "inline shape in the suite")
        return base.with_layers(self.layers) if self.layers else base


@dataclass(frozen=True)
class GpuConfig:
    """The GPU (or the CPU standing in for it)."""

    device: str = param("auto", help="torch device: auto (cuda if available, else cpu), cpu, cuda or cuda:N")


@dataclass(frozen=True)
class FpgaConfig:
    """An FPGA device: how it is present (hardware, emulated, analytic) and its device spec."""

    mode: Literal["emulated", "analytic", "hardware"] = param(
        "emulated", help="hardware: a real board through pyxrt; emulated: the GPU waits the modeled time; "
                         "analytic: times composed from the model")
    spec: str = param("u55c", help="device spec: a name under kernels_fpga/specs or a path")
    wait: Literal["host", "device"] = param(
        "host", help="emulated wait: host (sync, wait, continue; an XRT-driven PCIe card) or device (GPU spin)")
    functional: Literal["reference", "csim"] = param(
        "reference", help="how offloaded results are computed: reference (PyTorch, FPGA integer numerics) "
                          "or csim (the HLS kernels compiled with g++)")
    control: Literal["host-started", "auto-restart", "free-running"] = param(
        "host-started", help="kernel control mode, which sets the per-call launch overhead",
        source="hardware.md: launch overhead is a design choice (UG1393)")
    link: Literal["p2p", "host", "network"] | None = param(
        None, help="GPU<->FPGA path: p2p (peer-to-peer PCIe), host (staged through host memory) or network; "
                   "default: the spec's")
    clock_mhz: float | None = param(None, min=1.0, max=1000.0, help="kernel clock override (spec default otherwise)")
    xclbin: str | None = param(None, help="hardware mode: the xclbin built for the card (docs/fpga_hardware.md)")
    board: str = param("0", help="hardware mode: the card's index or PCIe BDF")


@dataclass(frozen=True)
class MeasureConfig:
    """How each case x placement is measured."""

    warmup: int = param(1, min=0, help="warm-up iterations before the trials (first-call time is kept apart)")
    trials: int = param(3, min=1, help="measured trials per case and placement (placements interleaved)")
    decode_tokens: int = param(16, min=1, help="tokens decoded per iteration, from the filled context")
    min_duration_s: float = param(1.0, min=0.0, help="a trial repeats iterations at least this long",
                                  source="measurement.md: >= 1 s keeps NVML counter quantization under 10%")
    min_iterations: int = param(3, min=1, help="a trial repeats at least this many iterations")
    profile_iterations: int = param(1, min=1, help="iterations of the per-step profile pass after each trial")
    idle_s: float = param(10.0, min=0.0, help="idle-power window before and after each case's trials (0: none)",
                          source="measurement.md section 6: idle in the run's state, before and after")
    cooldown_s: float = param(0.0, min=0.0, help="pause before each trial, so heat from the last one fades")
    cuda_graphs: bool = param(True, help="replay each iteration as a CUDA graph where the placement allows it")
    composition: bool = param(True, help="check that per-step measurements compose to the measured baseline")
    require_measured: bool = param(False, help="mark records INVALID when any figure is emulated or analytic")


@dataclass(frozen=True)
class PlacementConfig:
    """A placement as written in the suite: a device per step (default gpu) and the GPU kernel flavour."""

    prepare: str = param("gpu", help="device running Prepare Memory")
    relevancy: str = param("gpu", help="device running Compute Relevancy")
    retrieval: str = param("gpu", help="device running Retrieval")
    apply: str = param("gpu", help="device running Apply to Inference")
    kernels: Literal["optimized", "torch"] = param(
        "optimized", help="GPU kernels: optimized (fused kernels) or torch (framework-native ops)")
    offload: str | None = param(None, help="put the method's offloadable steps (the study's split) on this FPGA "
                                           "device; the per-step keys then stay on the GPU")


DEFAULT_PLACEMENTS = {
    "baseline": PlacementConfig(),
    "baseline-torch": PlacementConfig(kernels="torch"),
    "hetero": PlacementConfig(offload="fpga"),
}


@dataclass(frozen=True)
class Case:
    """One point of an experiment's matrix.

    Attributes:
        id: Stable identifier, e.g. ``context=4096,batch=1`` (prefixed ``<experiment>/`` in a suite with
            several experiments).
        experiment: The experiment the case belongs to.
        context: Context length in tokens (the filled KV cache, or the prompt).
        batch: Sequences processed together.
        params: The method's parameters for this case.
        values: The matrix values that define the case.
    """

    id: str
    experiment: str
    context: int
    batch: int
    params: Any
    values: dict[str, Any]


@dataclass
class Experiment:
    """One model and method with its matrix and placements."""

    name: str
    model: ModelConfig
    method: str
    params: Any
    matrix: dict[str, list[Any]]
    placements: dict[str, Placement]
    measure: MeasureConfig

    def cases(self, prefix: bool) -> list[Case]:
        """The matrix expanded in declaration order (the last key varies fastest)."""
        keys = list(self.matrix)
        out = []
        for combo in itertools.product(*(self.matrix[k] for k in keys)):
            values = dict(zip(keys, combo, strict=True))
            method_values = {k: v for k, v in values.items() if k not in ("context", "batch")}
            params = dataclasses.replace(self.params, **method_values)
            cid = ",".join(f"{k}={v}" for k, v in values.items())
            out.append(Case(f"{self.name}/{cid}" if prefix else cid, self.name, values.get("context", 0),
                            values.get("batch", 1), params, values))
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "model": dataclasses.asdict(self.model),
            "model_shape": get_method(self.method).model_shape(self.model).to_dict(),
            "method": {"name": self.method, **dataclasses.asdict(self.params)},
            "matrix": self.matrix,
            "placements": {n: p.to_dict() for n, p in self.placements.items()},
            "measure": dataclasses.asdict(self.measure),
        }


@dataclass
class Suite:
    """A validated suite: experiments sharing devices and measurement settings."""

    name: str
    description: str
    experiments: dict[str, Experiment]
    gpu: GpuConfig
    fpgas: dict[str, FpgaConfig]
    measure: MeasureConfig
    path: Path
    text: str = field(repr=False, default="")
    #: Experiments chosen with ``bench run --only`` (None: all).
    selected: list[str] | None = None
    #: Whether case ids carry the experiment name (fixed by the full suite, so a selection keeps its ids).
    prefix: bool | None = None

    def select(self, names: list[str]) -> Suite:
        """The same suite with only the named experiments (case ids keep their prefixes)."""
        for n in names:
            if n not in self.experiments:
                raise UsageError(f"{self.path}: no experiment '{n}'; {did_you_mean(n, self.experiments)}it has: "
                                 f"{', '.join(self.experiments)}")
        kept = {n: e for n, e in self.experiments.items() if n in names}
        return dataclasses.replace(self, experiments=kept, selected=sorted(kept),
                                   prefix=len(self.experiments) > 1)

    def cases(self) -> list[Case]:
        """Every experiment's cases, experiments in declaration order."""
        prefix = self.prefix if self.prefix is not None else len(self.experiments) > 1
        return [c for e in self.experiments.values() for c in e.cases(prefix)]

    @property
    def placements(self) -> dict[str, Placement]:
        """Every placement of the suite by name (the first experiment that declares a name wins)."""
        out: dict[str, Placement] = {}
        for e in self.experiments.values():
            for n, p in e.placements.items():
                out.setdefault(n, p)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The full resolved suite, JSON-ready (recorded in run.json)."""
        return {
            "name": self.name,
            "description": self.description,
            "file": str(self.path),
            "experiments": {n: e.to_dict() for n, e in self.experiments.items()},
            "devices": {"gpu": dataclasses.asdict(self.gpu),
                        **{n: dataclasses.asdict(f) for n, f in self.fpgas.items()}},
            "measure": dataclasses.asdict(self.measure),
            "selected_experiments": self.selected,
        }


TOP_LEVEL = ("name", "description", "model", "method", "matrix", "placements", "devices", "measure", "experiments")
EXPERIMENT_KEYS = ("model", "method", "matrix", "placements", "measure")


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file; raise SuiteError (file, line, field, expectation) on any problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{p}: no such suite file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{p}: cannot read the suite: {exc}") from None
    return parse_suite(text, str(p))


def parse_suite(text: str, file: str) -> Suite:
    """Validate suite YAML ``text`` (``file`` names it in errors).

    A suite holds either one experiment (``model``, ``method``, ``matrix`` at the top level) or several
    (``experiments: {name: {model, method, matrix, placements}}``); top-level ``placements`` are the default
    of every experiment that does not give its own.
    """
    root = compose(text, file)
    items = dict(mapping_items(root, ""))
    for key, loc in items.items():
        if key not in TOP_LEVEL:
            raise unknown_key(loc, "", key, TOP_LEVEL)
    if "name" not in items:
        raise root.error("name", "missing required field")
    name = convert(str, items["name"], "name")
    if not name or any(c in name for c in "/\\ ") or name.startswith("."):
        raise items["name"].error("name", f"expected a name without spaces or slashes, got {name!r}")
    description = convert(str, items["description"], "description") if "description" in items else ""
    fpgas, gpu = _devices(items.get("devices"))
    kinds = {"gpu": "gpu", **dict.fromkeys(fpgas, "fpga")}
    measure = build(MeasureConfig, items.get("measure"), "measure")
    experiments: dict[str, Experiment] = {}
    if "experiments" in items:
        for key in ("model", "method", "matrix"):
            if key in items:
                raise items[key].error(key, "with 'experiments', give the model, method and matrix inside each "
                                            "experiment")
        for ename, eloc in mapping_items(items["experiments"], "experiments"):
            if not ename or any(c in ename for c in "/\\ "):
                raise eloc.error(f"experiments.{ename}", "expected a name without spaces or slashes")
            parts = dict(mapping_items(eloc, f"experiments.{ename}"))
            for key, loc in parts.items():
                if key not in EXPERIMENT_KEYS:
                    raise unknown_key(loc, f"experiments.{ename}", key, EXPERIMENT_KEYS)
            experiments[ename] = _experiment(ename, parts, items.get("placements"), kinds, eloc,
                                             f"experiments.{ename}.", measure)
        if not experiments:
            raise items["experiments"].error("experiments", "expected at least one experiment")
    else:
        for key in ("model", "method", "matrix"):
            if key not in items:
                raise root.error(key, "missing required field (or give 'experiments')")
        method_name = _method_name(items["method"])
        experiments[method_name] = _experiment(method_name, {k: v for k, v in items.items() if k != "measure"},
                                               items.get("placements"), kinds, root, "", measure)
    return Suite(name, description, experiments, gpu, fpgas, measure, Path(file), text)


def _experiment(name: str, parts: dict[str, Located], default_placements: Located | None, kinds: dict[str, str],
                where: Located, path: str, measure: MeasureConfig) -> Experiment:
    for key in ("model", "method", "matrix"):
        if key not in parts:
            raise where.error(f"{path}{key}", "missing required field")
    method, params = _method(parts["method"], f"{path}method")
    model = _model(parts["model"], f"{path}model", get_method(method).presets())
    placements = _placements(parts.get("placements", default_placements), kinds, method,
                             f"{path}placements" if "placements" in parts else "placements")
    matrix = _matrix(parts["matrix"], params, f"{path}matrix")
    if "measure" in parts:  # the experiment's own settings override the suite's, key by key
        own = build(MeasureConfig, parts["measure"], f"{path}measure")
        keys = [k for k, _ in mapping_items(parts["measure"], f"{path}measure")]
        measure = dataclasses.replace(measure, **{k: getattr(own, k) for k in keys})
    return Experiment(name, model, method, params, matrix, placements, measure)


def _model(loc: Located, path: str, presets: dict[str, Any]) -> ModelConfig:
    if isinstance(loc.node, yaml.ScalarNode):
        value = scalar(loc, path)
        if not isinstance(value, str) or value not in presets:
            raise loc.error(path, _preset_hint(str(value), presets))
        return ModelConfig(preset=value)
    cfg = build(ModelConfig, loc, path)
    where = dict(mapping_items(loc, path))
    if cfg.preset is not None:
        if cfg.preset not in presets:
            raise where["preset"].error(f"{path}.preset", _preset_hint(cfg.preset, presets))
        inline = [f for f in INLINE_FIELDS if f != "layers" and getattr(cfg, f) is not None]
        if inline:
            raise where[inline[0]].error(f"{path}.{inline[0]}", "give either a preset or an inline shape, not both")
        full = presets[cfg.preset].layers
        if cfg.layers is not None and cfg.layers > full:
            raise where["layers"].error(f"{path}.layers", f"{cfg.preset} has {full} layers; expected 1..{full}")
        return cfg
    missing = [f for f in INLINE_FIELDS if getattr(cfg, f) is None]
    if missing:
        raise loc.error(path, f"expected a preset ({', '.join(presets)}) or an inline shape with "
                              f"{', '.join(INLINE_FIELDS)}; missing {', '.join(missing)}")
    if cfg.heads % cfg.kv_heads:  # type: ignore[operator]
        raise where["kv_heads"].error(f"{path}.kv_heads", f"heads ({cfg.heads}) must be a multiple of kv_heads")
    if cfg.head_dim % 2:  # type: ignore[operator]
        raise where["head_dim"].error(f"{path}.head_dim", "must be even (RoPE rotates pairs)")
    return cfg


def _preset_hint(value: str, presets: dict[str, Any]) -> str:
    return f"unknown preset '{value}'; {did_you_mean(value, presets, 0.5)}expected one of: {', '.join(presets)}"


def _method_name(loc: Located) -> str:
    """The method name of a ``method`` node (a name, or a mapping with ``name``), unvalidated."""
    if isinstance(loc.node, yaml.ScalarNode):
        return str(scalar(loc, "method"))
    names = [v for k, v in mapping_items(loc, "method") if k == "name"]
    return str(scalar(names[0], "method.name")) if names else "experiment"


def _method(loc: Located, path: str) -> tuple[str, Any]:
    if isinstance(loc.node, yaml.ScalarNode):
        name, rest = scalar(loc, path), []
    else:
        items = mapping_items(loc, path)
        names = [v for k, v in items if k == "name"]
        if not names:
            raise loc.error(f"{path}.name", f"missing required field (one of: {', '.join(sorted(METHODS))})")
        name = convert(str, names[0], f"{path}.name")
        rest = [(k, v) for k, v in items if k != "name"]
        loc = names[0]
    if not isinstance(name, str):
        raise loc.error(path, f"expected a method name, got {name!r}")
    try:
        cls = get_method(name)
    except UsageError as exc:
        raise loc.error(f"{path}.name", str(exc)) from None
    params_cls = cls.Params
    fields = {f.name: f for f in dataclasses.fields(params_cls)}
    hints = _hints(params_cls)
    values = {}
    for key, vloc in rest:
        if key not in fields:
            raise unknown_key(vloc, path, key, ["name", *fields])
        values[key] = convert(hints[key], vloc, f"{path}.{key}", fields[key])
    params = params_cls(**values)
    for fname, message in params.problems():
        where = dict(rest).get(fname, loc)
        raise where.error(f"{path}.{fname}", message)
    return name, params


def _hints(cls: type) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(cls)


def _devices(loc: Located | None) -> tuple[dict[str, FpgaConfig], GpuConfig]:
    if loc is None:
        return {"fpga": FpgaConfig()}, GpuConfig()
    gpu = GpuConfig()
    fpgas: dict[str, FpgaConfig] = {}
    for name, vloc in mapping_items(loc, "devices"):
        if name == "gpu":
            gpu = build(GpuConfig, vloc, "devices.gpu")
            _check_torch_device(gpu.device, vloc)
        else:
            fpgas[name] = build(FpgaConfig, vloc, f"devices.{name}")
    return fpgas, gpu


def _check_torch_device(device: str, loc: Located) -> None:
    ok = device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())
    if not ok:
        raise loc.error("devices.gpu.device", f"expected auto, cpu, cuda or cuda:N, got {device!r}")


def _placements(loc: Located | None, kinds: dict[str, str], method: str, path: str) -> dict[str, Placement]:
    """Resolve an experiment's placements for its method.

    ``{offload: DEVICE}`` puts the method's offloadable steps (the study's split) on ``DEVICE``, so one
    placement list serves methods that offload different steps; ``auto`` lets the planner decide per case.
    For a method with nothing to offload (LaCT), both resolve to the GPU alone, as the study keeps it.
    """
    cls = get_method(method)
    first_fpga = next((d for d, k in kinds.items() if k == "fpga"), None)
    configs: list[tuple[str, PlacementConfig, Located | None]] = []
    auto_names: set[str] = set()
    if loc is None:
        configs = [(n, PlacementConfig(offload=first_fpga) if n == "hetero" else c, None)
                   for n, c in DEFAULT_PLACEMENTS.items()
                   if not (n == "hetero" and (first_fpga is None or not cls.offloadable))]
    else:
        for name, vloc in mapping_items(loc, path):
            if isinstance(vloc.node, yaml.ScalarNode) and scalar(vloc, f"{path}.{name}") == "auto":
                if first_fpga is None:
                    raise vloc.error(f"{path}.{name}", "'auto' chooses between the GPU and an FPGA: declare an FPGA "
                                                       "device")
                configs.append((name, PlacementConfig(offload=first_fpga), vloc))
                auto_names.add(name if cls.offloadable else "")
                continue
            configs.append((name, _placement_config(name, vloc, path), vloc))
        if auto_names - {""} and "baseline" not in [n for n, _, _ in configs]:
            raise loc.error(path, "an 'auto' placement compares against the 'baseline' placement: declare one")
    out = {}
    for name, cfg, vloc in configs:
        if cfg.offload is not None:
            if vloc is not None and any(getattr(cfg, s.value) != "gpu" for s in STEPS):
                raise vloc.error(f"{path}.{name}", "give either 'offload' or a device per step, not both")
            if cfg.offload not in kinds or kinds[cfg.offload] != "fpga":
                fpgas = [d for d, k in kinds.items() if k == "fpga"]
                raise (vloc or loc).error(f"{path}.{name}.offload",  # type: ignore[union-attr]
                                          f"expected an FPGA device ({', '.join(fpgas) or 'none declared'}), "
                                          f"got {cfg.offload!r}")
            steps = {s: (cfg.offload if s in cls.offloadable else "gpu") for s in STEPS}
        else:
            steps = {s: getattr(cfg, s.value) for s in STEPS}
        placement = Placement(name, steps, cfg.kernels, auto=name in auto_names)
        if vloc is not None:  # the default placements are valid by construction
            for s, dev in steps.items():
                if dev not in kinds:
                    raise vloc.error(f"{path}.{name}.{s.value}",
                                     f"unknown device '{dev}'; devices: {', '.join(kinds)}")
            try:
                cls.check_placement(placement, kinds)
            except UsageError as exc:
                raise vloc.error(f"{path}.{name}", str(exc).split(": ", 1)[-1]) from None
        out[name] = placement
    if loc is not None and not out:
        raise loc.error(path, "expected at least one placement")
    return out


def _placement_config(name: str, loc: Located, path: str) -> PlacementConfig:
    if isinstance(loc.node, yaml.ScalarNode):
        value = scalar(loc, f"{path}.{name}")
        if value is None:
            return PlacementConfig()
        if isinstance(value, str) and value in DEFAULT_PLACEMENTS:
            return DEFAULT_PLACEMENTS[value]
        raise loc.error(f"{path}.{name}", f"expected a mapping of steps to devices (or one of "
                                              f"{', '.join(DEFAULT_PLACEMENTS)}, or auto), got {value!r}")
    return build(PlacementConfig, loc, f"{path}.{name}")


def _matrix(loc: Located, params: Any, path: str) -> dict[str, list[Any]]:
    fields = {f.name: f for f in dataclasses.fields(params)}
    hints = _hints(type(params))
    allowed = {"context", "batch", *fields}
    matrix: dict[str, list[Any]] = {}
    for key, vloc in mapping_items(loc, path):
        if key not in allowed:
            raise unknown_key(vloc, path, key, allowed)
        if key in ("context", "batch"):
            values = convert(list[int], vloc, f"{path}.{key}")
            for i, (v, item) in enumerate(zip(values, sequence_items(vloc, key), strict=True)):
                if v < 1:
                    raise item.error(f"{path}.{key}[{i}]", f"must be >= 1, got {v}")
        else:
            values = convert(list[hints[key]], vloc, f"{path}.{key}", fields[key])  # type: ignore[valid-type]
            for i, (v, item) in enumerate(zip(values, sequence_items(vloc, key), strict=True)):
                for fname, message in dataclasses.replace(params, **{key: v}).problems():
                    raise item.error(f"{path}.{key}[{i}]", f"{fname} {message}")
        if len(set(map(repr, values))) != len(values):
            raise vloc.error(f"{path}.{key}", "values must be distinct")
        matrix[key] = values
    if "context" not in matrix:
        raise loc.error(f"{path}.context", "missing required field (context lengths in tokens)")
    matrix.setdefault("batch", [1])
    return matrix
