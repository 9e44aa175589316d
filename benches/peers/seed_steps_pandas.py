"""The seed study's analysis steps in pandas: the peer of `benches/analysis.sh`.

Run in a directory holding output/dataset.csv.gz and output/dataset_pivoted.csv.gz (1,000,000
rows each); computes what analysis/initial_analysis.yaml and aggregate_pivots.yaml compute (the
frequency tables with midpoint-6 rounding, the two crosstabs with proportions from the rounded
counts, the pivots' value counts with 1-7 redacted), without drawing charts, and prints the
wall time of each part.
"""
import math
import sys
import time

import pandas as pd


def roundmid_any(x, to=6):
    return (x / to).apply(math.ceil) * to - (to // 2) * (x != 0)


def main(part):
    t0 = time.perf_counter()
    if part == "initial_analysis":
        df = pd.read_csv("output/dataset.csv.gz")
        t1 = time.perf_counter()
        for col in ["vte_count_primary_diagnoses", "vte_count_secondary_admissions", "vte_count_secondary_admissions_mb"]:
            counts = df.groupby(col, dropna=False).size().reset_index(name="n")
            counts["n"] = roundmid_any(counts["n"])
            counts.to_csv(f"peer_{col}.csv", index=False)
        flags = pd.DataFrame({
            "p": (df["vte_count_primary_diagnoses"] > 0).astype(int),
            "s": (df["vte_count_secondary_admissions"] > 0).astype(int),
            "m": (df["vte_count_secondary_admissions_mb"] > 0).astype(int),
        })
        flags["any"] = flags[["s", "m"]].max(axis=1)
        for a, b in [("s", "m"), ("p", "any")]:
            t = flags.groupby([a, b]).size().reset_index(name="n")
            t["n"] = roundmid_any(t["n"])
            t["p"] = (t["n"] / t["n"].sum()).round(3)
            t.sort_values("p", ascending=False).to_csv(f"peer_crosstab_{a}_{b}.csv", index=False)
    else:
        df = pd.read_csv("output/dataset_pivoted.csv.gz")
        t1 = time.perf_counter()
        for col in [c for c in df.columns if c.startswith("vte_primary_events") and c.endswith("code")]:
            counts = df[col].value_counts()
            counts = counts.astype(object).where((counts == 0) | (counts > 7), "redacted")
            counts.to_csv(f"peer_{col}.csv", header=False)
    t2 = time.perf_counter()
    print(f"{part}: read {t1 - t0:.2f} s, steps {t2 - t1:.2f} s, total {t2 - t0:.2f} s")


main(sys.argv[1])
