"""The house rules: typed stages that refuse typos and bad values, no import cycles, one-file backbones."""

import ast
import csv
import subprocess
import sys

import pytest
import torch
from torch import nn

from paraisite.cli import main as cli
from paraisite.contracts import Backbone
from paraisite.data.composition import CompositionFeaturizer
from paraisite.errors import ConfigError
from paraisite.recipe import check_config, check_overrides, pretrained_weights, stages_of
from tests.conftest import ROOT
from tests.helpers import cfg_of, compose_cfg


def train_cli(*args, tmp_path):
    return subprocess.run([sys.executable, str(ROOT / "train.py"), "experiment=smoke", *args,
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("override,where,key", [
    ("+finetune.stages.dft.polcy=head", "finetune.stages.dft", "polcy"),
    ("stage_overrides.learning_rate=5e-4", "stage_overrides", "learning_rate"),
])
@pytest.mark.slow
def test_a_mistyped_key_stops_the_cli_before_anything_is_written(override, where, key, tmp_path):
    done = train_cli(override, tmp_path=tmp_path)
    assert done.returncode == 2 and not (tmp_path / "run").exists()
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
    assert f"{where}: unknown key {key!r}" in line and "valid keys: " in line and "Traceback" not in done.stderr
    if key == "polcy":
        assert "did you mean 'policy'?" in line and "backbone_lr_scale" in line


@pytest.mark.parametrize("override,where", [
    ("+stage_by_data.dataset1.epoch=3", "stage_by_data.dataset1: unknown key 'epoch' (did you mean 'epochs'?)"),
    ("datamodule.val_fractoin=0.2", "datamodule: unknown key 'val_fractoin' (did you mean 'val_fraction'?)"),
    ("++source_training.bach_size=3", "source_training: unknown key 'bach_size' (did you mean 'batch_size'?)"),
    ("+backbone.stage.lr_scale=3", "backbone.stage: unknown key 'lr_scale'"),
])
def test_command_line_overrides_of_typed_keys_are_checked(override, where):
    with pytest.raises(ConfigError) as err:
        check_overrides(["-m", override, "seed=1,2"])
    assert where in str(err.value)
    check_overrides(["stage_overrides.lr=1e-4", "+finetune.stages.dft.policy=head", "hydra.run.dir=x"])


def test_a_mistyped_key_in_a_config_file_is_refused_with_the_stage_named():
    with pytest.raises(ConfigError, match=r"finetune.stages.dft: unknown key 'polcy' \(did you mean 'policy'\?\)"):
        stages_of(cfg_of("finetune=dft", "+finetune.stages.dft.polcy=head"))
    with pytest.raises(ConfigError, match=r"backbone.stage: unknown key 'learning_rate'"):
        stages_of(cfg_of("backbone=elemnet", "+backbone.stage.learning_rate=1"))


def test_a_burn_in_as_long_as_the_stage_is_refused():
    with pytest.raises(ConfigError, match=r"stage 'dft': select_from_epoch=5 leaves no epoch to choose from \(epochs=5"):
        stages_of(cfg_of("finetune=dft", "stage_overrides.epochs=5", "++finetune.stages.dft.select_from_epoch=5"))
    (stage,) = stages_of(cfg_of("finetune=dft", "stage_overrides.epochs=5", "stage_overrides.select_from_epoch=4"))
    assert stage.select_from_epoch == 4


def test_a_refit_is_refused_where_it_would_train_on_what_selects_or_tests():
    with pytest.raises(ConfigError, match=r"stage 'agl': refit=true is for the last stage only"):
        stages_of(cfg_of("finetune=agl_dft", "++finetune.stages.agl.refit=true"))
    with pytest.raises(ConfigError, match=r"refit=true retrains a network; policy=features has no epochs"):
        stages_of(cfg_of("finetune=dft", "stage_overrides.refit=true", "stage_overrides.policy=features"))
    with pytest.raises(ConfigError, match=r"refit=true trains on the validation split, which protocol=paper makes"):
        check_config(cfg_of("finetune=dft", "stage_overrides.refit=true", "protocol=paper"))
    with pytest.raises(ConfigError, match=r"calibrate=true fits its factor on the validation split, which stage 'dft'"):
        check_config(cfg_of("finetune=dft", "stage_overrides.refit=true", "calibrate=true"))
    (stage,) = stages_of(cfg_of("finetune=dft", "stage_overrides.refit=true"))
    assert stage.refit


def test_every_stage_key_is_declared_so_no_plus_is_needed():
    stages = stages_of(compose_cfg("finetune=agl_dft", "stage_overrides.lr=5e-4", "stage_overrides.patience=7"))
    assert [(s.lr, s.patience) for s in stages] == [(5e-4, 7), (5e-4, 7)]


@pytest.mark.parametrize("override,message", [
    ("stage_overrides.epochs=-1", "stage 'dft': epochs=-1 is not allowed (an integer ≥ 1)"),
    ("stage_overrides.epochs=0", "epochs=0 is not allowed"),
    ("stage_overrides.batch_size=0", "batch_size=0 is not allowed (an integer ≥ 1)"),
    ("stage_overrides.lr=abc", "lr='abc' is not allowed (a number > 0)"),
    ("stage_overrides.epochs=2.5", "epochs=2.5 is not allowed"),
    ("stage_overrides.policy=everything",
     "policy='everything' is not allowed (one of all, head, reinit_head, features)"),
    ("stage_overrides.final_lr_fraction=2", "final_lr_fraction=2 is not allowed (a number ≥ 0, ≤ 1)"),
    ("seed=-1", "config: seed=-1 is not allowed"),
    ("datamodule.test_fraction=0", "datamodule: test_fraction=0 is not allowed (a number > 0, < 1)"),
    ("datamodule.val_fraction=1.5", "datamodule: val_fraction=1.5 is not allowed"),
    ("datamodule.on_bad=ignore", "datamodule: on_bad='ignore' is not allowed (one of error, skip)"),
    ("source_training.batch_size=-4", "source_training: batch_size=-4 is not allowed"),
    ("protocol=cheat", "config: protocol='cheat' is not allowed (one of holdout, paper, cv, final)"),
])
def test_bad_values_are_named_with_the_allowed_range(override, message):
    with pytest.raises(ConfigError) as err:
        check_config(compose_cfg("finetune=dft", override))
    assert message in str(err.value)


def test_a_backbone_without_weights_for_a_pretrain_task_is_a_clear_error(tmp_path):
    conf = toy_config_dir(tmp_path)
    cfg = compose_cfg(f"hydra.searchpath=[file://{conf}]", "backbone=toy", "pretrain=eform")
    with pytest.raises(ConfigError, match=r"backbone toy has no weights for pretrain=eform \(it has: scratch"):
        pretrained_weights(cfg)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "backbone").glob("*.yaml")))
