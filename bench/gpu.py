"""One GPU session in one command: does the project run on CUDA, does it predict what the CPU predicts, and how fast
does it train and predict there against the same machine's CPU cores.

    python bench/gpu.py --out DIR [--work RUNS] [--deadline-s 480] [--only SECTION ...] [--packing-backbone m3gnet]

1. smoke: `train.py experiment=smoke trainer=gpu` for MEGNet and M3GNet, then `paraisite predict` of that run on CUDA.
2. parity: the shipped `kappa` model over the mirror's Materials Project structures on CUDA and on the CPU (largest
   |log10 ratio| of the two predictions; wall time of each, graph building included).
3. training throughput: one AGL stage (`datamodule.limit` AGL records, 3 epochs; the stage's wall time, first-epoch
   warm-up included) per backbone × batch size × device, one process.
4. packing: K identical runs (MEGNet unless `--packing-backbone`) at batch 8 side by side on the one GPU (1 CPU thread each) against K on the CPU
   cores: the aggregate rate says how many jobs of a sweep to give one GPU.
Sections past `--deadline-s` are skipped (and say so). Writes DIR/gpu.json and DIR/gpu.md; the runs and their logs go
to RUNS (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE_RECORDS = 800  # AGL records of a throughput run (per source: datamodule.limit)


def train(run_dir: Path, overrides: list[str], log: Path) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run_dir}", "progress_bar=false",
           "stage_cache=false", *overrides]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)


def finished(run_dir: Path) -> dict:
    path = run_dir / "results.json"
    if not path.exists():
        return {"status": "no results.json"}
    results = json.loads(path.read_text())
    return results if results.get("status") == "ok" else {"status": results.get("status", "?")}


def stage_rate(results: dict) -> float | None:
    """Training records per second of the run's only stage (its wall time: validation and checkpoints included)."""
    if "stages" not in results:
        return None
    stage = results["stages"][0]
    return stage["n_train"] * stage["epochs_run"] / stage["wall_time_s"]


def throughput_overrides(backbone: str, batch: int, device: str) -> list[str]:
    return [f"backbone={backbone}", "pretrain=eform", "finetune=agl", "data=agl", "protocol=holdout",
            "evaluate_on=[dataset1]", "stage_overrides.epochs=3", f"stage_overrides.batch_size={batch}",
            f"datamodule.limit={STAGE_RECORDS}", "threads=1", f"trainer={'gpu' if device == 'cuda' else 'cpu'}"]


def predict(arguments: list[str], log: Path) -> int:
    """`paraisite predict ARGUMENTS` in a subprocess, its output into `log`; the exit code."""
    return subprocess.call([sys.executable, "-m", "paraisite.cli", "predict", *arguments], cwd=ROOT,
                           stdout=log.open("w"), stderr=subprocess.STDOUT)


def start(runs: list[tuple[str, list[str]]], work: Path) -> list[tuple[str, Path, subprocess.Popen]]:
    return [(name, work / name, train(work / name, ov, work / "logs" / f"{name}.log")) for name, ov in runs]


def wait(procs: list[tuple[str, Path, subprocess.Popen]]) -> list[dict]:
    for _, _, proc in procs:
        proc.wait()
    return [finished(run_dir) | {"name": name} for name, run_dir, _ in procs]


def run_all(runs: list[tuple[str, list[str]]], work: Path) -> tuple[list[dict], float]:
    """Start every run at once, wait for all; their results and the wall time of the whole batch."""
    begin = time.perf_counter()
    results = wait(start(runs, work))
    return results, time.perf_counter() - begin


def smoke(work: Path, report: dict) -> None:
    from pymatgen.core import Lattice, Structure

    cif = work / "NaCl.cif"
    Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(
        filename=str(cif))
    rows = []
    for backbone in ("megnet", "m3gnet"):
        name = f"smoke_{backbone}"
        [res], wall = run_all([(name, [f"backbone={backbone}", "experiment=smoke", "trainer=gpu",
                                       "evaluate_on=[dataset1]"])], work)
        predicted = None
        if res.get("status") == "ok":
            out = work / f"{name}_predict.csv"
            code = predict([str(cif), "--run", str(work / name), "--device", "cuda", "--output", str(out)],
                           work / "logs" / f"{name}_predict.log")
            predicted = code == 0 and out.exists()
        rows.append({"backbone": backbone, "train": res.get("status"), "predict_cuda": predicted,
                     "wall_s": round(wall, 1), "test_mape": res.get("test", {}).get("dataset1", {}).get("mape")})
    report["smoke"] = rows


