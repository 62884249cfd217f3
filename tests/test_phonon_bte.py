"""The phonon-BTE κ of a table as a network input (`backbone=megnet_bte`)."""

import csv
import json
import math
import re

import pytest
import torch
from omegaconf import OmegaConf

from paraisite import chain
from paraisite.cli import main as cli
from paraisite.data.records import Record
from paraisite.errors import ConfigError
from paraisite.models.augmented import AugmentedFeaturizer, PhysicsAugmented
from paraisite.models.bundle import read_bundle
from paraisite.models.phonon_bte import BTE_FORMULA_MISMATCH, BTEDescriptors, add_rows
from paraisite.prior import BELOW_AMORPHOUS_LIMIT, BTERow, bte_tables
from paraisite.recipe import build_model
from tests.helpers import compose_cfg
from tests.test_prior import write_bte_table
from tests.test_quasiharmonic import rocksalt


def test_rows_become_log_kappa_and_indicators_a_wrong_formula_is_flagged_a_missing_row_is_zero(tmp_path, caplog):
    """An unflagged row above MAX_KAPPA (written before the `no_scattering` rule) is read as unscattered."""
    write_bte_table(tmp_path / "t.csv", [("a", "NaCl", 5.0, ""), ("b", "CuCl", 0.4, "imaginary_modes"),
                                         ("c", "BAs", 1e9, "no_scattering"), ("d", "KBr", 2.0, ""),
                                         ("f", "AlSb", 9.5e5, ""), ("g", "GaN", float("inf"), "")])
    data = BTEDescriptors([str(tmp_path / "t.csv")]).featurizer().build(
        [Record("a", "Na2Cl2", 6.0), Record("b", "CuCl", 1.0), Record("c", "BAs", 900.0), Record("f", "AlSb", 100.0),
         Record("g", "GaN", 200.0), Record("d", "NaCl", 6.0), Record("e", "MgO", 50.0)])
    torch.testing.assert_close(data.x[:5], torch.tensor([[math.log(5.0), 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1],
                                                         [0, 0, 0, 1], [0, 0, 0, 1]]))
    assert data.flags[:5] == [""] * 5
    assert data.flags[5].startswith(BTE_FORMULA_MISMATCH) and "KBr" in data.flags[5]
    assert data.flags[6] == "" and not data.x[6].any()
    assert "1 of 7 record(s) are in no BTE table" in caplog.text and ": e" in caplog.text


