"""Convert CLINC150 (``data_full.json`` of github.com/clinc/oos-eval, CC-BY-3.0) into a data set folder.

Writes ``train.csv`` (the 15,000 ``train`` + 3,000 ``val`` in-scope rows), ``test.csv`` (the 4,500
in-scope ``test`` rows), ``categories.json`` (150 intents, sorted) and ``SOURCE.txt``; the
out-of-scope rows are left out (no variant is trained to abstain). Used as the second data set of
``bench_routing_economics.py``::

    python tests/bench/economics_clinc150.py /path/to/oos-eval/data/data_full.json out/datasets/clinc150
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def convert(source: Path, dest: Path) -> dict[str, int]:
    """Write the folder; returns the row counts."""
    data = json.loads(source.read_text(encoding="utf-8"))
    missing = [k for k in ("train", "val", "test") if k not in data]
    if missing:
        raise SystemExit(f"{source}: keys {missing} missing; give CLINC150's data_full.json")
    dest.mkdir(parents=True, exist_ok=True)
    splits = {"train": data["train"] + data["val"], "test": data["test"]}
    for name, rows in splits.items():
        with (dest / f"{name}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows([text.strip(), label] for text, label in rows)
    labels = sorted({label for _, label in splits["train"]})
    (dest / "categories.json").write_text(json.dumps(labels, indent=1), encoding="utf-8")
    (dest / "SOURCE.txt").write_text(
        "CLINC150 (Larson et al. 2019, EMNLP), github.com/clinc/oos-eval data/data_full.json, CC-BY-3.0.\n"
        "train.csv = train + val in-scope rows; test.csv = test in-scope rows; out-of-scope rows dropped.\n",
        encoding="utf-8",
    )
    return {name: len(rows) for name, rows in splits.items()} | {"classes": len(labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="CLINC150 data_full.json")
    parser.add_argument("dest", type=Path, help="output data set folder")
    args = parser.parse_args()
    print(convert(args.source, args.dest))


if __name__ == "__main__":
    main()
