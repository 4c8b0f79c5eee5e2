"""
Running a study sweep and writing its report
============================================

:mod:`structattn.studies` compares registered attention approximations with exact
softmax attention on the same inputs.  :func:`~structattn.studies.run_study` runs a
sweep — every operator at every budget value of its registry entry, at every length —
and returns one flat record per task; :func:`~structattn.studies.summarize`,
:func:`~structattn.studies.summary_table` and :func:`~structattn.studies.write_report`
turn the records into tables, figures and a Markdown/HTML report.  (The command line
``structattn study`` runs the same thing; ``engine="dask"`` spreads the error
computations over a dask cluster.)

This tutorial runs a tiny synthetic sweep: four operators, two lengths, two heads,
without timing (timings on a shared documentation builder would mean little).
"""

# %%
# The sweep
# ---------

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt

from structattn.studies import registry, run_study, summarize, summary_table, write_report

operators = ["uniform", "performer", "lara", "ra"]
print("registered operators:", len(registry()), "- running", operators)
records = run_study(operators, lengths=(64, 128), dim=32, value_dim=32, heads=2,
                    causal=False, seeds=(0,), timing=False)
print(f"{len(records)} records; keys of one record:")
print(sorted(records[0]))

# %%
# The summary table: one line per operator and budget, the mean relative error at each
# length (``!`` marks an error that is not below uniform attention's).

rows = summarize(records)
print(summary_table(rows))

# %%
# Error against budget, from the records themselves.  Uniform attention (no budget) is
# the trivial baseline every method must beat.

fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained", sharey=True)
for ax, L in zip(axes, (64, 128), strict=False):
    at_L = [r for r in records if r["length"] == L]
    for op, marker in zip(operators[1:], "os^", strict=False):
        mine = [r for r in at_L if r["operator"] == op and r["head_error"] is not None]
        pts = sorted((r["budget_value"], r["head_error"]) for r in mine)
        b, e = zip(*pts, strict=False)
        ax.loglog(b, e, marker=marker, label=f"{op} ({mine[0]['budget_name']})")
    base = [r["head_error"] for r in at_L if r["operator"] == "uniform"]
    ax.axhline(base[0], color="k", ls=":", label="uniform attention")
    ax.set_title(f"L = {L}")
    ax.set_xlabel("budget")
    ax.grid(True, which="both", alpha=0.3)
axes[0].set_ylabel("relative error (mean over heads)")
axes[0].legend(fontsize=8)

# %%
# The report
# ----------
#
# :func:`~structattn.studies.write_report` writes ``report.md``, ``report.html`` and the
# figures into a directory (a temporary one here).

with tempfile.TemporaryDirectory() as tmp:
    paths = write_report(records, Path(tmp) / "report")
    for key, path in sorted(paths.items()):
        print(f"{key:>12}: {Path(path).name} ({Path(path).stat().st_size} bytes)")
    md = Path(paths["markdown"] if "markdown" in paths else next(
        p for p in paths.values() if str(p).endswith(".md"))).read_text()
    print("\n".join(md.splitlines()[:12]))