def test_unstable_modes_give_the_computed_kappa_floored_and_the_depth_of_the_instability(tmp_path):
    """A trusted row reads as without the mode; an unstable row gets its κ (floored at 0.1 W/mK) and |lowest
    frequency|; an unscattered row none of either. A spec stored before the mode (rows of three) reads without it."""
    write_bte_table(tmp_path / "t.csv", [("a", "NaCl", 5.0, ""), ("b", "CuCl", 0.4, "imaginary_modes", -0.6),
                                         ("c", "RbBr", 0.003, "imaginary_modes", -1.9),
                                         ("d", "BAs", float("inf"), "no_scattering")])
    records = [Record("a", "NaCl", 6.0), Record("b", "CuCl", 1.0), Record("c", "RbBr", 3.0), Record("d", "BAs", 900.0)]
    descriptors = BTEDescriptors([str(tmp_path / "t.csv")], unstable_modes=True)
    assert descriptors.names[-1] == "bte_instability_thz" and len(descriptors.shift) == len(descriptors.scale) == 5
    data = descriptors.featurizer().build(records)
    torch.testing.assert_close(data.x, torch.tensor([[math.log(5.0), 1, 0, 0, 0], [math.log(0.4), 0, 1, 0, 0.6],
                                                     [math.log(0.1), 0, 1, 0, 1.9], [0, 0, 0, 1, 0]]))
    plain = BTEDescriptors([str(tmp_path / "t.csv")])
    torch.testing.assert_close(plain.featurizer().build(records).x,
                               torch.tensor([[math.log(5.0), 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    old = BTEDescriptors(spec={"tables": ["t.csv"], "rows": {k: v[:3] for k, v in plain.spec["rows"].items()}})
    assert old.names == plain.names and not old.unstable_modes
    torch.testing.assert_close(old.featurizer().build(records).x, plain.featurizer().build(records).x)
    assert descriptors.featurizer().key("h") != plain.featurizer().key("h")


def test_the_volume_ratio_is_appended_as_its_log_zero_where_a_row_has_none(tmp_path, caplog):
    write_bte_table(tmp_path / "t.csv", [("a", "NaCl", 5.0, "", 0.5, 1.05), ("b", "KCl", 7.0, "", 0.5)])
    descriptors = BTEDescriptors([str(tmp_path / "t.csv")], volume_ratio=True)
    assert descriptors.names[-1] == "ln volume_ratio" and len(descriptors.shift) == len(descriptors.scale) == 5
    x = descriptors.featurizer().build([Record("a", "NaCl", 6.0), Record("b", "KCl", 7.0)]).x
    torch.testing.assert_close(x, torch.tensor([[math.log(5.0), 1, 0, 0, math.log(1.05)], [math.log(7.0), 1, 0, 0, 0]]))
    assert "1 of 2 record(s) have a BTE row without a volume ratio" in caplog.text and caplog.text.rstrip().endswith("b")
    both = BTEDescriptors([str(tmp_path / "t.csv")], unstable_modes=True, volume_ratio=True)
    assert both.names[-2:] == ("bte_instability_thz", "ln volume_ratio")
    assert len({d.featurizer().key("h") for d in (descriptors, both, BTEDescriptors([str(tmp_path / "t.csv")]))}) == 3
    write_bte_table(tmp_path / "none.csv", [("a", "NaCl", 5.0, "")])
    with pytest.raises(ConfigError, match="volume_ratio: no row .*none.csv.*--fill volume_ratio"):
        BTEDescriptors([str(tmp_path / "none.csv")], volume_ratio=True)


def test_a_kappa_below_the_amorphous_limit_is_not_trusted_in_the_tables_nor_in_rows_given_later(tmp_path):
    write_bte_table(tmp_path / "t.csv", [("a", "NaCl", 5.0, ""), ("b", "BaTe", 0.014, ""), ("c", "KCl", 0.15, "")])
    records = [Record("a", "NaCl", 6.0), Record("b", "BaTe", 11.0), Record("c", "KCl", 7.0), Record("n", "RbBr", 3.0)]
    descriptors = BTEDescriptors([str(tmp_path / "t.csv")], amorphous_limit=0.1)
    featurizer = descriptors.featurizer()
    assert "none below 0.1 W/mK" in descriptors.label
    assert featurizer.key("h") != BTEDescriptors([str(tmp_path / "t.csv")]).featurizer().key("h")
    write_bte_table(tmp_path / "new.csv", [("n", "RbBr", 0.08, "")])
    assert add_rows(AugmentedFeaturizer(None, featurizer), bte_tables([tmp_path / "new.csv"]))
    torch.testing.assert_close(featurizer.build(records).x, torch.tensor(
        [[math.log(5.0), 1, 0, 0], [0, 0, 0, 0], [math.log(0.15), 1, 0, 0], [0, 0, 0, 0]]))
    assert BTERow(*descriptors.spec["rows"]["b"]).why == BELOW_AMORPHOUS_LIMIT
    stored = BTEDescriptors(spec=descriptors.spec)  # as a saved model rebuilds it
    assert stored.amorphous_limit == 0.1 and stored.featurizer().key("h") == BTEDescriptors(
        [str(tmp_path / "t.csv")], amorphous_limit=0.1).featurizer().key("h")
    for bad in (-1, "high"):
        with pytest.raises(ConfigError, match=f"amorphous_limit={bad!r}"):
            BTEDescriptors([str(tmp_path / "t.csv")], amorphous_limit=bad)


def test_a_missing_table_is_refused_by_name(tmp_path):
    with pytest.raises(ConfigError, match="nothere.csv"):
        BTEDescriptors([str(tmp_path / "nothere.csv")])
    with pytest.raises(ConfigError, match="at least one"):
        BTEDescriptors([])


def test_megnet_bte_joins_the_standardised_descriptors_and_rebuilds_without_the_table(tmp_path):
    from paraisite.models.io import model_file_bytes, read_model_file
    from paraisite.predict import member_of

    table = tmp_path / "t.csv"
    write_bte_table(table, [("mgo", "MgO", 40.0, ""), ("nacl", "NaCl", 0.3, "imaginary_modes")])
    cfg = compose_cfg("backbone=megnet_bte", f"backbone.physics.tables=[{table}]")
    module = build_model(cfg, "MEGNet-MP-2018.6.1-Eform")
    backbone = module.backbone
    assert isinstance(backbone, PhysicsAugmented) and backbone.out_dim == 16 + 4
    data = backbone.featurizer().build([Record("mgo", "MgO", 50.0, rocksalt(4.21, "Mg", "O")),
                                        Record("nacl", "NaCl", 6.5, rocksalt(5.64))])
    batch = data.collate([0, 1])
    out = backbone(batch)
    torch.testing.assert_close(out[:, :16], backbone.inner(batch.inner))
    torch.testing.assert_close(out[:, 16:], torch.tensor([[(math.log(40.0) - math.log(10.0)) / 2, 1, 0, 0],
                                                          [-math.log(10.0) / 2, 0, 1, 0]]))
    (tmp_path / "model.pt").write_bytes(model_file_bytes(module, dict(OmegaConf.to_container(cfg, resolve=True))))
    table.unlink()  # the rows travel in the spec
    config, state = read_model_file(tmp_path / "model.pt")
    member = member_of(config, state, "m", "model.pt")
    torch.testing.assert_close(member.module(batch), module.eval()(batch))
    assert member.module.backbone.featurizer().physics.rows == backbone.featurizer().physics.rows


@pytest.fixture(scope="module")
def bte_run(tmp_path_factory):
    """A finished megnet_bte smoke run on MIX (20 records of each set, the shipped tables)."""
    run = tmp_path_factory.mktemp("bte") / "run"
    results = chain.run(compose_cfg("backbone=megnet_bte", "finetune=dft", "data=mix", "datamodule.limit=20",
                                    "evaluate_on=[dataset1]"), run)
    assert results["status"] == "ok" and results["config"]["backbone"] == "megnet_bte"
    return run


@pytest.mark.slow  # several seconds: left out of the edit loop (make test-fast)
def test_a_smoke_run_on_the_shipped_tables_predicts_new_structures_with_their_table(bte_run, tmp_path):
    cif = tmp_path / "MgO.cif"
    rocksalt(4.21, "Mg", "O").to(filename=str(cif))
    write_bte_table(tmp_path / "bte.csv", [("elsewhere/MgO.cif", "MgO", 60.0, "")])  # matched by file name

    def predicted(*extra) -> dict:
        assert cli(["predict", str(cif), "--run", str(bte_run), "--output", str(tmp_path / "p.csv"),
                    "--quiet", *extra]) == 0
        (row,) = csv.DictReader(open(tmp_path / "p.csv"))
        return row

    without, with_table = predicted(), predicted("--bte", str(tmp_path / "bte.csv"))
    assert without["flag"] == with_table["flag"] == ""
    assert float(with_table["kappa_mean"]) != pytest.approx(float(without["kappa_mean"]), rel=1e-4)
    assert with_table["bte_note"] == "the models' input, no BTE prior" and float(with_table["kappa_bte"]) == 60.0


@pytest.mark.slow  # several seconds: left out of the edit loop (make test-fast)
def test_a_bte_route_added_to_a_bundle_takes_the_structures_given_a_bte_row(bte_run, two_runs, tmp_path, capsys):
    """`bundle --extend B --bte-route bte RUN`: B's routes and members are kept; without `--bte` the bundle predicts as
    B did and its BTE members are left out; with it, a structure with a row (even a flagged one) of a kind the BTE
    route trained on (rock-salt 1:1, F-43m 1:1:1: it trained on MIX) is predicted by that route alone, before B's
    half-Heusler route; one without a row, or of another kind (fluorite 1:2), keeps its route."""
    from pymatgen.core import Lattice, Structure

    from tests.test_predict import read_rows

    folder = tmp_path / "in"
    folder.mkdir()
    for name, a in (("ab.cif", 4.21), ("cd.cif", 4.5), ("ef.cif", 4.3)):
        rocksalt(a, "Mg", "O").to(filename=str(folder / name))
    for name, a in (("hh.cif", 5.9), ("hh2.cif", 6.0)):
        Structure.from_spacegroup("F-43m", Lattice.cubic(a), ["Ti", "Ni", "Sn"],
                                  [[0, 0, 0], [.25, .25, .25], [.5, .5, .5]]).to(filename=str(folder / name))
    Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.46), ["Ca", "F"], [[0, 0, 0], [.25, .25, .25]]).to(
        filename=str(folder / "fl.cif"))
    assert cli(["bundle", str(two_runs / "s2"), "--route", "half-heuslers", "1:1:1", str(two_runs / "s1"),
                "--output", str(tmp_path / "base")]) == 0
    assert cli(["bundle", "--extend", str(tmp_path / "base"), "--bte-route", "bte", str(two_runs / "s1"),
                "--output", str(tmp_path / "x")]) == 2
    assert "do not take the BTE κ as input" in capsys.readouterr().err
    assert cli(["bundle", "--extend", str(tmp_path / "base"), "--bte-route", "bte", str(bte_run),
                "--output", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "route other (every structure no other route takes): 1 member(s)" in out
    assert "route bte (1:1 compounds in space group(s) " in out and "given a BTE row (`predict --bte`)): 1 member" in out
    (bte,) = [r for r in json.loads((tmp_path / "b" / "model.json").read_text())["routes"] if r["bte_kinds"]]
    assert [[1, 1, 1], [216]] in bte["bte_kinds"] and [1, 2] not in [k[0] for k in bte["bte_kinds"]]
    assert cli(["bundle", "--extend", str(tmp_path / "b"), "--bte-route", "bte2", str(bte_run),
                "--output", str(tmp_path / "x")]) == 2
    assert "BTE routes bte and bte2 both take 1:1 compounds in space group(s) " in capsys.readouterr().err
    assert not (tmp_path / "x").exists()

    def predicted(model, *extra) -> dict:
        assert cli(["predict", str(folder), "--model", str(tmp_path / model), "--output", str(tmp_path / "p.csv"),
                    "--quiet", *extra]) == 0
        return read_rows(tmp_path / "p.csv")

    base, plain = predicted("base"), predicted("b")
    assert "2 model(s) in 2 route(s) (half-heuslers, other: column route)" in capsys.readouterr().out
    assert plain == base  # no BTE member column
    write_bte_table(tmp_path / "bte.csv", [("ab.cif", "MgO", 60.0, ""), ("cd.cif", "MgO", 0.5, "imaginary_modes"),
                                           ("hh.cif", "TiNiSn", 9.0, ""), ("fl.cif", "CaF2", 9.0, "")])
    rows = predicted("b", "--bte", str(tmp_path / "bte.csv"))
    assert "3 model(s) in 3 route(s) (half-heuslers, other, bte: column route)" in capsys.readouterr().out
    bte_member = next(k for k in rows["ab.cif"] if k.startswith("kappa_m2-"))
    for name in ("ab.cif", "cd.cif", "hh.cif"):
        row = rows[name]
        assert row["route"] == "bte" and row["kappa_mean"] == row[bte_member] and float(row["kappa_std"]) == 0.0
        assert row["kappa_m0-s1"] == row["kappa_m1-s2"] == ""
    assert rows["ab.cif"]["bte_note"] == rows["hh.cif"]["bte_note"] == "the models' input, no BTE prior"
    assert rows["cd.cif"]["bte_note"] == "the models' input (imaginary_modes), no BTE prior"
    assert rows["ab.cif"]["kappa_mean"] != rows["cd.cif"]["kappa_mean"]
    for name, route, note in (("ef.cif", "other", "not in the BTE tables"),
                              ("hh2.cif", "half-heuslers", "not in the BTE tables"),
                              ("fl.cif", "other", "its models have no BTE prior")):
        row = rows[name]
        assert (row["route"], row["bte_note"], row[bte_member]) == (route, note, "")
        assert float(row["kappa_mean"]) == pytest.approx(float(base[name]["kappa_mean"]), rel=1e-6)


def test_each_model_reads_its_own_potentials_rows_and_mixed_tables_are_refused(tmp_path):
    write_bte_table(tmp_path / "pbe.csv", [("a", "NaCl", 5.0, "")])
    write_bte_table(tmp_path / "scan.csv", [("a", "NaCl", 8.0, ""), ("b", "KCl", 3.0, "")], "7net-mf-0-r2scan")
    pbe, scan = (BTEDescriptors([str(tmp_path / name)]) for name in ("pbe.csv", "scan.csv"))
    assert (pbe.potential, scan.potential) == ("7net-0", "7net-mf-0-r2scan") and "7net-mf-0-r2scan" in scan.label
    assert BTEDescriptors(spec={k: v for k, v in pbe.spec.items() if k != "potential"}).potential == "7net-0"
    records = [Record("c", "MgO", 1.0)]
    given = bte_tables([tmp_path / "pbe.csv", tmp_path / "scan.csv"])
    for descriptors, kappa in ((pbe, 5.0), (scan, 8.0)):
        featurizer = AugmentedFeaturizer(None, descriptors.featurizer())
        given_c = {potential: {"c": rows["a"]._replace(formula="MgO")} for potential, rows in given.items()}
        assert add_rows(featurizer, given_c)
        assert featurizer.physics.build(records).x[0, 0].item() == pytest.approx(math.log(kappa))
    with pytest.raises(ConfigError, match="backbone.physics.tables: .*rows of the potential.*7net-mf-0-r2scan"):
        BTEDescriptors([str(tmp_path / "pbe.csv"), str(tmp_path / "scan.csv")])


@pytest.mark.slow  # trains a smoke run: left out of the edit loop (make test-fast)
def test_a_committee_route_of_two_potentials_experts_gives_each_its_own_rows(bte_run, two_runs, tmp_path, capsys):
    """A BTE route of two recipes (`--bte-route NAME RUNS RUNS`), one reading SevenNet-0's tables and one another
    potential's: a structure given rows of both potentials is predicted by all its members, each from its own
    potential's row (the same κ as that member alone given its own table); one given one potential's row alone is
    not the route's."""
    from tests.test_predict import read_rows

    scan_tables = []
    for name in ("dataset1_sevennet.csv", "dataset2_sevennet.csv"):  # another potential's κ: twice SevenNet-0's
        rows = list(csv.DictReader(open(f"docs/results/bte/{name}")))
        with open(tmp_path / name, "w", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows({**row, "kappa": 2 * float(row["kappa"]), "potential": "7net-mf-0-r2scan"} for row in rows)
        scan_tables.append(str(tmp_path / name))
    scan_run = tmp_path / "scan_run"
    assert chain.run(compose_cfg("backbone=megnet_bte", "finetune=dft", "data=mix", "datamodule.limit=20",
                                 f"backbone.physics.tables=[{','.join(scan_tables)}]"), scan_run)["status"] == "ok"
    for name, a in (("ab.cif", 4.21), ("cd.cif", 4.3)):
        rocksalt(a, "Mg", "O").to(filename=str(tmp_path / name))
    write_bte_table(tmp_path / "pbe.csv", [("ab.cif", "MgO", 60.0, ""), ("cd.cif", "MgO", 40.0, "")])
    write_bte_table(tmp_path / "scan.csv", [("ab.cif", "MgO", 90.0, "")], "7net-mf-0-r2scan")
    assert cli(["bundle", str(two_runs / "s1"), "--bte-route", "committee", str(bte_run), str(scan_run),
                "--output", str(tmp_path / "b")]) == 0
    assert "given BTE rows of 7net-0 and 7net-mf-0-r2scan" in capsys.readouterr().out
    (route,) = [r for r in json.loads((tmp_path / "b" / "model.json").read_text())["routes"] if r["bte_kinds"]]
    assert route["bte_potentials"] == ["7net-0", "7net-mf-0-r2scan"]
    inputs = [str(tmp_path / "ab.cif"), str(tmp_path / "cd.cif")]

    def predicted(*args) -> dict:
        assert cli(["predict", *inputs, "--output", str(tmp_path / "p.csv"), "--quiet", *args]) == 0
        return read_rows(tmp_path / "p.csv")

    rows = predicted("--model", str(tmp_path / "b"), "--bte", str(tmp_path / "pbe.csv"), str(tmp_path / "scan.csv"))
    alone = {run: predicted("--run", str(run), "--bte", str(tmp_path / table))["ab.cif"]
             for run, table in ((bte_run, "pbe.csv"), (scan_run, "scan.csv"))}
    members = [k for k in rows["ab.cif"] if re.fullmatch(r"kappa_m\d+-.*", k) and rows["ab.cif"][k]]
    ab = rows["ab.cif"]
    assert ab["route"] == "committee" and len(members) == 2
    assert [float(ab[k]) for k in members] == pytest.approx([float(alone[run]["kappa_mean"])
                                                             for run in (bte_run, scan_run)], rel=1e-5)
    assert float(ab["kappa_mean"]) == pytest.approx(sum(float(ab[k]) for k in members) / 2, rel=1e-6)
    assert ab["kappa_bte"] == "60.0" and ab["bte_note"] == "the models' input, no BTE prior"  # the first table's
    assert rows["cd.cif"]["route"] == "all" and all(rows["cd.cif"][k] == "" for k in members)
    manifest = json.loads((tmp_path / "b" / "model.json").read_text())
    for r in manifest["routes"]:
        r.pop("bte_potentials")  # a bundle written before the key: its BTE routes read SevenNet-0's rows
    (tmp_path / "b" / "model.json").write_text(json.dumps(manifest))
    assert [r.bte_potentials for r in read_bundle(tmp_path / "b")[2]] == [(), ("7net-0",)]


@pytest.mark.slow  # trains two smoke runs: left out of the edit loop (make test-fast)
def test_bte_routes_by_domain_take_their_own_kinds_and_keep_trims_the_extended_routes(two_runs, tmp_path, capsys):
    """Two BTE routes, one trained on Dataset1 (binaries) and one on Dataset2 (half-Heuslers), each take the
    structures of their own training kinds given a BTE row; `--keep` picks the extended bundle's routes and trims
    them to their first members, refusing a route it does not have or more members than it holds."""
    from pymatgen.core import Lattice, Structure

    from tests.test_predict import read_rows

    runs = {}
    for data in ("dataset1", "dataset2"):
        runs[data] = tmp_path / data
        results = chain.run(compose_cfg("backbone=megnet_bte", "finetune=dft", f"data={data}", "datamodule.limit=20",
                                        "evaluate_on=[]"), runs[data])
        assert results["status"] == "ok"
    folder = tmp_path / "in"
    folder.mkdir()
    rocksalt(4.21, "Mg", "O").to(filename=str(folder / "ab.cif"))
    Structure.from_spacegroup("F-43m", Lattice.cubic(5.9), ["Ti", "Ni", "Sn"],
                              [[0, 0, 0], [.25, .25, .25], [.5, .5, .5]]).to(filename=str(folder / "hh.cif"))
    assert cli(["bundle", str(two_runs / "s2"), "--route", "half-heuslers", "1:1:1", str(two_runs),
                "--output", str(tmp_path / "base")]) == 0
    for keep, error in ((["nothing"], "--keep nothing: "), (["half-heuslers:3"], "has 2 member(s)")):
        assert cli(["bundle", "--extend", str(tmp_path / "base"), "--keep", *keep, "other",
                    "--output", str(tmp_path / "x")]) == 2
        assert error in capsys.readouterr().err
    assert cli(["bundle", "--extend", str(tmp_path / "base"), "--keep", "half-heuslers:1", "other",
                "--bte-route", "binaries-bte", str(runs["dataset1"]),
                "--bte-route", "half-heuslers-bte", str(runs["dataset2"]), "--output", str(tmp_path / "b")]) == 0
    routes = {r["name"]: r for r in json.loads((tmp_path / "b" / "model.json").read_text())["routes"]}
    assert len(routes["half-heuslers"]["members"]) == 1 and routes["half-heuslers"]["members"][0].endswith("s1")
    assert [k[0] for k in routes["binaries-bte"]["bte_kinds"]] == [[1, 1]]
    assert [k[0] for k in routes["half-heuslers-bte"]["bte_kinds"]] == [[1, 1, 1]]
    write_bte_table(tmp_path / "bte.csv", [("ab.cif", "MgO", 60.0, ""), ("hh.cif", "TiNiSn", 9.0, "")])
    assert cli(["predict", str(folder), "--model", str(tmp_path / "b"), "--output", str(tmp_path / "p.csv"),
                "--quiet", "--bte", str(tmp_path / "bte.csv")]) == 0
    rows = read_rows(tmp_path / "p.csv")
    assert rows["ab.cif"]["route"] == "binaries-bte" and rows["hh.cif"]["route"] == "half-heuslers-bte"
    assert cli(["predict", str(folder), "--model", str(tmp_path / "b"), "--output", str(tmp_path / "p.csv"),
                "--quiet"]) == 0
    rows = read_rows(tmp_path / "p.csv")
    assert rows["ab.cif"]["route"] == "other" and rows["hh.cif"]["route"] == "half-heuslers"


def test_a_residual_bte_model_predicts_the_trusted_bte_kappa_plus_the_heads_correction(tmp_path):
    """learn_residual: where a row is trusted the prediction is decode(encode(κ_BTE) + head), elsewhere (flagged,
    no row) decode(head); it survives a save and rebuild; descriptors without a physical prediction refuse it."""
    from paraisite.models.io import model_file_bytes, read_model_file
    from paraisite.predict import member_of

    table = tmp_path / "t.csv"
    write_bte_table(table, [("mgo", "MgO", 40.0, ""), ("nacl", "NaCl", 0.3, "imaginary_modes")])
    cfg = compose_cfg("backbone=megnet_bte", f"backbone.physics.tables=[{table}]", "+backbone.learn_residual=true")
    module = build_model(cfg, "MEGNet-MP-2018.6.1-Eform").eval()
    module.transform.fit(torch.tensor([2.0, 30.0, 300.0]))
    data = module.backbone.featurizer().build([Record("mgo", "MgO", 50.0, rocksalt(4.21, "Mg", "O")),
                                               Record("nacl", "NaCl", 6.5, rocksalt(5.64)),
                                               Record("kcl", "KCl", 7.0, rocksalt(6.29, "K", "Cl"))])
    batch = data.collate([0, 1, 2])
    head = module.head(module.backbone(batch))
    z = module(batch)
    torch.testing.assert_close(z[0], head[0] + module.transform.encode(torch.tensor(40.0)))
    torch.testing.assert_close(z[1:], head[1:])
    with torch.no_grad():
        for p in module.head.parameters():
            p.zero_()
    torch.testing.assert_close(module.predict_target(batch)[0], torch.tensor(40.0), rtol=1e-5, atol=1e-4)
    (tmp_path / "model.pt").write_bytes(model_file_bytes(module, dict(OmegaConf.to_container(cfg, resolve=True))))
    member = member_of(*read_model_file(tmp_path / "model.pt"), "m", "model.pt")
    assert member.module.backbone.learn_residual
    torch.testing.assert_close(member.module(batch), module(batch))
    with pytest.raises(ConfigError, match="backbone.learn_residual"):
        build_model(compose_cfg("backbone=m3gnet_physics", "+backbone.learn_residual=true"), None)


def test_a_trained_residual_weight_scales_the_baseline_learns_and_is_saved(tmp_path):
    """train_residual_weight: the prediction is head + w·encode(κ_BTE) on trusted rows, w a parameter of the backbone
    that gets a gradient and model.pt keeps; without learn_residual it (or a fixed weight) is refused."""
    from paraisite.models.io import model_file_bytes, read_model_file
    from paraisite.predict import member_of

    table = tmp_path / "t.csv"
    write_bte_table(table, [("mgo", "MgO", 40.0, "")])
    cfg = compose_cfg("backbone=megnet_bte", f"backbone.physics.tables=[{table}]", "+backbone.learn_residual=true",
                      "+backbone.residual_weight=0.5", "+backbone.train_residual_weight=true")
    module = build_model(cfg, "MEGNet-MP-2018.6.1-Eform")
    module.transform.fit(torch.tensor([2.0, 30.0, 300.0]))
    batch = module.backbone.featurizer().build([Record("mgo", "MgO", 50.0, rocksalt(4.21, "Mg", "O")),
                                                Record("kcl", "KCl", 7.0, rocksalt(6.29, "K", "Cl"))]).collate([0, 1])
    weight = module.backbone.residual_weight
    assert isinstance(weight, torch.nn.Parameter) and float(weight) == 0.5
    module.eval()
    head = module.head(module.backbone(batch))
    z = module(batch)
    torch.testing.assert_close(z[0], head[0] + 0.5 * module.transform.encode(torch.tensor(40.0)))
    torch.testing.assert_close(z[1], head[1])
    z.sum().backward()
    assert weight.grad is not None and float(weight.grad) != 0.0
    with torch.no_grad():
        weight.fill_(0.8)
    (tmp_path / "model.pt").write_bytes(model_file_bytes(module, dict(OmegaConf.to_container(cfg, resolve=True))))
    member = member_of(*read_model_file(tmp_path / "model.pt"), "m", "model.pt")
    assert float(member.module.backbone.residual_weight) == pytest.approx(0.8)
    torch.testing.assert_close(member.module(batch), module(batch))
    for key in ("train_residual_weight=true", "residual_weight=0.5"):
        with pytest.raises(ConfigError, match=f"backbone.{key.split('=')[0]}: .*learn_residual=true"):
            build_model(compose_cfg("backbone=megnet_bte", f"backbone.physics.tables=[{table}]", f"+backbone.{key}"),
                        None)


def test_the_electron_count_counts_half_heuslers_and_nothing_else():
    from paraisite.models.electron_count import closed_shell_deviation

    counts = {"TiNiSn": 0, "LiMgSb": 0, "ThNiSn": 0, "UNiSn": 0, "TiNiSb": 1, "ZrRuSb": 1, "MnGaPt": 2,
              "NaCl": 0, "CuH": 0, "Ti2NiSb": 0, "TiNiSbO": 0}
    assert {f: closed_shell_deviation(f) for f in counts} == counts


def test_the_electron_count_joins_the_bte_columns_and_a_saved_model_keeps_both(tmp_path):
    """extra_physics: its column after the BTE ones (the residual's baseline still reads the BTE's), rows given later
    still reach the BTE part, and model.pt rebuilds the joined descriptors without the table."""
    from pymatgen.core import Lattice, Structure

    from paraisite.models.io import model_file_bytes, read_model_file
    from paraisite.predict import member_of

    table = tmp_path / "t.csv"
    write_bte_table(table, [("mgo", "MgO", 40.0, "")])
    cfg = compose_cfg("backbone=megnet_bte", f"backbone.physics.tables=[{table}]",
                      "+backbone.extra_physics._target_=paraisite.models.electron_count.ElectronCount",
                      "+backbone.extra_physics._partial_=true", "+backbone.learn_residual=true")
    module = build_model(cfg, "MEGNet-MP-2018.6.1-Eform")
    module.transform.fit(torch.tensor([2.0, 30.0, 300.0]))
    backbone = module.backbone
    assert backbone.out_dim == backbone.inner.out_dim + 5 and "valence-electron count" in backbone.name
    half_heusler = Structure.from_spacegroup("F-43m", Lattice.cubic(5.9), ["Ti", "Ni", "Sb"],
                                             [[0, 0, 0], [0.25, 0.25, 0.25], [0.5, 0.5, 0.5]])
    records = [Record("mgo", "MgO", 50.0, rocksalt(4.21, "Mg", "O")), Record("tns", "TiNiSb", 4.0, half_heusler)]
    featurizer = backbone.featurizer()
    data = featurizer.build(records)
    torch.testing.assert_close(data.physics.x, torch.tensor([[math.log(40.0), 1, 0, 0, 0], [0, 0, 0, 0, 1.0]]))
    batch = data.collate([0, 1])
    torch.testing.assert_close(backbone.baseline(batch), torch.tensor([40.0, math.nan]), equal_nan=True)
    write_bte_table(tmp_path / "new.csv", [("tns", "TiNiSb", 3.0, "")])
    assert add_rows(featurizer, bte_tables([tmp_path / "new.csv"]))
    assert featurizer.build(records).physics.x[1].tolist() == pytest.approx([math.log(3.0), 1, 0, 0, 1])
    module.eval()
    (tmp_path / "model.pt").write_bytes(model_file_bytes(module, dict(OmegaConf.to_container(cfg, resolve=True))))
    table.unlink()
    member = member_of(*read_model_file(tmp_path / "model.pt"), "m", "model.pt")
    assert member.module.backbone.spec["extra_physics"] == backbone.spec["extra_physics"]
    torch.testing.assert_close(member.module(batch), module(batch))
