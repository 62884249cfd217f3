"""Bad-input corpus (training stops with a report naming every bad record; predict flags, never fails), safe
loading (a malicious pickle is refused without running), leakage, determinism."""

import json
import os
import pickle

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from paraisite.data.datamodule import LTCDataModule
from paraisite.data.graphs import GraphFeaturizer, load_graphs
from paraisite.data.records import read_records
from paraisite.errors import DataError, ParaisiteError
from paraisite.models.io import load_checkpoint
from paraisite.predict import load_ensemble, predict
from tests.conftest import ROOT, write_records

NACL = Structure(Lattice.cubic(3.3), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
FEATURIZER = GraphFeaturizer(4.0, __import__("matgl.config").config.DEFAULT_ELEMENTS)


def corpus(folder):
    """Bad structure files → the reason each must be reported with."""
    folder.mkdir(parents=True, exist_ok=True)
    cif = NACL.to(fmt="cif")
    files = {
        "empty.cif": (b"", "empty file"),
        "truncated.cif": (cif[: len(cif) // 2].encode(), "cannot be parsed as cif"),
        "disordered.cif": (Structure(Lattice.cubic(3.3), [{"Na": 0.5, "K": 0.5}, "Cl"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]]).to(fmt="cif").encode(), "partial occupancy"),
        "POSCAR_counts": (NACL.to(fmt="poscar").replace("\n1 1\n", "\n1 3\n").encode(), "cannot be parsed as poscar"),
        "unknown_element.cif": (cif.replace("  Na  ", "  Xx  ").encode(), "unknown element Xx"),
        "overlap.cif": (Structure(Lattice.cubic(5.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]]).to(fmt="cif").encode(),
                        "overlap (0.250 Å apart"),
        "huge.cif": (Structure(Lattice.cubic(40.0), ["Na"] * 512,
                               [[i / 8, j / 8, k / 8] for i in range(8) for j in range(8) for k in range(8)])
                     .to(fmt="cif").encode(), "512 atoms (more than 500)"),
        "latin1.cif": (cif.encode() + b"# caf\xe9\n", "not UTF-8 text"),
        "huge_cell.cif": (Structure(Lattice.cubic(1e6), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(fmt="cif")
                          .encode(), "a lattice vector is 1e+06 Å long (more than 1000 Å)"),
        "vacuum.cif": (Structure(Lattice.cubic(40.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]).to(fmt="cif")
                       .encode(), "the cell holds 3.2e+04 Å³ per atom (more than 10000"),
        "no_atoms.cif": ("\n".join(line for line in cif.splitlines() if not line.strip().startswith(("Na", "Cl")))
                         .encode(), "no atoms"),
        "nan.cif": (cif.replace("0.50000000  0.50000000  0.50000000", "nan  0.5  0.5").encode(),
                    "non-finite coordinates"),
        "POSCAR_nan": ("\n".join(NACL.to(fmt="poscar").splitlines()[:-1] + ["nan nan nan Cl"]).encode(),
                       "non-finite coordinates"),
    }
    for name, (content, _) in files.items():
        (folder / name).write_bytes(content)
    return {name: reason for name, (_, reason) in files.items()}


def test_every_bad_structure_file_is_named_in_one_training_error(tmp_path):
    reasons = corpus(tmp_path / "bad")
    good = {f"good{i}": NACL.copy().scale_lattice(NACL.volume * (1 + i / 10)) for i in range(3)}
    for name, structure in good.items():
        structure.to(filename=str(tmp_path / "bad" / f"{name}.cif"))
    rows = ["id,kappa"] + [f"{n},1.5" for n in [*reasons, *good]]
    (tmp_path / "bad" / "targets.csv").write_text("\n".join(rows))
    with pytest.raises(DataError) as err:
        read_records(tmp_path / "bad")
    message = str(err.value)
    assert f"{len(reasons)} bad record(s)" in message and "\n" not in message
    for name, reason in reasons.items():
        assert f"{name}: " in message and reason in message.split(f"{name}: ", 1)[1], name
    kept = read_records(tmp_path / "bad", on_bad="skip")
    assert sorted(r.id for r in kept) == sorted(good)


@pytest.mark.parametrize("kappa,reason", [(float("nan"), "target is nan"), (float("inf"), "target is inf"),
                                          (-3.0, "target is -3"), (0.0, "target is 0"), ("high", "target 'high' is not a number")])
def test_bad_kappa_values(tmp_path, mirror_records, kappa, reason):
    path = write_records(tmp_path / "k.json", [dict(mirror_records[0], kappa=kappa)] + mirror_records[1:5])
    with pytest.raises(DataError, match=rf"k\.json: 1 bad record\(s\): {mirror_records[0]['id']}: {reason}"):
        read_records(path)


def test_duplicate_ids_missing_structure_wrong_columns_non_utf8(tmp_path, mirror_records):
    dup = write_records(tmp_path / "dup.json", [mirror_records[0], dict(mirror_records[0], kappa=99.0)])
    with pytest.raises(DataError, match=r"dup\.json: 1 bad record\(s\): mp-23231: duplicate id \(also record 0\)"):
        read_records(dup)
    nostruct = write_records(tmp_path / "ns.json", [{"id": "a1", "kappa": 2.0}] + mirror_records[:3])
    with pytest.raises(DataError, match=r"ns\.json: 1 bad record\(s\): a1: no 'structure'"):
        read_records(nostruct)
    (tmp_path / "cols.csv").write_text("composition,value\nNaCl,1\n")
    with pytest.raises(DataError, match=r"cols\.csv: needs a 'formula' column .* found \['composition', 'value'\]"):
        read_records(tmp_path / "cols.csv")
    (tmp_path / "bytes.csv").write_bytes(b"formula,target\nNaCl,1\nCaf\xe9,2\n")
    with pytest.raises(DataError, match=r"bytes\.csv: not UTF-8 text \(byte 25\)"):
        read_records(tmp_path / "bytes.csv")
    (tmp_path / "empty.json").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.json: cannot be read as JSON"):
        read_records(tmp_path / "empty.json")


def test_predict_flags_the_whole_corpus_and_never_fails(two_runs, tmp_path):
    reasons = corpus(tmp_path / "bad")
    Structure(Lattice.cubic(9.0), ["Na"], [[0, 0, 0]]).to(filename=str(tmp_path / "bad" / "isolated.cif"))
    NACL.to(filename=str(tmp_path / "bad" / "good.cif"))
    counts = predict([tmp_path / "bad"], load_ensemble([two_runs]), tmp_path / "p.csv")
    assert counts["predicted"] == 1 and counts["flagged"] == len(reasons) + 1
    import csv

    rows = {os.path.basename(r["id"]): r for r in csv.DictReader(open(tmp_path / "p.csv"))}
    for name, reason in reasons.items():
        assert rows[name]["flag"].startswith("parse_error: ") and reason in rows[name]["flag"], name
    assert rows["isolated.cif"]["flag"] == "no_neighbors_within_cutoff"


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {EXPLOITED}",))


EXPLOITED = "/tmp/paraisite-exploited"


@pytest.mark.parametrize("container", ["raw pickle", "torch zip"])
@pytest.mark.parametrize("target", ["model.pt", "checkpoint", "graph cache"])
def test_malicious_pickle_is_refused_without_running(tmp_path, target, container):
    if os.path.exists(EXPLOITED):
        os.remove(EXPLOITED)
    path = tmp_path / "run" / "model.pt"
    path.parent.mkdir()
    payload = {"format": 1, "state_dict": Exploit()}
    if container == "raw pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    if target == "model.pt":
        with pytest.raises(ParaisiteError, match="unreadable model file") as err:
            load_ensemble([path.parent])
        assert "weights_only=False" not in str(err.value)
    elif target == "checkpoint":
        with pytest.raises(ParaisiteError, match="unreadable checkpoint") as err:
            load_checkpoint(path)
    else:
        assert load_graphs(path) is None  # refused, then rebuilt by the caller
    assert not os.path.exists(EXPLOITED)
    if target != "graph cache":  # why it was refused, without torch's advice to load it unsafely
        message = str(err.value)
        assert "safe loading refuses" in message and "weights_only" not in message and "\n" not in message
        assert container == "raw pickle" or "posix.system" in message


def test_foreign_checkpoint_format_is_named(tmp_path):
    torch.save({"state_dict": {}, "epoch": 1}, tmp_path / "old.ckpt")
    with pytest.raises(ParaisiteError, match=r"old\.ckpt: checkpoint format None, this paraisite reads format 2"):
        load_checkpoint(tmp_path / "old.ckpt")


@pytest.mark.parametrize("dataset", ["dataset1", "mix", "agl"])
def test_splits_never_share_a_material(dataset):
    dm = LTCDataModule(dataset, FEATURIZER, seed=2)
    dm.setup()
    ids = {name: {dm.data.ids[i] for i in idx} for name, idx in dm.splits.items()}
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]


def test_same_material_in_two_sources_lands_in_one_split(tmp_path, mirror_records):
    a = write_records(tmp_path / "a.json", mirror_records[:60])
    b = write_records(tmp_path / "b.json", mirror_records[:60])  # the same 60 materials again
    dm = LTCDataModule(f"{a}+{b}", FEATURIZER, seed=3)
    dm.setup()
    where = {}
    for name, idx in dm.splits.items():
        for i in idx:
            where.setdefault(dm.data.ids[i], set()).add(name)
    assert all(len(splits) == 1 for splits in where.values()) and len(where) == 60


def test_scaler_is_fitted_on_training_targets_only(smoke_module_and_dm):
    module, dm = smoke_module_and_dm
    train = np.log10(dm.targets("train").numpy() + 1)
    everything = np.log10(dm.data.target.numpy() + 1)
    assert float(module.transform.mean) == pytest.approx(train.mean())
    assert abs(float(module.transform.mean) - everything.mean()) > 1e-6


@pytest.fixture
def smoke_module_and_dm():
    from paraisite.models.heads import MLPHead
    from paraisite.models.megnet import MEGNetBackbone
    from paraisite.models.regressor import TransferRegressor
    from tests.helpers import stage

    dm = LTCDataModule("dataset1", FEATURIZER, seed=1)
    dm.setup()
    module = TransferRegressor(MEGNetBackbone(None), MLPHead(16, [8]))
    module.start_stage(stage(), dm.targets("train"))
    return module, dm


@pytest.mark.slow
def test_same_seed_same_results(tmp_path):
    from hydra import compose, initialize_config_dir

    from paraisite.chain import run

    results = []
    for name in ("a", "b"):
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=["experiment=smoke", "finetune=dft", "seed=11"])
        results.append(run(cfg, tmp_path / name))
    assert results[0]["test"] == results[1]["test"]
    assert json.loads((tmp_path / "a" / "results.json").read_text())["test"] == \
        json.loads((tmp_path / "b" / "results.json").read_text())["test"]


