"""The seed recipes of docs/training.md re-run on offline data they were not tuned on.

``python -m bench.training_recipes --out DIR [--data DIR] [--recipes a,b] [--epochs N]
[--max-per-class N]``

1. Writes the data sets of bench/recipe_data.py under ``--data`` (default: a folder in the
   system's temporary directory, never the repository), once.
2. Runs each recipe as ``python -m roost train`` (the ``roost`` command) in a child process,
   one at a time, from the repository this file belongs to, at the backbone's default
   settings; ``efficientnet_lite0``'s converted ImageNet weights are made first
   (``roost weights``) so that no recipe's time includes the conversion.
3. Collects per recipe: val/test accuracy (and train accuracy where it has it) from
   ``summary.json``; the epochs run, the restored one and the accuracy while fitting it from
   ``history.json``; the images per split from ``split.json``; the wall time of the whole
   command (decode, fit, evaluate); the child's peak resident memory (``wait4``'s
   ``ru_maxrss``: training and evaluation; ``history.json``'s ``peak_rss_mb`` is the same
   process up to the end of fitting); the load average while it ran; and the code it ran on
   (commit, and whether training/ or roost/ had uncommitted changes).

Writes ``--out``/training_recipes.json, keeps the run folders under ``--out``/runs/ and prints
a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import recipe_data

REPO_ROOT = Path(__file__).resolve().parents[1]

MNIST_LENET = "LeNet-5 on MNIST 99.05 % (LeCun et al. 1998)"
SHALLOW = "ShallowNet ~60 % CIFAR-10, ~71 % Animals (Rosebrock, DL4CV)"
MINIVGG = "MiniVGGNet ~83 % CIFAR-10 (Rosebrock, DL4CV)"
DIGITS_FLOOR = "; 10 digits: a linear model reaches ~95 %"


@dataclass(frozen=True)
class Recipe:
    """One ``roost train`` at a backbone's default settings on one data set."""

    name: str
    data: str  # a key of recipe_data.WRITERS
    backbone: str
    published: str  # the figure the result is judged against
    args: tuple[str, ...] = ()


RECIPES = (
    Recipe("lenet-digits", "digits", "lenet", MNIST_LENET),
    Recipe("shallownet-digits", "digits", "shallownet", SHALLOW + DIGITS_FLOOR),
    Recipe("minivggnet-digits", "digits", "minivggnet", MINIVGG + DIGITS_FLOOR),
    Recipe("lenet-font-digits", "font-digits", "lenet", MNIST_LENET),
    Recipe("shallownet-font-digits", "font-digits", "shallownet", SHALLOW + DIGITS_FLOOR),
    Recipe("minivggnet-font-digits", "font-digits", "minivggnet", MINIVGG + DIGITS_FLOOR),
    Recipe(
        "efficientnet_lite0-emoji",
        "emoji",
        "efficientnet_lite0",
        "ImageNet top-1 75.1 % (its weights' own task); no published emoji figure",
    ),
    # every keras.applications backbone needs Keras' download for its ImageNet weights
    Recipe("mobilenetv2-emoji", "emoji", "mobilenetv2", "ImageNet top-1 71.3 % (Keras)"),
)


