"""From the Hydra config to typed objects: the chain's stages, the data and source-training settings, the model
(backbone + head + target), the run's label. Every key and value is checked here, before a run writes anything."""

from __future__ import annotations

from dataclasses import fields

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from paraisite.contracts import Backbone
from paraisite.data.datasets import sources_of
from paraisite.errors import ConfigError, ParaisiteError
from paraisite.models.features import SEARCHES
from paraisite.models.regressor import TransferRegressor
from paraisite.settings import (
    DATA_KEYS,
    PROTOCOLS,
    STAGE_KEYS,
    DataSettings,
    SourceTraining,
    Stage,
    check_value,
    refuse_unknown,
    typed,
    without_added_keys,
)
from paraisite.source import pretrain
from paraisite.target import Target

RUNTIME_KEYS = {"progress_bar", "progress_every_s", "threads", "trainer", "logger", "data_dir", "resume_every_s",
                "stage_cache", "objective"}  # how a run is executed, not what it computes: may change on a resume
OBJECTIVES = ("run", "cv")  # what a job returns to a sweeper: its validation score | the mean over its cv folds
BACKBONE_KEYS = ("name", "stage", "weights_by_pretrain")  # a backbone YAML's keys that are not constructor arguments
TOP_LEVEL = {"seed": (int, {"low": 0, "high": 2**31}), "threads": (int, {"low": 1}),
             "resume_every_s": (float, {"low": 0}), "progress_every_s": (float, {"low": 0}),
             "calibrate": (bool, {})}


def plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def stages_of(cfg: DictConfig) -> list[Stage]:
    """The chain's stages in order, each = stage_defaults ← stage_by_data[its data] ← the backbone's recipe ←
    the stage's own keys ← stage_overrides (its non-null keys). Only the last stage may be a feature-extraction
    stage. An unknown key in any layer stops the run, naming the layer."""
    overrides = {k: v for k, v in plain(cfg.stage_overrides).items() if v is not None}
    layers = [("stage_defaults", plain(cfg.stage_defaults)), ("backbone.stage", plain(cfg.backbone.get("stage")))]
    for where, layer in [*layers, ("stage_overrides", overrides)]:
        refuse_unknown(layer, STAGE_KEYS, where)
    by_data = plain(cfg.stage_by_data)
    for data, layer in by_data.items():
        refuse_unknown(layer, STAGE_KEYS, f"stage_by_data.{data}")
    stages = []
    for name, own in plain(cfg.finetune.stages).items():
        where = f"finetune.stages.{name}"
        refuse_unknown(own, (*DATA_KEYS, *STAGE_KEYS), where)
        if not own.get("data"):
            raise ConfigError(f"{where}: no 'data' (the dataset this stage trains on)")
        merged = {"name": name, "low_fidelity": None, **layers[0][1], **by_data.get(own["data"], {}), **layers[1][1],
                  **own, **overrides}
        stage = typed(Stage, merged, f"stage {name!r}")
        if stage.select_from_epoch >= stage.epochs:
            raise ConfigError(f"stage {name!r}: select_from_epoch={stage.select_from_epoch} leaves no epoch to choose "
                              f"from (epochs={stage.epochs}; epochs are counted from 0)")
        stages.append(stage)
    if not stages:
        raise ConfigError(f"finetune={cfg.finetune.name}: the chain has no stages")
    if any(s.policy == "features" for s in stages[:-1]):
        raise ConfigError("policy=features (a scikit-learn regressor on frozen features) must be the last stage")
    early = [s.name for s in stages[:-1] if s.refit]
    if early:
        raise ConfigError(f"stage {early[0]!r}: refit=true is for the last stage only (a later stage would choose its "
                          "epoch after a stage that trained on validation records)")
    if stages[-1].refit and stages[-1].policy == "features":
        raise ConfigError(f"stage {stages[-1].name!r}: refit=true retrains a network; policy=features has no epochs")
    return stages


def run_identity(tree: dict) -> dict:
    """A resolved config as what its run computes: without the runtime keys, and without the added stage keys at
    their neutral value wherever they appear (`settings.without_added_keys`)."""
    def strip(node):
        return {k: strip(v) for k, v in without_added_keys(node).items()} if isinstance(node, dict) else node
    return strip({k: v for k, v in tree.items() if k not in RUNTIME_KEYS})


