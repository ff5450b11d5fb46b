"""Fixtures for the FPGA tests: ``fake_pyxrt``, a test double of XRT's ``pyxrt`` module, and ``csim_kernel``.

FakePyxrt is a TEST DOUBLE, not an emulator: it records the host code's call sequence (device, xclbin
load or hardware context, kernel, buffer allocations with their memory group and size, writes, syncs with
their size and offset, runs) so tests can check what ``kernels_fpga.host`` asks of XRT. It keeps a host and
a device copy of each buffer (``sync`` copies between them) so a test may pass an ``on_run`` callback that
plays the kernel on the device copies; it models no timing, DMA or hardware behaviour.

``csim_kernel`` is such a callback: it runs the C-simulation of the very top function the host started,
with the device copies as its buffers, so a host test checks the host's buffer layouts and argument lists
against the kernels themselves.
"""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from kernels_fpga import csim
from kernels_fpga.interface import KERNELS


@dataclass
class _State:
    name: str


class FakeBo:
    """A buffer object: host bytes, device bytes, and the group it was allocated on."""

    def __init__(self, fake: FakePyxrt, nbytes: int, flags: str, group: int) -> None:
        self.fake, self.nbytes, self.flags, self.group = fake, nbytes, flags, group
        self.host = bytearray(nbytes)
        self.device = bytearray(nbytes)
        self.id = len(fake.bos)
        fake.bos.append(self)

    def write(self, buf: Any, offset: int) -> None:
        data = np.ascontiguousarray(buf).tobytes()
        assert offset + len(data) <= self.nbytes, "write past the end of the buffer"
        self.host[offset:offset + len(data)] = data
        self.fake.calls.append(("write", self.id, len(data), offset))

    def sync(self, direction: str, size: int, offset: int) -> None:
        assert offset + size <= self.nbytes, "sync past the end of the buffer"
        if direction == "TO_DEVICE":
            self.device[offset:offset + size] = self.host[offset:offset + size]
        else:
            self.host[offset:offset + size] = self.device[offset:offset + size]
        self.fake.calls.append(("sync", self.id, direction, size, offset))

    def read(self, size: int, offset: int) -> np.ndarray:
        self.fake.calls.append(("read", self.id, size, offset))
        return np.frombuffer(bytes(self.host[offset:offset + size]), dtype=np.int8).copy()

    def size(self) -> int:
        return self.nbytes