def test_every_backbone_file_composes_with_weights_for_its_default_pretrain_and_the_tables_it_reads(name):
    cfg = cfg_of(f"backbone={name}")
    assert cfg.backbone.name == name  # run folders and reports are labelled by it
    assert cfg.pretrain.name in cfg.backbone.weights_by_pretrain
    physics = cfg.backbone.get("physics") or {}
    assert all((ROOT / table).is_file() for table in physics.get("tables", ()))


def imports_of(path, package: str = "paraisite") -> set[str]:
    """Modules of `package` that a file imports anywhere (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == package}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == package:
            found |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
    return found


def test_no_import_cycles_in_the_package():
    root = ROOT / "paraisite"
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in root.rglob("*.py")}
    graph = {name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(name, trail):
        state[name] = 1
        for nxt in graph[name]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " → ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


class ToyBackbone(Backbone):
    """A backbone written outside the package: elemental fractions → `width` features."""

    def __init__(self, width: int = 8, weights: str | None = None, spec: dict | None = None):
        super().__init__()
        self.spec, self.name = spec or {"width": width}, "toy"
        self.layer = nn.Linear(86, self.spec["width"])

    @property
    def out_dim(self) -> int:
        return self.spec["width"]

    def featurizer(self) -> CompositionFeaturizer:
        return CompositionFeaturizer()

    def forward(self, batch) -> torch.Tensor:
        return torch.relu(self.layer(batch.x))


def toy_config_dir(tmp_path):
    conf = tmp_path / "conf"
    (conf / "backbone").mkdir(parents=True)
    (conf / "backbone" / "toy.yaml").write_text(
        "name: toy\n_target_: tests.test_architecture.ToyBackbone\nweights_by_pretrain: {scratch: null}\nwidth: 8\n")
    return conf


def test_a_backbone_in_one_class_and_one_yaml_trains_and_predicts(tmp_path):
    from paraisite.chain import run

    conf = toy_config_dir(tmp_path)
    cfg = compose_cfg(f"hydra.searchpath=[file://{conf}]", "backbone=toy", "pretrain=scratch", "finetune=dft",
                      "head.widths=[8]")
    results = run(cfg, tmp_path / "run")
    assert results["status"] == "ok" and results["config"]["backbone"] == "toy"
    assert results["test"]["dataset1"]["n"] > 0
    inputs = tmp_path / "in.csv"
    inputs.write_text("formula\nNaCl\nBi2Te3\n")
    assert cli(["predict", str(inputs), "--run", str(tmp_path / "run"), "--output", str(tmp_path / "p.csv")]) == 0
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert [r["formula"] for r in rows] == ["NaCl", "Bi2Te3"] and all(r["flag"] == "" and r["kappa_mean"] for r in rows)
