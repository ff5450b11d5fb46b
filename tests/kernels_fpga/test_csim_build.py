"""The C-simulation build: caching, rebuild on change, overrides, concurrency, compiler errors, provenance."""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import numpy as np
import pytest

from bench.errors import DeviceUnavailableError
from kernels_fpga import csim
from kernels_fpga import reference as ref

TINY_CPP = '#include "tiny.h"\nextern "C" int answer(void) { return ANSWER; }\n'


def tiny_sources(folder: Path, answer: int) -> Path:
    """A two-file source tree that compiles in a fraction of a second."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.cpp").write_text(TINY_CPP)
    (folder / "tiny.h").write_text(f"#define ANSWER {answer}\n")
    return folder


def call_answer(library: Path) -> int:
    return ctypes.CDLL(str(library)).answer()


def test_build_is_cached_and_rebuilt_when_a_source_changes(tmp_path: Path) -> None:
    sources, cache = tiny_sources(tmp_path / "src", 41), tmp_path / "cache"
    first = csim.build(source_dir=sources, build_root=cache)
    stamp = first.stat().st_mtime_ns
    assert call_answer(first) == 41
    assert csim.build(source_dir=sources, build_root=cache) == first
    assert first.stat().st_mtime_ns == stamp  # reused, not recompiled
    (sources / "tiny.h").write_text("#define ANSWER 42\n")
    second = csim.build(source_dir=sources, build_root=cache)
    assert second != first and call_answer(second) == 42
    assert call_answer(first) == 41  # the old library stays valid beside the new one
    forced = csim.build(force=True, source_dir=sources, build_root=cache)
    assert forced == second and forced.stat().st_mtime_ns >= second.stat().st_mtime_ns
    assert not list(cache.rglob(".build-*"))  # no temporary files left behind


def test_concurrent_builds_do_not_corrupt_the_library(tmp_path: Path) -> None:
    sources, cache = tiny_sources(tmp_path / "src", 7), tmp_path / "cache"
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(csim.build(force=True, source_dir=sources, build_root=cache))
        except BaseException as error:  # surfaced through the assertion below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1
    assert call_answer(results[0]) == 7


def test_digest_covers_overrides_and_sources(tmp_path: Path) -> None:
    base = csim.build_info()
    assert csim.build_info({"BENCH_K_MAX": 32}).digest != base.digest
    assert csim.build_info({"BENCH_K_MAX": 32}).digest == csim.build_info({"BENCH_K_MAX": 32}).digest
    a = csim.build_info(source_dir=tiny_sources(tmp_path / "a", 1))
    b = csim.build_info(source_dir=tiny_sources(tmp_path / "b", 2))
    assert a.digest != b.digest
    assert "-DBENCH_K_MAX=32" in csim.build_info({"BENCH_K_MAX": 32}).command


def test_override_build_changes_the_compiled_parameters() -> None:
    lib = csim.load(overrides={"BENCH_D": 32, "BENCH_K_MAX": 16, "BENCH_PE_MACS": 256})
    assert lib.params["BENCH_D"] == 32 and lib.params["BENCH_K_MAX"] == 16 and lib.params["BENCH_PE_MACS"] == 256
    assert lib.info.overrides == (("BENCH_D", 32), ("BENCH_K_MAX", 16), ("BENCH_PE_MACS", 256))
    rng = np.random.default_rng(71)
    q = rng.integers(-32768, 32767, size=(2, 32), endpoint=True, dtype=np.int16)
    keys = rng.integers(-32768, 32767, size=(2, 45, 32), endpoint=True, dtype=np.int16)
    got = lib.relevancy_topk(q, keys, 16)
    want = ref.relevancy_topk(q, keys, 16)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    with pytest.raises(ValueError, match="BENCH_K_MAX"):
        lib.relevancy_topk(q, keys, 17)
    with pytest.raises(ValueError, match=r"compiled for D=128.*'BENCH_D': 32"):
        csim.load().relevancy_topk(q, keys, 4)


def test_library_reports_every_overridable_parameter() -> None:
    lib = csim.load()
    assert tuple(lib.params) == csim.PARAMETERS
    assert lib.params["BENCH_BM25_K1_Q16"] == ref.BM25_K1_Q16
    assert lib.params["BENCH_BM25_B_Q16"] == round(ref.BM25_B * ref.Q16_ONE)


def test_provenance_names_compiler_command_and_version() -> None:
    record = csim.load().provenance()
    assert record["backend"] == "csim"
    assert record["command"].startswith("g++ -O2 -std=c++17 -fPIC -shared -fno-gnu-unique")
    assert record["compiler_version"] == csim.compiler_version().splitlines()[0].strip() != ""
    assert record["params"]["BENCH_D"] == 128 and len(record["digest"]) == 20


def test_missing_compiler_is_device_unavailable(tmp_path: Path) -> None:
    with pytest.raises(DeviceUnavailableError, match=r"'no-such-g\+\+-1234'.*Install g\+\+"):
        csim.build(compiler="no-such-g++-1234", source_dir=tiny_sources(tmp_path / "s", 1), build_root=tmp_path)


def test_compile_failure_shows_command_and_compiler_output(tmp_path: Path) -> None:
    with pytest.raises(DeviceUnavailableError) as caught:
        csim.build(overrides={"BENCH_K_MAX": 48}, build_root=tmp_path)  # fails a static_assert
    message = str(caught.value)
    assert "g++ failed" in message and "Command: g++" in message and "-DBENCH_K_MAX=48" in message
    assert "power of two" in message  # the first lines of the compiler's own output
    assert not list(tmp_path.rglob("*.so"))


@pytest.mark.parametrize(("overrides", "message"), [({"BENCH_DD": 3}, "unknown"), ({"BENCH_D": "64"}, "integer")])
def test_bad_overrides(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        csim.build_info(overrides)