def flatten(tree, prefix: str = "") -> dict:
    """{dotted key: leaf} of nested dicts (lists are leaves)."""
    out = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def data_settings(cfg: DictConfig) -> DataSettings:
    return typed(DataSettings, plain(cfg.datamodule), "datamodule")


def source_training(cfg: DictConfig) -> SourceTraining:
    return typed(SourceTraining, plain(cfg.source_training), "source_training")


def check_run_keys(cfg: DictConfig) -> None:
    """The run-level keys: seed, protocol, fold (protocol=cv only), objective, threads, resume_every_s,
    progress_every_s, calibrate."""
    for key, (kind, meta) in TOP_LEVEL.items():
        check_value(key, cfg.get(key), kind, meta, key != "seed", "config")
    check_value("protocol", cfg.protocol, str, {"choices": PROTOCOLS}, False, "config")
    check_value("objective", cfg.objective, str, {"choices": OBJECTIVES}, False, "config")
    folds = cfg.datamodule.folds
    if cfg.objective == "cv":
        if cfg.protocol != "cv" or cfg.fold is not None:
            raise ConfigError(f"config: objective=cv runs every fold of protocol=cv itself: set protocol=cv and leave "
                              f"fold unset (protocol={cfg.protocol}, fold={cfg.fold})")
    elif cfg.protocol == "cv":
        check_value("fold", cfg.fold, int, {"low": 0, "high": folds - 1}, False, f"config (datamodule.folds={folds})")
    elif cfg.fold is not None:
        raise ConfigError(f"config: fold={cfg.fold} is for protocol=cv (protocol={cfg.protocol} has no folds)")


def check_multifidelity(cfg: DictConfig, stage: Stage, target: Target) -> None:
    """A multi-fidelity stage needs a backbone that takes the fidelity as a state, two disjoint κ sets and a network."""
    where = f"finetune={cfg.finetune.name}: stage {stage.name!r} (low_fidelity={stage.low_fidelity})"
    if not backbone_class(cfg.backbone).takes_fidelity:
        raise ConfigError(f"{where}: backbone {cfg.backbone.name} cannot take a record's fidelity as a state "
                          "(Backbone.takes_fidelity); use a backbone with a state input, e.g. backbone=megnet")
    if set(sources_of(stage.data)) & set(sources_of(stage.low_fidelity)):
        raise ConfigError(f"{where}: the low-fidelity set overlaps the stage's data {stage.data}")
    if not target.is_kappa:
        raise ConfigError(f"{where}: needs a κ target (data.target=kappa), not {target.kind}")
    if stage.policy == "features":
        raise ConfigError(f"{where}: policy=features fits a regressor without the fidelity; use a network policy")


def check_config(cfg: DictConfig) -> list[Stage]:
    """Every typed part of the config, checked; returns the stages."""
    check_run_keys(cfg)
    data_settings(cfg)
    source_training(cfg)
    target = Target.from_data_config(cfg.data)
    stages = stages_of(cfg)
    for stage in stages:
        if stage.low_fidelity:
            check_multifidelity(cfg, stage, target)
    searched = [s.name for s in stages if s.policy == "features" and s.regressor in SEARCHES]
    if searched and cfg.protocol == "paper":
        raise ConfigError(f"stage {searched[0]!r}: a regressor search selects on the validation split, which "
                          "protocol=paper makes the test split; use protocol=holdout")
    if stages[-1].refit and cfg.protocol == "paper":
        raise ConfigError(f"stage {stages[-1].name!r}: refit=true trains on the validation split, which protocol=paper "
                          "makes the test split; use protocol=holdout, cv or final")
    if cfg.get("calibrate"):
        if stages[-1].refit:
            raise ConfigError(f"calibrate=true fits its factor on the validation split, which stage "
                              f"{stages[-1].name!r} (refit=true) trains on; set one of them false")
        if not target.is_kappa:
            raise ConfigError(f"calibrate=true scales κ predictions to minimise their MAPE; data={cfg.data.name} "
                              f"predicts {target.name} (set calibrate=false)")
        if cfg.protocol == "paper":
            raise ConfigError("calibrate=true fits its factor on the validation split, which protocol=paper makes "
                              "the test split; use protocol=holdout or cv")
    return stages