def parity(work: Path, report: dict) -> None:
    import numpy as np
    import pandas as pd

    from paraisite.paths import data_dir

    timed = {}
    for device in ("cuda", "cpu"):
        out = work / f"kappa_{device}.csv"
        begin = time.perf_counter()
        log = work / "logs" / f"kappa_{device}.log"
        if predict([str(data_dir() / "screening" / "mp_scan.json.gz"), "--model", "kappa", "--device", device,
                    "--output", str(out)], log):
            raise RuntimeError(f"paraisite predict --device {device} failed: see {log}")
        timed[device] = (time.perf_counter() - begin, pd.read_csv(out))
    (t_gpu, gpu), (t_cpu, cpu) = timed["cuda"], timed["cpu"]
    columns = [c for c in gpu.columns if c.startswith("kappa_") and c != "kappa_std"]  # the mean and each member
    ratio = np.log10(gpu[columns].to_numpy(float) / cpu[columns].to_numpy(float))
    report["parity"] = {"structures": len(gpu), "columns": len(columns),
                        "max_abs_log10_ratio": float(np.nanmax(np.abs(ratio))),
                        "wall_s_cuda": round(t_gpu, 1), "wall_s_cpu": round(t_cpu, 1), "cpu_threads": os.cpu_count()}


def throughput(work: Path, report: dict, deadline: float) -> None:
    """The CPU runs (1 thread each, side by side on their own cores) while the CUDA runs go one at a time."""
    grid = [(backbone, batch) for backbone in ("megnet", "m3gnet") for batch in (8, 32, 128)]
    on_cpu = start([(f"rate_{b}_b{n}_cpu", throughput_overrides(b, n, "cpu")) for b, n in grid], work)
    rows = []
    for backbone, batch in grid:
        if time.perf_counter() > deadline:
            rows.append({"backbone": backbone, "batch": batch, "skipped": "deadline"})
            continue
        [res], _ = run_all([(f"rate_{backbone}_b{batch}_cuda", throughput_overrides(backbone, batch, "cuda"))], work)
        rows.append({"backbone": backbone, "batch": batch, "cuda_records_per_s": stage_rate(res)})
    for row, res in zip(rows, wait(on_cpu)):
        row["cpu_1thread_records_per_s"] = stage_rate(res)
        if row.get("cuda_records_per_s") and row["cpu_1thread_records_per_s"]:
            row["cuda_over_cpu"] = row["cuda_records_per_s"] / row["cpu_1thread_records_per_s"]
    report["throughput"] = [{k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()} for row in rows]


def packing(work: Path, report: dict, deadline: float, backbone: str) -> None:
    rows = []
    for device, k in (("cuda", 4), ("cuda", 8), ("cuda", 16), ("cpu", 16)):
        if time.perf_counter() > deadline:
            rows.append({"device": device, "jobs": k, "skipped": "deadline"})
            continue
        runs = [(f"pack_{device}_{k}_{i}", [*throughput_overrides(backbone, 8, device), f"seed={i + 1}"])
                for i in range(k)]
        results, wall = run_all(runs, work)
        rates = [stage_rate(r) for r in results]
        done = [r for r in rates if r is not None]
        rows.append({"backbone": backbone, "device": device, "jobs": k, "ok": len(done), "wall_s": round(wall, 1),
                     "aggregate_records_per_s": round(sum(done), 1),
                     "per_job_records_per_s": round(sum(done) / max(1, len(done)), 1)})
    report["packing"] = rows


def markdown(report: dict) -> str:
    lines = [f"machine: {report['machine']}", ""]
    for name in ("smoke", "throughput", "packing"):
        rows = report.get(name, [])
        if rows:
            keys = list(dict.fromkeys(k for row in rows for k in row))
            lines += [f"### {name}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(str(row.get(k, "")) for k in keys) + " |" for row in rows] + [""]
    if "parity" in report:
        lines += ["### parity", "", json.dumps(report["parity"]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--deadline-s", type=float, default=480.0)
    parser.add_argument("--work", type=Path, default=None, help="folder of the runs (default: a temporary one)")
    parser.add_argument("--packing-backbone", default="megnet")
    parser.add_argument("--only", nargs="*", default=["smoke", "parity", "throughput", "packing"])
    args = parser.parse_args()
    import torch

    deadline = time.perf_counter() + args.deadline_s
    work = args.work or Path(tempfile.mkdtemp(prefix="paraisite-gpu-"))
    args.out.mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    report = {"machine": f"{gpu}, {os.cpu_count()} CPU cores, torch {torch.__version__}"}
    sections = {"smoke": lambda: smoke(work, report), "parity": lambda: parity(work, report),
                "throughput": lambda: throughput(work, report, deadline),
                "packing": lambda: packing(work, report, deadline, args.packing_backbone)}
    for name in args.only:
        began = time.perf_counter()
        try:
            sections[name]()
        except Exception as err:  # noqa: BLE001 — a broken section is a finding: record it, go on with the next
            report[f"{name}_error"] = f"{type(err).__name__}: {err}"
        report.setdefault("section_s", {})[name] = round(time.perf_counter() - began, 1)
        (args.out / "gpu.json").write_text(json.dumps(report, indent=1))
        print(f"[{name}] {time.perf_counter() - began:.0f}s", flush=True)
    (args.out / "gpu.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
