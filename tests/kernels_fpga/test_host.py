"""kernels_fpga.host against the FakePyxrt test double: call sequences, buffer sizes, errors, power parsing."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.errors import DeviceUnavailableError, UsageError
from kernels_fpga import host
from kernels_fpga.host import FpgaBoard, FpgaRunError

D = 128
INT64_MIN = np.iinfo(np.int64).min


@pytest.fixture
def xclbin(tmp_path: Path) -> Path:
    path = tmp_path / "relevancy_topk.xclbin"
    path.write_bytes(b"xclbin2\x00" + bytes(range(64)))
    return path


def keys_for(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    return rng.integers(-300, 300, size=(rows, n, D), dtype=np.int16)


def reference_topk(q: np.ndarray, keys: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    rows, n = keys.shape[:2]
    idx = np.full((rows, k), -1, dtype=np.int32)
    score = np.full((rows, k), INT64_MIN, dtype=np.int64)
    for r in range(rows):
        s = keys[r].astype(np.int64) @ q[r].astype(np.int64)
        order = np.lexsort((np.arange(n), -s))[:k]
        idx[r, : len(order)], score[r, : len(order)] = order, s[order]
    return idx, score


def test_open_on_216_uses_a_hardware_context(fake_pyxrt, xclbin):
    fake = fake_pyxrt(api="2.16")
    board = FpgaBoard.open("0000:81:00.1", xclbin)
    names = [c[0] for c in fake.calls]
    assert names == ["device", "xclbin", "register_xclbin", "hw_context", "kernel"]
    assert fake.calls[0] == ("device", "0000:81:00.1")
    assert fake.calls[-1] == ("kernel", "context-form", "relevancy_topk")
    assert board.uses_hw_context and board.has_key_stride


def test_open_on_213_loads_the_xclbin_on_the_device(fake_pyxrt, xclbin):
    fake = fake_pyxrt(api="2.13")
    board = FpgaBoard.open(0, xclbin)
    names = [c[0] for c in fake.calls]
    assert names == ["device", "xclbin", "load_xclbin", "kernel"]
    assert fake.calls[-1] == ("kernel", "device-form", "relevancy_topk", "shared")
    assert not board.uses_hw_context


def test_missing_pyxrt_says_it_comes_with_xrt(monkeypatch, xclbin):
    monkeypatch.setitem(sys.modules, "pyxrt", None)  # makes `import pyxrt` raise ImportError
    with pytest.raises(DeviceUnavailableError) as err:
        FpgaBoard.open(0, xclbin)
    msg = str(err.value)
    assert "setup.sh" in msg and "not PyPI" in msg


def test_missing_xclbin_names_the_file_and_how_to_build_it(fake_pyxrt, tmp_path):
    fake_pyxrt()
    missing = tmp_path / "nope.xclbin"
    with pytest.raises(DeviceUnavailableError) as err:
        FpgaBoard.open(0, missing)
    assert str(missing) in str(err.value) and "v++" in str(err.value)


def test_missing_device_and_missing_kernel(fake_pyxrt, xclbin):
    fake_pyxrt()
    with pytest.raises(DeviceUnavailableError, match="no FPGA at device 'missing'"):
        FpgaBoard.open("missing", xclbin)
    fake_pyxrt(kernel_args={"page_topk": 11})
    with pytest.raises(DeviceUnavailableError, match=r"no kernel relevancy_topk.*page_topk"):
        FpgaBoard.open(0, xclbin)


def test_load_keys_allocates_on_the_kernel_banks_and_syncs_keys_once(fake_pyxrt, xclbin):
    groups = {0: 7, 1: 3, 2: 9, 3: 11}
    fake = fake_pyxrt(group_ids={"relevancy_topk": groups})
    board = FpgaBoard.open(0, xclbin, k_max=64)
    rows, n, cap = 3, 37, 50
    board.load_keys(rows, keys_for(np.random.default_rng(1), rows, n), capacity=cap)
    allocs = fake.events("bo")
    assert [(nbytes, group) for _, _, nbytes, _, group in allocs] == [
        (rows * cap * D * 2, 3), (rows * D * 2, 7), (rows * 64 * 4, 9), (rows * 64 * 8, 11)]
    syncs = fake.events("sync")
    assert syncs == [("sync", allocs[0][1], "TO_DEVICE", rows * cap * D * 2, 0)]
    assert board.keys_per_row() == [n] * rows


def test_append_syncs_only_the_new_key_at_its_offset(fake_pyxrt, xclbin):
    fake = fake_pyxrt()
    board = FpgaBoard.open(0, xclbin)
    rows, n, cap = 2, 5, 7
    board.load_keys(rows, keys_for(np.random.default_rng(2), rows, n), capacity=cap)
    keys_bo = fake.bos[0]
    before = len(fake.calls)
    key = np.arange(D, dtype=np.int16)
    board.append_key(1, key)
    offset = (1 * cap + n) * D * 2
    assert fake.calls[before:] == [("write", keys_bo.id, D * 2, offset),
                                   ("sync", keys_bo.id, "TO_DEVICE", D * 2, offset)]
    assert bytes(keys_bo.device[offset:offset + D * 2]) == key.tobytes()
    assert board.keys_per_row() == [n, n + 1]
    board.append_key(1, key)
    with pytest.raises(UsageError, match="row 1 is full"):
        board.append_key(1, key)
    with pytest.raises(UsageError, match="int16"):
        board.append_key(0, key.astype(np.int32))


@pytest.mark.parametrize(("rows", "n", "k"), [(1, 200, 64), (3, 45, 16), (2, 10, 32)])
def test_run_writes_only_the_query_and_reads_only_the_results(fake_pyxrt, relevancy_kernel, xclbin, rows, n, k):
    fake = fake_pyxrt(on_run=relevancy_kernel)
    board = FpgaBoard.open(0, xclbin, k_max=64)
    rng = np.random.default_rng(rows * 100 + n)
    keys = keys_for(rng, rows, n)
    keys[:, 3] = keys[:, 1]  # ties: equal scores must rank by index
    board.load_keys(rows, keys, capacity=n + 4)
    q = rng.integers(-300, 300, size=(rows, D), dtype=np.int16)
    before = len(fake.calls)
    idx, score = board.run_relevancy_topk(q, n, k)
    run_calls = fake.calls[before:]
    keys_bo, q_bo, idx_bo, score_bo = (b.id for b in fake.bos[:4])  # load_keys allocation order
    syncs = [c for c in run_calls if c[0] == "sync"]
    assert syncs == [("sync", q_bo, "TO_DEVICE", rows * D * 2, 0),
                     ("sync", idx_bo, "FROM_DEVICE", rows * k * 4, 0),
                     ("sync", score_bo, "FROM_DEVICE", rows * k * 8, 0)]
    assert not any(c[0] == "write" and c[1] == keys_bo for c in run_calls)
    start = next(c for c in run_calls if c[0] == "start")
    bram, uram = 16384 // rows, 32768 // rows
    assert start[2] == (("bo", q_bo), ("bo", keys_bo), ("bo", idx_bo), ("bo", score_bo), rows, n, k, bram, uram, n + 4)
    want = reference_topk(q, keys, k)
    np.testing.assert_array_equal(idx, want[0])
    np.testing.assert_array_equal(score, want[1])
    assert set(board.last_timings) == {"sync_in", "kernel", "sync_out"}


def test_appended_keys_take_part_in_the_next_run(fake_pyxrt, relevancy_kernel, xclbin):
    fake_pyxrt(on_run=relevancy_kernel)
    board = FpgaBoard.open(0, xclbin)
    rng = np.random.default_rng(5)
    keys = keys_for(rng, 1, 20)
    board.load_keys(1, keys, capacity=21)
    q = rng.integers(1, 50, size=(1, D), dtype=np.int16)
    big = np.full(D, 200, dtype=np.int16)  # positive q: this key scores highest
    board.append_key(0, big)
    idx, _ = board.run_relevancy_topk(q, 21, 1)
    assert idx[0, 0] == 20


def test_kernel_without_key_stride_cannot_grow_rows(fake_pyxrt, relevancy_kernel, xclbin):
    fake = fake_pyxrt(kernel_args={"relevancy_topk": 9}, on_run=relevancy_kernel)
    board = FpgaBoard.open(0, xclbin)
    assert not board.has_key_stride
    rng = np.random.default_rng(6)
    keys = keys_for(rng, 2, 30)
    with pytest.raises(UsageError, match="key_stride"):
        board.load_keys(2, keys, capacity=31)
    board.load_keys(2, keys)
    with pytest.raises(UsageError, match="full"):
        board.append_key(0, keys[0, 0])
    q = rng.integers(-300, 300, size=(2, D), dtype=np.int16)
    with pytest.raises(UsageError, match="must equal"):
        board.run_relevancy_topk(q, 29, 8)
    idx, _ = board.run_relevancy_topk(q, 30, 8)
    assert len(fake.events("start")[0][2]) == 9
    np.testing.assert_array_equal(idx, reference_topk(q, keys, 8)[0])


def test_fewer_keys_than_k_leave_empty_slots_last(fake_pyxrt, relevancy_kernel, xclbin):
    fake_pyxrt(on_run=relevancy_kernel)
    board = FpgaBoard.open(0, xclbin)
    rng = np.random.default_rng(7)
    board.load_keys(1, keys_for(rng, 1, 3))
    idx, score = board.run_relevancy_topk(rng.integers(-9, 9, size=(1, D), dtype=np.int16), 3, 5)
    assert list(idx[0, 3:]) == [-1, -1] and list(score[0, 3:]) == [INT64_MIN, INT64_MIN]
    assert np.all(np.diff(score[0, :3]) <= 0)


@pytest.mark.parametrize("state", ["ERT_CMD_STATE_ERROR", "ERT_CMD_STATE_TIMEOUT"])
def test_a_run_that_does_not_complete_raises_with_its_state(fake_pyxrt, xclbin, state):
    fake_pyxrt(final_state=state)
    board = FpgaBoard.open(0, xclbin)
    board.load_keys(1, np.zeros((1, 4, D), dtype=np.int16))
    with pytest.raises(FpgaRunError, match=state):
        board.run_relevancy_topk(np.zeros((1, D), dtype=np.int16), 4, 2)


def test_run_validates_query_k_and_n_keys(fake_pyxrt, xclbin):
    fake_pyxrt()
    board = FpgaBoard.open(0, xclbin, k_max=64)
    with pytest.raises(UsageError, match="load_keys"):
        board.run_relevancy_topk(np.zeros((1, D), dtype=np.int16), 1, 1)
    board.load_keys(2, np.zeros((2, 8, D), dtype=np.int16))
    q = np.zeros((2, D), dtype=np.int16)
    with pytest.raises(UsageError, match="k must be"):
        board.run_relevancy_topk(q, 8, 65)
    with pytest.raises(UsageError, match="n_keys"):
        board.run_relevancy_topk(q, 9, 4)
    with pytest.raises(UsageError, match="q must be"):
        board.run_relevancy_topk(q.astype(np.int32), 8, 4)


def test_scalars_beyond_c_int_are_refused_and_numpy_scalars_go_through_a_buffer(fake_pyxrt, xclbin):
    fake = fake_pyxrt(group_ids={"relevancy_topk": {4: 21}})
    board = FpgaBoard.open(0, xclbin)
    with pytest.raises(UsageError, match="does not fit a C int"):
        board.run_kernel("relevancy_topk", [1, 2, 3, 4, 2**31])
    board.run_kernel("relevancy_topk", [1, 2, 3, 4, np.int64(2**40)])
    alloc = fake.events("bo")[-1]
    assert alloc[2:] == (8, "normal", 21)
    bo = fake.bos[alloc[1]]
    assert ("sync", bo.id, "TO_DEVICE", 8, 0) in fake.calls
    assert np.frombuffer(bytes(bo.device), dtype=np.int64)[0] == 2**40
    assert fake.events("start")[-1][2] == (1, 2, 3, 4, ("bo", bo.id))
    with pytest.raises(UsageError, match="not opened"):
        board.run_kernel("bm25_topk", [])


def test_power_from_xrt_electrical_json(electrical_json):
    assert host.parse_electrical_power_w(electrical_json) == pytest.approx(21.45)
    data = json.loads(electrical_json)
    data["power_consumption_watts"] = "N/A"
    rails = 12.256 * 0.481 + 12.240 * 0.985 + 3.360 * 1.040
    assert host.parse_electrical_power_w(json.dumps(data)) == pytest.approx(rails)
    data["power_rails"][1]["current"]["amps"] = "N/A"
    assert host.parse_electrical_power_w(json.dumps(data)) is None
    assert host.parse_electrical_power_w(json.dumps({"electrical": {"power_consumption_watts": "30.5"}})) == 30.5
    assert host.parse_electrical_power_w("") is None
    assert host.parse_electrical_power_w("not json") is None


def test_hwmon_fallback_reads_microwatts(tmp_path):
    base = tmp_path / "bus/pci/devices/0000:81:00.1/hwmon"
    (base / "hwmon3").mkdir(parents=True)
    (base / "hwmon3/power1_input").write_text("23456789\n")
    assert host.hwmon_power_w("0000:81:00.1", tmp_path) == pytest.approx(23.456789)
    assert host.hwmon_power_w("81:00.1", tmp_path) == pytest.approx(23.456789)
    assert host.hwmon_power_w("0000:82:00.1", tmp_path) is None
    (base / "hwmon3/power1_input").write_text("garbage")
    assert host.hwmon_power_w("0000:81:00.1", tmp_path) is None


def test_board_power_falls_back_to_hwmon_when_xrt_says_na(fake_pyxrt, xclbin, tmp_path, electrical_json):
    base = tmp_path / "bus/pci/devices/0000:81:00.1/hwmon/hwmon0"
    base.mkdir(parents=True)
    (base / "power1_input").write_text("19000000")
    na = json.loads(electrical_json)
    na["power_consumption_watts"] = "N/A"
    na["power_rails"] = []
    fake_pyxrt(info={"electrical": json.dumps(na), "bdf": "0000:81:00.1"})
    board = FpgaBoard.open(0, xclbin, sysfs_root=tmp_path)
    assert board.board_power_w() == pytest.approx(19.0)
    fake_pyxrt(info={"electrical": electrical_json, "bdf": "0000:81:00.1"})
    assert FpgaBoard.open(0, xclbin, sysfs_root=tmp_path).board_power_w() == pytest.approx(21.45)


def test_provenance_records_uuid_platform_and_xrt_version(fake_pyxrt, xclbin, tmp_path):
    platform = json.dumps({"platforms": [{"static_region": {"vbnv": "xilinx_u55c_gen3x16_xdma_base_3"}}]})
    host_info = json.dumps({"xrt": {"version": "2.14.418", "branch": "2022.2"}})
    fake_pyxrt(info={"platform": platform, "host": host_info, "name": "xilinx_u55c", "bdf": "0000:81:00.1"})
    prov = FpgaBoard.open(0, xclbin).provenance()
    assert prov["xclbin_uuid"] == "f00dcafe-0000-4000-8000-000000000001"
    assert prov["xrt_version"] == "2.14.418"
    assert prov["platform"] == "xilinx_u55c_gen3x16_xdma_base_3"
    assert prov["xclbin_sha256"] == hashlib.sha256(xclbin.read_bytes()).hexdigest()
    assert prov["pyxrt_api"] == "hw_context" and prov["backend"] == "xrt"


def test_xrt_version_falls_back_to_version_json(tmp_path):
    (tmp_path / "version.json").write_text(json.dumps({"BUILD_VERSION": "2.13.466"}))
    assert host.xrt_version(None, tmp_path) == "2.13.466"
    assert host.xrt_version(None, tmp_path / "absent") == "unknown"


def test_sort_topk_orders_by_score_then_index_with_empty_slots_last():
    idx = np.array([[5, -1, 2, 9, 1]], dtype=np.int32)
    score = np.array([[7, INT64_MIN, 7, 10, -3]], dtype=np.int64)
    got_idx, got_score = host.sort_topk(idx, score)
    assert got_idx.tolist() == [[9, 2, 5, 1, -1]]
    assert got_score.tolist() == [[10, 7, 7, -3, INT64_MIN]]
