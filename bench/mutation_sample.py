"""A bounded mutation check: a fixed, seeded sample of mutmut's mutants per module.

    uv run python bench/mutation_sample.py names [--per-module 30]   # the sample, for `mutmut run`
    uv run mutmut run --max-children 1 $(uv run python bench/mutation_sample.py names)
    uv run python bench/mutation_sample.py summary                   # counts from mutants/*.meta

The full set (about 1,800 mutants over the four modules) takes hours on a shared 2-core machine;
a seeded sample of each module gives a score with a known error bar in minutes. `names` needs
mutmut's `mutants/` folder (made by a first `mutmut run`, which may be stopped once it started
testing mutants).
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

MODULES = {
    "sync.py": "src/ingestion/sync.py",
    "queue/redis_streams.py": "src/ingestion/queue/redis_streams.py",
    "tokens.py": "src/ingestion/tokens.py",
    "reconcile.py": "src/ingestion/reconcile.py",
}
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 36: "timeout"}
SEED = 21


def _meta(path: str) -> dict[str, int | None]:
    data = json.loads(Path("mutants", path + ".meta").read_text())
    codes: dict[str, int | None] = data["exit_code_by_key"]
    return codes


def sample(per_module: int) -> dict[str, list[str]]:
    rng = random.Random(SEED)
    return {
        module: sorted(rng.sample(sorted(codes), min(per_module, len(codes))))
        for module, path in MODULES.items()
        for codes in [_meta(path)]
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["names", "summary"])
    parser.add_argument("--per-module", type=int, default=30)
    args = parser.parse_args()
    chosen = sample(args.per_module)
    if args.command == "names":
        print(" ".join(name for names in chosen.values() for name in names))
        return
    for module, path in MODULES.items():
        codes = _meta(path)
        counts = Counter(STATUS.get(codes[n], "not checked") for n in chosen[module])  # type: ignore[arg-type]
        print(f"{module}: total {len(codes)}, sampled {len(chosen[module])}: {dict(counts)}")
        for name in chosen[module]:
            status = STATUS.get(codes[name], "not checked")  # type: ignore[arg-type]
            if status != "killed":
                print(f"    {status:12} {name}")


if __name__ == "__main__":
    main()