def backbone_class(node: DictConfig) -> type[Backbone]:
    cls = get_class(node._target_)
    if not issubclass(cls, Backbone):
        raise ConfigError(f"backbone {node.get('name')}: {node._target_} is not a paraisite.contracts.Backbone")
    return cls


def pretrained_weights(cfg: DictConfig) -> str | None:
    """What `pretrain` gives the backbone (its YAML's `weights_by_pretrain`): a published weight set, or for a
    backbone that `trains_source`, the folder of the source model trained on the named table (trained now if not
    cached). None: random init."""
    table = plain(cfg.backbone.get("weights_by_pretrain"))
    if cfg.pretrain.name not in table:
        raise ConfigError(f"backbone {cfg.backbone.name} has no weights for pretrain={cfg.pretrain.name} "
                          f"(it has: {', '.join(table) or 'none'}; see weights_by_pretrain in its YAML)")
    weights = table[cfg.pretrain.name]
    if weights and backbone_class(cfg.backbone).trains_source:
        weights = str(pretrain(lambda: build_backbone(cfg.backbone, None), weights, source_training(cfg),
                               cfg.get("data_dir")))
    return weights


def build_backbone(node: DictConfig, weights: str | None) -> Backbone:
    backbone_class(node)
    resolved = OmegaConf.to_container(node, resolve=True)  # nested nodes (an inner backbone) resolve too
    return build({k: v for k, v in resolved.items() if k not in BACKBONE_KEYS}, weights=weights)


def build(node, **kwargs):
    """`hydra.utils.instantiate`, re-raising a ParaisiteError of the constructor as itself (Hydra wraps it)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ParaisiteError):
            raise cause from None
        raise


def build_model(cfg: DictConfig, weights: str | None) -> TransferRegressor:
    """Backbone (with `weights`) + head + the config's target. The head starts from the backbone's source output
    layer where both offer it (ElemNet's full fine-tuning)."""
    backbone = build_backbone(cfg.backbone, weights)
    head = build(cfg.head, in_dim=backbone.out_dim)
    source_layer = backbone.source_layer()
    if source_layer is not None:
        head.load_source_layer(*source_layer)
    return TransferRegressor(backbone, head, Target.from_data_config(cfg.data))


def run_label(cfg: DictConfig) -> dict:
    """The run's grid point. `data` is what the final stage trained on (AGL for finetune=agl, whatever `data`)."""
    last = list(cfg.finetune.stages.values())[-1].data
    data = cfg.data.name if last == cfg.data.dataset else last
    return {"backbone": cfg.backbone.name, "pretrain": cfg.pretrain.name, "finetune": cfg.finetune.name,
            "data": data, "seed": int(cfg.seed), "protocol": cfg.protocol, "fold": cfg.get("fold")}


# Config nodes whose keys are typed settings: overrides of their keys are checked before Hydra composes.
TYPED_NODES = {"stage_defaults": STAGE_KEYS, "stage_overrides": STAGE_KEYS, "backbone.stage": STAGE_KEYS,
               "datamodule": tuple(f.name for f in fields(DataSettings)),
               "source_training": tuple(f.name for f in fields(SourceTraining))}


def check_overrides(args: list[str]) -> None:
    """Command-line overrides of typed keys (`stage_overrides.lr=…`, `+finetune.stages.dft.policy=…`,
    `stage_by_data.agl.epochs=…`, `datamodule.…`, `source_training.…`), with or without `+`: an unknown key is
    refused with the valid keys before Hydra composes anything."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in args if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # Hydra reports malformed overrides itself
        return
    for override in parsed:
        key = override.key_or_group
        parts = key.split(".")
        for node, valid in TYPED_NODES.items():
            depth = node.count(".") + 1
            if ".".join(parts[:depth]) == node and len(parts) == depth + 1:
                refuse_unknown([parts[-1]], valid, node)
        if parts[0] == "stage_by_data" and len(parts) == 3:
            refuse_unknown([parts[2]], STAGE_KEYS, f"stage_by_data.{parts[1]}")
        if parts[:2] == ["finetune", "stages"] and len(parts) == 4:
            refuse_unknown([parts[3]], (*DATA_KEYS, *STAGE_KEYS), f"finetune.stages.{parts[2]}")