def code_version(root: Path) -> dict[str, Any]:
    """The commit of ``root`` and the files under training/ and roost/ that differ from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "training", "roost").splitlines()
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted": changed}


def _read_json(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _fit(epochs: dict[str, list[float]]) -> dict[str, Any]:
    """Epochs run, the one early stopping restored (lowest val loss; single phase: the seed
    recipes have no phase 2) and the accuracy while fitting it (augmented, training mode)."""
    losses = epochs.get("val_loss") or []
    if not losses:
        return {"epochs_run": None, "restored_epoch": None, "fit_accuracy": None}
    best = min(range(len(losses)), key=losses.__getitem__)
    return {
        "epochs_run": len(losses),
        "restored_epoch": best + 1,
        "fit_accuracy": epochs["accuracy"][best],
    }


def run_recipe(recipe: Recipe, data: Path, runs: Path, overrides: list[str]) -> dict[str, Any]:
    """``roost train`` for one recipe in a child process, and what it measured."""
    run = runs / recipe.name
    run.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "roost", "train", "--data", str(data), "--out", str(run)]
    command += ["--backbone", recipe.backbone, *recipe.args, "--verbose", "2", *overrides]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with (run / "train.log").open("w") as log:
        child = subprocess.Popen(
            command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        # wait4, not wait: the rusage of this child alone (ru_maxrss in KiB on Linux)
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall_s = time.perf_counter() - started
    summary = _read_json(run / "summary.json")
    history = _read_json(run / "history.json")
    split = _read_json(run / "split.json")
    log_tail = (run / "train.log").read_text(errors="replace").strip().splitlines()[-3:]
    return {
        **asdict(recipe),
        "command": ["roost", *command[3:]],
        "exit_code": child.returncode,
        "log_tail": log_tail if child.returncode else [],
        **{f"{name}_images": len(split.get(name, [])) for name in ("train", "val", "test")},
        "image_size": summary.get("image_size"),
        **_fit(history.get("history") or {}),
        # the saved model on its own training split (summary.json has it from #30 on)
        "train_accuracy": summary.get("train_accuracy"),
        "best_val_accuracy": summary.get("best_val_accuracy"),
        "val_accuracy": summary.get("val_accuracy"),
        "test_accuracy": summary.get("test_accuracy"),
        "wall_s": round(wall_s, 1),
        "fit_s": history.get("train_seconds"),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),
        "fit_peak_rss_mb": history.get("peak_rss_mb"),
        "load_avg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def _prepare_weights(recipes: list[Recipe]) -> None:
    """Convert EfficientNet-Lite0's ImageNet weights once, outside every recipe's clock."""
    if any(r.backbone == "efficientnet_lite0" for r in recipes):
        subprocess.run([sys.executable, "-m", "roost", "weights"], cwd=REPO_ROOT, check=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.training_recipes", description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="results and run folders")
    p.add_argument(
        "--data",
        type=Path,
        default=Path(tempfile.gettempdir()) / "roost-recipes-data",
        help="where the data sets are written (once)",
    )
    p.add_argument("--recipes", default=",".join(r.name for r in RECIPES))
    p.add_argument("--epochs", type=int, help="passed to every recipe (default: the recipe's)")
    p.add_argument("--max-per-class", type=int, help="passed to every recipe (a quick check)")
    args = p.parse_args(argv)

    by_name = {r.name: r for r in RECIPES}
    chosen = [by_name[name] for name in args.recipes.split(",")]
    overrides = ["--epochs", str(args.epochs)] if args.epochs else []
    overrides += ["--max-per-class", str(args.max_per_class)] if args.max_per_class else []
    _prepare_weights(chosen)
    results: dict[str, Any] = {
        "code": code_version(REPO_ROOT),
        "cpus": os.cpu_count(),
        "overrides": overrides,
        "data_root": str(args.data),
        "runs": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for recipe in chosen:
        data = recipe_data.WRITERS[recipe.data](args.data / recipe.data)
        row = run_recipe(recipe, data, args.out / "runs", overrides)
        results["runs"].append(row)
        print(json.dumps(row), flush=True)
        # written after each recipe: an interrupted bench keeps the rows it finished
        (args.out / "training_recipes.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return 0


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| recipe | data: train / val / test images | backbone, size | epochs run (restored) "
        "| fit acc. | train acc. | test acc. | time s (fit) | peak MB | published figure |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        if r["exit_code"]:
            # the error's first clause: the rest (URLs, the ways out) is in the JSON
            reason = " ".join(r["log_tail"][-1:]).split(" (")[0]
            outcome = f"exit {r['exit_code']}: {reason}"
            lines.append(
                f"| {r['name']} | {r['data']} | {r['backbone']} | {outcome} | | | | "
                f"{r['wall_s']:.0f} | {r['peak_rss_mb']:,} | {r['published']} |"
            )
            continue
        size = "x".join(str(s) for s in r["image_size"] or [])
        lines.append(
            f"| {r['name']} | {r['data']}: {r['train_images']} / {r['val_images']} / "
            f"{r['test_images']} | {r['backbone']}, {size} | {r['epochs_run']} "
            f"({r['restored_epoch']}) | {_pct(r['fit_accuracy'])} | {_pct(r['train_accuracy'])} | "
            f"{_pct(r['test_accuracy'])} | {r['wall_s']:.0f} ({r['fit_s']}) | "
            f"{r['peak_rss_mb']:,} | {r['published']} |"
        )
    code = results["code"]
    dirty = f", uncommitted: {len(code['uncommitted'])} files" if code["uncommitted"] else ""
    lines.append("")
    lines.append(f"code: {code['commit']}{dirty}; {results['cpus']} CPUs")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
