"""The README's set-up commands are what CI runs."""

from pathlib import Path


def _blocks(text):
    out, inside, cur = [], False, []
    for line in text.splitlines():
        if line.startswith("```"):
            if inside:
                out.append("\n".join(cur))
            inside, cur = not inside, []
        elif inside:
            cur.append(line)
    return out


def test_ci_runs_the_readme_test_command():
    readme = Path("README.md").read_text()
    test_cmds = [b for b in _blocks(readme) if "pytest" in b and b.count("\n") == 0]
    assert len(test_cmds) == 1
    lines = Path(".ci/run").read_text().splitlines()
    ci = [line for line in lines if line and not line.startswith(("#", "set ", "cd "))]
    assert ci == [test_cmds[0]]


def test_readme_main_command_runs_quickstart_then_compare():
    readme = Path("README.md").read_text()
    main = [b for b in _blocks(readme) if "bench run suites/quickstart.yaml" in b]
    assert len(main) == 1 and main[0].endswith("bench compare baseline hetero")
