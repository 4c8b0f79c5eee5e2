"""Every benchmark table in the docs is generated from a record in benchmarks/results/.

The docs pages include ``docs/_generated/<record>__<table>.rst``, written by
``benchmarks/make_tables.py`` from ``benchmarks/results/<record>.json``.  These tests
check that (1) every included file exists and is exactly what the records give now,
(2) no generated file is orphaned, (3) every record carries the run's provenance
(commit, versions, cores, threads, load before and after, configuration, timings with
their repeats), and (4) no page holds a hand-typed table of timings, memory or speedups.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"
GENERATED = DOCS / "_generated"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


make_tables = _load("make_tables")
INCLUDE = re.compile(r"^\.\.\s+include::\s+(\S+)\s*$", re.M)


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.rst"))


def _includes() -> list[tuple[Path, str]]:
    out = []
    for page in _pages():
        for target in INCLUDE.findall(page.read_text()):
            out.append((page, target))
    return out


def test_records_exist_and_tables_are_included():
    records = sorted(RESULTS.glob("*.json"))
    assert records, "no benchmark records under benchmarks/results/"
    included = {t for _, t in _includes() if t.startswith("_generated/")}
    assert included, "no docs page includes a generated benchmark table"


def test_every_included_table_is_generated_from_a_present_record():
    want = make_tables.expected_files(str(RESULTS))
    for page, target in _includes():
        if not target.startswith("_generated/"):
            continue
        name = target.split("/", 1)[1]
        assert name in want, (f"{page.name} includes {target}, which no record in "
                              "benchmarks/results/ produces")
        path = GENERATED / name
        assert path.exists(), f"{page.name} includes {target}: file missing (run make_tables)"
        assert path.read_text() == want[name], (
            f"{target} differs from what its record gives: run benchmarks/make_tables.py")
        src = want[name].splitlines()[0]
        record = re.search(r"benchmarks/results/(\S+\.json)", src).group(1)
        assert (RESULTS / record).exists()


def test_generated_tables_are_not_sphinx_sources():
    """docs/_generated/*.rst are included, never built as pages of their own."""
    conf = (DOCS / "conf.py").read_text()
    m = re.search(r"exclude_patterns\s*=\s*\[([^\]]*)\]", conf)
    assert m and "_generated" in m.group(1), "add '_generated' to exclude_patterns in conf.py"


def test_no_orphan_generated_files():
    want = make_tables.expected_files(str(RESULTS))
    have = {p.name for p in GENERATED.glob("*.rst")}
    assert have <= set(want), f"generated files without a record: {sorted(have - set(want))}"


@pytest.mark.parametrize("path", sorted(RESULTS.glob("*.json")), ids=lambda p: p.name)
def test_record_provenance(path):
    rec = json.loads(path.read_text())
    assert rec["commit"]["sha"] and len(rec["commit"]["sha"]) == 40
    assert rec["versions"]["python"] and rec["versions"]["numpy"]
    assert rec["machine"]["cpu_count"] >= 1
    assert set(rec["threads"]) >= {"torch", "numba", "openblas"}
    for key in ("load_before", "load_after"):
        assert len(rec[key]["loadavg"]) == 3 and rec[key]["utc"]
    assert isinstance(rec["under_load"], bool)
    assert isinstance(rec["config"], dict) and "quick" in rec["config"]
    assert rec["measurements"], "a record without measurements"
    assert rec["tables"], "a record without tables"
    # every timing comes with its repeats somewhere in the raw measurements
    text = json.dumps(rec["measurements"])
    assert "times_s" in text or "timing" in text, "no repeated timings recorded"
    for t in rec["tables"]:
        assert t["rows"], f"table {t['key']} is empty"
        assert all(len(r) == len(t["columns"]) for r in t["rows"])


def test_machine_state_is_stated_with_every_table():
    for name, text in make_tables.expected_files(str(RESULTS)).items():
        assert "Machine state:" in text and "load average" in text, name
        rec = json.loads((RESULTS / (name.split("__")[0] + ".json")).read_text())
        assert ("**under load**" in text) == rec["under_load"], name


_NUMERIC_HEADER = re.compile(r"\(s\)|\(ms\)|MiB|time|speed|faster|x vs|×|peak", re.I)
_LITERAL_HEADER = re.compile(r"\(s\)|\(ms\)|MiB|x vs|/this|faster", re.I)
_NUMBER = re.compile(r"(?<![\w.])\d+(\.\d+)?(e-?\d+)?(?![\w.])")


def _tables(text: str) -> list[list[str]]:
    """Blocks of simple tables (``===`` rules) and list-tables, as their lines."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        ln = lines[i]
        if re.match(r"^\s*=+(\s+=+)+\s*$", ln):  # simple table: rule, header, rule, rows, rule
            j, rules = i, 0
            while j < len(lines) and lines[j].strip() and rules < 3:
                rules += bool(re.match(r"^\s*=+(\s+=+)+\s*$", lines[j]))
                j += 1
            blocks.append(lines[i:j])
            i = j
        elif (ln.rstrip().endswith("::") and not ln.strip().startswith(".. ")) or \
                ln.strip().startswith(".. code-block::"):
            # literal block: the indented lines that follow
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or lines[j].startswith(" ")):
                j += 1
            block = [x for x in lines[i + 1:j] if x.strip() and not x.strip().startswith(":")]
            if block and _LITERAL_HEADER.search("\n".join(block[:3])):
                blocks.append(block)
            i = j
        elif ln.strip().startswith(".. list-table::") or ln.strip().startswith(".. csv-table"):
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or lines[j].startswith(" ")):
                j += 1
            blocks.append(lines[i:j])
            i = j
        else:
            i += 1
    return blocks


# pages that report benchmarks; add a page here when it starts printing timings
BENCHMARK_PAGES = ("benchmarks", "mra", "estimators", "eigen", "solvers", "graphs",
                   "graph_kernels", "relative_position", "layers", "backends", "torch",
                   "hybrid", "population")


def test_no_hand_typed_benchmark_tables():
    offenders = []
    for page in _pages():
        if page.stem not in BENCHMARK_PAGES:
            continue
        for block in _tables(page.read_text()):
            body = "\n".join(block)
            header = "\n".join(block[:8])
            if _NUMERIC_HEADER.search(header) and len(_NUMBER.findall(body)) >= 4:
                offenders.append(f"{page.name}: {block[0].strip()[:60]}")
    assert not offenders, ("hand-typed benchmark tables (generate them from a record with "
                           f"benchmarks/make_tables.py): {offenders}")


def test_render_formats_and_marks_load(tmp_path):
    rec = {"schema": 1, "name": "demo", "commit": {"sha": "a" * 40, "dirty": False},
           "versions": {"torch": "2.x", "numpy": "2.x"}, "machine": {"cpu_count": 2},
           "threads": {"torch": 2, "numba": 2, "openblas": 2}, "config": {"quick": True},
           "load_before": {"utc": "t0", "loadavg": [1.5, 1, 1], "other_cores": 1.2},
           "load_after": {"utc": "t1", "loadavg": [1.7, 1, 1], "other_cores": 1.1},
           "under_load": True, "measurements": [{"times_s": [0.1]}],
           "tables": [{"key": "t", "title": "T", "columns": ["L", "time (s)", "x"],
                       "rows": [[1024, 0.012345, None], [4096, 123.456, 2.0]],
                       "notes": ["a note"]}]}
    (tmp_path / "demo.json").write_text(json.dumps(rec))
    files = make_tables.expected_files(str(tmp_path))
    text = files["demo__t.rst"]
    assert "* - 1024" in text and "- 0.0123" in text and "- 123" in text and "- –" in text
    assert "**under load**" in text and "1.50 before, 1.70 after" in text
    assert "a note" in text and "``--quick`` run" in text
    assert make_tables.fmt(0.5) == "0.500" and make_tables.fmt(12.34) == "12.3"
    assert make_tables.fmt(2.0e-5) == "2.00e-05" and make_tables.fmt(5) == "5"
