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
from kernels_fpga import reference as ref
from kernels_fpga.host import FpgaBoard, FpgaRunError
from kernels_fpga.interface import KERNELS, arg_index
from kernels_fpga.layout import Stripes, bm25_channels
from kernels_fpga.params import kernel_params

D = 128
VOCAB = 65536
INT64_MIN = np.iinfo(np.int64).min


@pytest.fixture
def xclbin(tmp_path: Path) -> Path:
    path = tmp_path / "bench_u55c.xclbin"
    path.write_bytes(b"xclbin2\x00" + bytes(range(64)))
    return path


def arg_counts(*names: str) -> dict[str, int]:
    """What an xclbin built from these sources reports for each kernel."""
    return {name: len(KERNELS[name]) for name in names}


def shared_key_banks(**moved: int) -> dict[str, dict[int, int]]:
    """Group ids as the .cfg gives them: keys<p> of both key kernels on HBM bank p (``moved`` overrides)."""
    return {name: {arg_index(name, f"keys{p}"): moved.get(f"{name}.keys{p}", p) for p in range(8)}
            for name in ("relevancy_topk", "threshold_select")}


def keys_for(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    return rng.integers(-300, 300, size=(rows, n, D), dtype=np.int16)


def query_for(rng: np.random.Generator, rows: int) -> np.ndarray:
    return rng.integers(-300, 300, size=(rows, D), dtype=np.int16)


def key_bo_ids(fake) -> list[int]:
    return [b.id for b in fake.bos[:8]]  # load_keys allocates the 8 key ports first


def test_open_on_216_uses_a_hardware_context(fake_pyxrt, xclbin):
    fake = fake_pyxrt(api="2.16")
    board = FpgaBoard.open("0000:81:00.1", xclbin)
    names = [c[0] for c in fake.calls]
    assert names == ["device", "xclbin", "register_xclbin", "hw_context", "kernel"]
    assert fake.calls[0] == ("device", "0000:81:00.1")
    assert fake.calls[-1] == ("kernel", "context-form", "relevancy_topk")
    assert board.uses_hw_context and board.params == kernel_params()


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


def test_missing_device_kernel_or_a_stale_xclbin(fake_pyxrt, xclbin):
    fake_pyxrt()
    with pytest.raises(DeviceUnavailableError, match="no FPGA at device 'missing'"):
        FpgaBoard.open("missing", xclbin)
    fake_pyxrt(kernel_args=arg_counts("page_topk"))
    with pytest.raises(DeviceUnavailableError, match=r"no kernel relevancy_topk.*page_topk"):
        FpgaBoard.open(0, xclbin)
    fake_pyxrt(kernel_args={"relevancy_topk": 10})  # built from the single-port sources
    with pytest.raises(DeviceUnavailableError, match=r"takes 10 arguments.*declares 18"):
        FpgaBoard.open(0, xclbin)
    with pytest.raises(UsageError, match="unknown kernel"):
        FpgaBoard.open(0, xclbin, kernels=("relevancy",))


def test_load_keys_stripes_the_ports_on_their_own_banks_and_syncs_each_once(fake_pyxrt, xclbin):
    groups = {arg_index("relevancy_topk", f"keys{p}"): p for p in range(8)}
    groups.update({0: 30, 9: 31, 10: 31})
    fake = fake_pyxrt(group_ids={"relevancy_topk": groups})
    board = FpgaBoard.open(0, xclbin)
    rows, n, cap = 3, 1300, 1500  # two stripes rounds of capacity: 256 keys per row on every port
    keys = keys_for(np.random.default_rng(1), rows, n)
    board.load_keys(rows, keys, capacity=cap)
    allocs = [(nbytes, group) for _, _, nbytes, _, group in fake.events("bo")]
    port_bytes = rows * 256 * D * 2
    assert allocs == [(port_bytes, p) for p in range(8)] + [(rows * D * 2, 30), (rows * 64 * 4, 31),
                                                             (rows * 64 * 8, 31)]
    assert fake.events("sync") == [("sync", i, "TO_DEVICE", port_bytes, 0) for i in key_bo_ids(fake)]
    want = Stripes(8, 128, cap).split(keys)
    for p, bo in enumerate(fake.bos[:8]):
        assert bytes(bo.device) == want[p].tobytes()
    assert board.keys_per_row() == [n] * rows


def test_append_writes_and_syncs_only_the_new_key_on_its_port(fake_pyxrt, xclbin):
    fake = fake_pyxrt()
    board = FpgaBoard.open(0, xclbin)
    rows, n, cap = 2, 1150, 1200
    board.load_keys(rows, keys_for(np.random.default_rng(2), rows, n), capacity=cap)
    key = np.arange(D, dtype=np.int16)
    before = len(fake.calls)
    board.append_key(1, key)
    port, entry = Stripes(8, 128, cap).location(1, n)  # key 1150: stripe 8 -> port 0, local 128 + 126
    assert port == 0 and entry == 256 + 254
    bo = fake.bos[port]
    assert fake.calls[before:] == [("write", bo.id, D * 2, entry * D * 2), ("sync", bo.id, "TO_DEVICE", D * 2,
                                                                            entry * D * 2)]
    assert bytes(bo.device[entry * D * 2:(entry + 1) * D * 2]) == key.tobytes()
    assert board.keys_per_row() == [n, n + 1]
    for _ in range(cap - n - 1):
        board.append_key(1, key)
    with pytest.raises(UsageError, match="row 1 is full"):
        board.append_key(1, key)
    with pytest.raises(UsageError, match="int16"):
        board.append_key(0, key.astype(np.int32))


@pytest.mark.parametrize(("rows", "n", "k"), [(1, 200, 64), (3, 1045, 16), (2, 10, 32), (17, 1100, 8)])
def test_run_writes_only_the_query_and_matches_the_reference(fake_pyxrt, csim_kernel, xclbin, rows, n, k):
    fake = fake_pyxrt(on_run=csim_kernel)
    board = FpgaBoard.open(0, xclbin)
    rng = np.random.default_rng(rows * 100 + n)
    keys = keys_for(rng, rows, n)
    keys[:, 3] = keys[:, 1]  # ties: equal scores must rank by index
    board.load_keys(rows, keys, capacity=n + 4)
    q = query_for(rng, rows)
    before = len(fake.calls)
    idx, score = board.run_relevancy_topk(q, n, k)
    run_calls = fake.calls[before:]
    q_bo, idx_bo, score_bo = (b.id for b in fake.bos[8:11])
    syncs = [c for c in run_calls if c[0] == "sync"]
    assert syncs == [("sync", q_bo, "TO_DEVICE", rows * D * 2, 0),
                     ("sync", idx_bo, "FROM_DEVICE", rows * k * 4, 0),
                     ("sync", score_bo, "FROM_DEVICE", rows * k * 8, 0)]
    assert not any(c[0] == "write" and c[1] in key_bo_ids(fake) for c in run_calls)
    start = next(c for c in run_calls if c[0] == "start")
    ports = tuple(("bo", i) for i in key_bo_ids(fake))
    assert start[2] == (("bo", q_bo), *ports, ("bo", idx_bo), ("bo", score_bo), rows, n, n + 4, k,
                        16384 // rows, 32768 // rows, 0)
    want = ref.relevancy_topk(q, keys, k)
    np.testing.assert_array_equal(idx, want[0])
    np.testing.assert_array_equal(score, want[1])
    assert set(board.last_timings) == {"sync_in", "kernel", "sync_out"}


@pytest.mark.parametrize("rows", [2, 17])  # on-chip (BRAM) rows; URAM + HBM rows
def test_appended_keys_are_synced_into_the_on_chip_tiers_by_the_next_run(fake_pyxrt, csim_kernel, xclbin, rows):
    fake = fake_pyxrt(on_run=csim_kernel)
    board = FpgaBoard.open(0, xclbin)
    rng = np.random.default_rng(5 + rows)
    keys = keys_for(rng, rows, 1030)
    board.load_keys(rows, keys[:, :1020], capacity=1030)
    q = query_for(rng, rows)
    board.run_relevancy_topk(q, 1020, 8)
    for i in range(1020, 1030):  # a decode step appends one key per row
        for r in range(rows):
            board.append_key(r, keys[r, i])
    idx, score = board.run_relevancy_topk(q, 1030, 8)
    assert fake.events("start")[-1][2][-1] == 1020  # sync_from: only the appended keys are copied on chip
    want = ref.relevancy_topk(q, keys, 8)
    np.testing.assert_array_equal(idx, want[0])
    np.testing.assert_array_equal(score, want[1])
    board.run_relevancy_topk(q, 1030, 8)
    assert fake.events("start")[-1][2][-1] == 1030  # nothing new to sync


def test_fewer_keys_than_k_leave_empty_slots_last(fake_pyxrt, csim_kernel, xclbin):
    fake_pyxrt(on_run=csim_kernel)
    board = FpgaBoard.open(0, xclbin)
    rng = np.random.default_rng(7)
    board.load_keys(1, keys_for(rng, 1, 3))
    idx, score = board.run_relevancy_topk(rng.integers(-9, 9, size=(1, D), dtype=np.int16), 3, 5)
    assert list(idx[0, 3:]) == [-1, -1] and list(score[0, 3:]) == [INT64_MIN, INT64_MIN]
    assert np.all(np.diff(score[0, :3]) <= 0)


def test_threshold_select_shares_the_keys_and_passes_its_threshold_in_a_buffer(fake_pyxrt, csim_kernel, xclbin):
    fake = fake_pyxrt(kernel_args=arg_counts("relevancy_topk", "threshold_select"), group_ids=shared_key_banks(),
                      on_run=csim_kernel)
    board = FpgaBoard.open(0, xclbin, kernels=("relevancy_topk", "threshold_select"))
    rng = np.random.default_rng(8)
    rows, n = 2, 1500
    keys = keys_for(rng, rows, n)
    board.load_keys(rows, keys, capacity=1600)
    q = query_for(rng, rows)
    threshold = int(np.median(ref.inner_product_scores(q, keys)))
    before = len(fake.calls)
    bitmap, count = board.run_threshold_select(q, n, threshold)
    want = ref.threshold_select(q, keys, threshold)
    np.testing.assert_array_equal(bitmap, want[0])
    np.testing.assert_array_equal(count, want[1])
    limit_bo = next(b for b in fake.bos if b.nbytes == 8)
    writes = [c for c in fake.calls[before:] if c[0] == "write"]
    assert writes == [("write", fake.bos[8].id, rows * D * 2, 0), ("write", limit_bo.id, 8, 0)]
    start = fake.events("start")[-1]
    assert start[1] == "threshold_select" and start[2][1] == ("bo", limit_bo.id)
    assert start[2][2:10] == tuple(("bo", i) for i in key_bo_ids(fake))  # the relevancy kernel's key buffers
    _, none = board.run_threshold_select(q, n, 2**40)  # beyond a C int: fine through the buffer
    assert (none == 0).all()
    idx, _ = board.run_relevancy_topk(q, n, 4)
    np.testing.assert_array_equal(idx, ref.relevancy_topk(q, keys, 4)[0])


def test_key_kernels_must_share_key_banks(fake_pyxrt, xclbin):
    fake_pyxrt(kernel_args=arg_counts("relevancy_topk", "threshold_select"),
               group_ids=shared_key_banks(**{"threshold_select.keys3": 77}))
    board = FpgaBoard.open(0, xclbin, kernels=("relevancy_topk", "threshold_select"))
    with pytest.raises(DeviceUnavailableError, match=r"keys3.*same HBM bank"):
        board.load_keys(1, np.zeros((1, 4, D), dtype=np.int16))


def bm25_corpus(rng: np.random.Generator, n_docs: int, terms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lengths = rng.integers(0, 40, size=n_docs, endpoint=True)
    doc_ptr = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    term_ids = rng.integers(0, terms, size=int(doc_ptr[-1])).astype(np.uint32)
    tfs = rng.integers(1, 20, size=int(doc_ptr[-1]), endpoint=True).astype(np.uint16)
    return doc_ptr, term_ids, tfs


def test_bm25_keeps_the_corpus_and_idf_resident_and_sends_only_the_query(fake_pyxrt, csim_kernel, xclbin):
    fake = fake_pyxrt(kernel_args=arg_counts("bm25_topk"), on_run=csim_kernel)
    board = FpgaBoard.open(0, xclbin, kernels=("bm25_topk",))
    rng = np.random.default_rng(9)
    doc_ptr, term_ids, tfs = bm25_corpus(rng, 203, 500)
    idf = ref.bm25_idf_q16(rng.integers(0, 203, size=VOCAB, endpoint=True), 203)
    with pytest.raises(UsageError, match="load_bm25_corpus"):
        board.load_bm25_idf(idf)
    board.load_bm25_corpus(doc_ptr, term_ids, tfs)
    channels = bm25_channels(doc_ptr, term_ids, tfs, 4, 16)
    allocs = fake.events("bo")
    groups = [arg_index("bm25_topk", f"{name}{c}") for c in range(4) for name in ("doc_ptr", "postings")]
    assert [(a[2], a[4]) for a in allocs[:8]] == [
        (array.nbytes, 100 + g) for (ptr, post), gp in zip(channels, zip(groups[::2], groups[1::2], strict=True),
                                                           strict=True) for array, g in ((ptr, gp[0]), (post, gp[1]))]
    assert len(fake.events("sync")) == 8  # each channel buffer synced once
    with pytest.raises(UsageError, match="load_bm25_idf"):
        board.run_bm25_topk([1], 4)
    board.load_bm25_idf(idf)
    load = fake.events("start")[-1][2]
    assert load[-3:] == (0, 1, 1)  # n_docs = 0, k = 1, load_idf = 1
    for seed in (1, 2):
        query = np.random.default_rng(seed).integers(0, 500, size=5)
        before = len(fake.calls)
        index, score = board.run_bm25_topk(query, 16)
        run = fake.calls[before:]
        assert [c for c in run if c[0] == "write"] == [("write", fake.bos[8].id, VOCAB // 8, 0)]
        assert fake.events("start")[-1][2][-3:] == (203, 16, 0)
        want = ref.bm25_topk(doc_ptr, term_ids, tfs, query, idf, 16)
        np.testing.assert_array_equal(index, want[0])
        np.testing.assert_array_equal(score, want[1])


@pytest.mark.parametrize("state", ["ERT_CMD_STATE_ERROR", "ERT_CMD_STATE_TIMEOUT"])
def test_a_run_that_does_not_complete_raises_with_its_state(fake_pyxrt, xclbin, state):
    fake_pyxrt(final_state=state)
    board = FpgaBoard.open(0, xclbin)
    board.load_keys(1, np.zeros((1, 4, D), dtype=np.int16))
    with pytest.raises(FpgaRunError, match=state):
        board.run_relevancy_topk(np.zeros((1, D), dtype=np.int16), 4, 2)


def test_run_validates_query_k_and_n_keys(fake_pyxrt, xclbin):
    fake_pyxrt()
    board = FpgaBoard.open(0, xclbin)
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
    with pytest.raises(UsageError, match="capacity"):
        board.load_keys(2, np.zeros((2, 8, D), dtype=np.int16), capacity=7)
    with pytest.raises(UsageError, match="not opened"):
        board.run_threshold_select(q, 8, 0)


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


def test_key_sets_take_turns_on_the_on_chip_tiers(fake_pyxrt, csim_kernel, xclbin):
    fake = fake_pyxrt(on_run=csim_kernel)
    board = FpgaBoard.open(0, xclbin)
    rng = np.random.default_rng(11)
    keys = [keys_for(rng, 2, 40), keys_for(rng, 2, 40)]
    for s in (0, 1):
        board.load_keys(2, keys[s], key_set=s, source=f"layer {s}")
    q = query_for(rng, 2)

    def run(s):
        idx, score = board.run_relevancy_topk(q, 40, 4, key_set=s)
        want = ref.relevancy_topk(q, keys[s], 4)
        np.testing.assert_array_equal(idx, want[0])
        np.testing.assert_array_equal(score, want[1])
        return fake.events("start")[-1][2][-1]  # sync_from

    assert [run(0), run(0), run(1), run(0), run(0)] == [0, 40, 0, 0, 40]
    board.load_keys(2, keys[0], key_set=0)  # reloaded: the tiers' copy of set 0 is stale
    assert run(0) == 0
    assert board.key_set_source(1) == "layer 1" and board.key_set_source(0) is None and board.key_set_source(2) is None
    with pytest.raises(UsageError, match="no keys in key set 2"):
        board.run_relevancy_topk(q, 40, 4, key_set=2)