@dataclass
class FakePyxrt:
    """Configuration and recordings of one fake ``pyxrt`` module (see the module docstring).

    Attributes:
        api: ``"2.13"`` (load_xclbin + device-form kernel) or ``"2.16"`` (register_xclbin + hw_context).
        kernel_args: Kernel name -> argument count the xclbin reports.
        group_ids: Kernel name -> argument index -> memory group id.
        final_state: Name of the ert_cmd_state every run's ``wait`` returns.
        info: xrt_info_device key -> the string ``get_info`` returns.
        on_run: Called as ``on_run(kernel_name, args)`` when a run starts (args: FakeBo or int).
        calls: The recorded call sequence.
        bos: Every buffer allocated, in order.
        module: The module object installed as ``pyxrt``.
    """

    api: str = "2.16"
    kernel_args: dict[str, int] = field(default_factory=lambda: {"relevancy_topk": len(KERNELS["relevancy_topk"])})
    group_ids: dict[str, dict[int, int]] = field(default_factory=dict)
    final_state: str = "ERT_CMD_STATE_COMPLETED"
    info: dict[str, str] = field(default_factory=dict)
    on_run: Callable[[str, list[Any]], None] | None = None
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    bos: list[FakeBo] = field(default_factory=list)
    module: types.ModuleType = field(init=False)

    def __post_init__(self) -> None:
        self.module = self._build()

    def events(self, name: str) -> list[tuple[Any, ...]]:
        """Recorded calls of one kind (``"sync"``, ``"write"``, ``"bo"``, ``"start"``...)."""
        return [c for c in self.calls if c[0] == name]

    def _build(self) -> types.ModuleType:
        fake = self
        mod = types.ModuleType("pyxrt")
        states = {n: _State(n) for n in ("ERT_CMD_STATE_COMPLETED", "ERT_CMD_STATE_ERROR",
                                         "ERT_CMD_STATE_TIMEOUT", "ERT_CMD_STATE_ABORT")}
        mod.ert_cmd_state = types.SimpleNamespace(**states)
        mod.xclBOSyncDirection = types.SimpleNamespace(XCL_BO_SYNC_BO_TO_DEVICE="TO_DEVICE",
                                                       XCL_BO_SYNC_BO_FROM_DEVICE="FROM_DEVICE")
        mod.xrt_info_device = types.SimpleNamespace(
            **{k: k for k in ("bdf", "name", "electrical", "thermal", "platform", "host", "memory")})

        class uuid:
            def to_string(self) -> str:
                return "f00dcafe-0000-4000-8000-000000000001"

        class xclbin_kernel:
            def __init__(self, name: str, nargs: int) -> None:
                self._name, self._nargs = name, nargs

            def get_name(self) -> str:
                return self._name

            def get_num_args(self) -> int:
                return self._nargs

        class xclbin:
            def __init__(self, path: str) -> None:
                fake.calls.append(("xclbin", path))

            def get_kernels(self) -> list[xclbin_kernel]:
                return [xclbin_kernel(n, a) for n, a in fake.kernel_args.items()]

            def get_uuid(self) -> uuid:
                return uuid()

            def get_xsa_name(self) -> str:
                return "xilinx_u55c_gen3x16_xdma_base_3"

        class device:
            def __init__(self, which: int | str) -> None:
                if which == "missing":
                    raise RuntimeError("No such device")
                fake.calls.append(("device", which))

            def load_xclbin(self, xb: xclbin) -> uuid:
                fake.calls.append(("load_xclbin",))
                return uuid()

            def get_info(self, key: str) -> str:
                return fake.info.get(key, "")

        if self.api != "2.13":
            def register_xclbin(self: device, xb: xclbin) -> uuid:
                fake.calls.append(("register_xclbin",))
                return uuid()

            device.register_xclbin = register_xclbin

            class hw_context:
                def __init__(self, dev: device, uid: uuid) -> None:
                    fake.calls.append(("hw_context",))

            mod.hw_context = hw_context

        class kernel:
            shared = "shared"

            def __init__(self, *args: Any) -> None:
                if len(args) == 4:  # (device, uuid, name, access mode): XRT <= 2.15
                    self.name = args[2]
                    fake.calls.append(("kernel", "device-form", args[2], args[3]))
                else:  # (hw_context, name)
                    self.name = args[1]
                    fake.calls.append(("kernel", "context-form", args[1]))

            def group_id(self, arg: int) -> int:
                return fake.group_ids.get(self.name, {}).get(arg, 100 + arg)

        class bo:
            normal = "normal"

            def __new__(cls, dev: device, nbytes: int, flags: str, group: int) -> FakeBo:  # type: ignore[misc]
                buf = FakeBo(fake, nbytes, flags, group)
                fake.calls.append(("bo", buf.id, nbytes, flags, group))
                return buf

        class run:
            def __init__(self, k: kernel) -> None:
                self.kernel = k
                self.args: dict[int, Any] = {}

            def set_arg(self, i: int, value: Any) -> None:
                if isinstance(value, int) and not -(2**31) <= value < 2**31:
                    raise TypeError("incompatible function arguments")  # pybind11 int& overload
                self.args[i] = value

            def start(self) -> None:
                args = [self.args[i] for i in range(len(self.args))]
                fake.calls.append(("start", self.kernel.name,
                                   tuple(a if isinstance(a, int) else ("bo", a.id) for a in args)))
                if fake.on_run is not None:
                    fake.on_run(self.kernel.name, args)

            def wait(self, timeout_ms: int = 0) -> _State:
                fake.calls.append(("wait", timeout_ms))
                return states[fake.final_state]

        mod.uuid, mod.xclbin, mod.device, mod.kernel, mod.bo, mod.run = uuid, xclbin, device, kernel, bo, run
        return mod


def play_csim(name: str, args: list[Any]) -> None:
    """Runs the C-simulation of kernel ``name`` on the fake device buffers (views, so outputs land there)."""
    values = []
    for spec, arg in zip(KERNELS[name], args, strict=True):
        values.append(np.frombuffer(arg.device, dtype=spec.dtype) if spec.is_pointer else arg)
    csim.load().call(name, *values)


@pytest.fixture
def fake_pyxrt(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakePyxrt]:
    """Factory: ``fake_pyxrt(api="2.13", ...)`` builds a FakePyxrt and installs it as ``pyxrt``."""

    def install(**kwargs: Any) -> FakePyxrt:
        fake = FakePyxrt(**kwargs)
        monkeypatch.setitem(sys.modules, "pyxrt", fake.module)
        return fake

    return install


@pytest.fixture
def csim_kernel() -> Callable[[str, list[Any]], None]:
    """``on_run`` callback that runs the started kernel's C-simulation on the fake device buffers."""
    return play_csim


@pytest.fixture
def electrical_json() -> str:
    """XRT electrical report of an idle U55C (values from XRT PR #7874, as strings like XRT's)."""
    return _ELECTRICAL_SAMPLE


_ELECTRICAL_SAMPLE = json.dumps({
    "power_rails": [
        {"id": "12v_aux", "description": "12 Volts Auxillary", "voltage": {"volts": "12.256", "is_present": "true"},
         "current": {"amps": "0.481", "is_present": "true"}},
        {"id": "12v_pex", "description": "12 Volts PCI Express", "voltage": {"volts": "12.240", "is_present": "true"},
         "current": {"amps": "0.985", "is_present": "true"}},
        {"id": "3v3_pex", "description": "3.3 Volts PCI Express", "voltage": {"volts": "3.360", "is_present": "true"},
         "current": {"amps": "1.040", "is_present": "true"}},
    ],
    "power_consumption_max_watts": "225",
    "power_consumption_watts": "21.45",
    "power_consumption_warning": "false",
})