def test_json_record_with_nan_coordinates_is_named(tmp_path, mirror_records):
    bad = json.loads(json.dumps(mirror_records[0]))
    bad["structure"]["sites"][0]["abc"] = [float("nan"), 0.0, 0.0]
    path = write_records(tmp_path / "nan.json", [bad] + mirror_records[1:4])
    with pytest.raises(DataError, match=rf"{bad['id']}: non-finite coordinates"):
        read_records(path)


def hold_lock_in_subprocess(folder):
    """A process that takes the run folder's lock and sleeps (what a second launch finds)."""
    import subprocess
    import sys

    code = ("import sys, time; from paraisite.runlock import RunLock; lock = RunLock(sys.argv[1]); print('held', "
            "flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert holder.stdout.readline().strip() == "held"
    return holder


def snapshot(folder):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def test_a_second_run_into_a_busy_folder_is_refused_and_a_killed_holder_frees_it(tmp_path):
    from hydra import compose, initialize_config_dir

    from paraisite.chain import run
    from paraisite.runlock import RunFolderBusy, RunLock

    folder = tmp_path / "run"
    (folder / "logs" / "dft").mkdir(parents=True)
    (folder / "logs" / "dft" / "metrics.csv").write_text("epoch,step,val/mape\n0,1,0.5\n")
    (folder / "run_key.json").write_text('{"key": "the running one"}')
    holder = hold_lock_in_subprocess(folder)
    try:
        before = snapshot(folder)
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("train", overrides=["experiment=smoke", "finetune=dft"])
        with pytest.raises(RunFolderBusy, match=rf"{folder}: another process \(pid {holder.pid} on .*\) is running "
                                                r"in this run folder"):
            run(cfg, folder)
        assert snapshot(folder) == before
    finally:
        holder.kill()  # SIGKILL: no clean-up runs; the kernel drops the lock
        holder.wait()
    with RunLock(folder):  # a relaunch after the crash is not blocked
        with pytest.raises(RunFolderBusy):
            RunLock(folder)  # but one process at a time, even within one process


@pytest.mark.slow
def test_backward_of_graph_gathers_is_bit_identical_with_threads(mirror_records):
    """With 2 threads, the backward of MEGNet's gathers (index_put with accumulate) sums in a racy order unless
    deterministic algorithms are on, which the CPU trainer config does (trainer.deterministic)."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from paraisite.data.records import Record
    from paraisite.recipe import build_model
    from tests.helpers import stage

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["pretrain=scratch"])
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        torch.set_num_threads(2)
        instantiate(cfg.trainer, logger=False)  # what train_stage builds: sets torch's deterministic mode
        module = build_model(cfg, None)
        records = [Record(r["id"], "", r["kappa"], Structure.from_dict(r["structure"]).make_supercell(2))
                   for r in mirror_records[:32]]
        batch = module.backbone.featurizer().build(records).collate(range(32))
        module.start_stage(stage(), batch.y)
        grads = []
        for _ in range(4):
            module.zero_grad()
            module.loss(module(batch), batch.y).backward()
            grads.append(torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None]))
        assert all(torch.equal(grads[0], g) for g in grads[1:])
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
