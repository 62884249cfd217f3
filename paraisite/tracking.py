"""Experiment tracking: per-stage Lightning loggers plus run-level extras. W&B specifics live here only."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.loggers import CSVLogger

from paraisite.target import Target, selection_score

METRIC_COLUMNS = ("n", "mape", "mae", "rmse", "log_mae", "log_rmse", "r2", "spearman")


class CSVTracker:
    """One `logs/<stage>/metrics.csv` per stage (what `paraisite report` reads for learning curves)."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def log_config(self, config: dict) -> None:
        """Nothing to add: the run folder's .hydra/ holds the resolved config."""

    def stage_loggers(self, stage: str) -> list:
        return [CSVLogger(save_dir=str(self.run_dir), name="logs", version=stage)]

    def log_results(self, results: dict) -> None:
        """Nothing to add: results.json holds them."""

    def finish(self, status: str = "ok") -> None:
        """Nothing to close."""


class WandbTracker(CSVTracker):
    """W&B run (offline unless WANDB_MODE/`mode` says otherwise) next to the CSV logs.

    Metrics carry the stage name as prefix (`agl-val/mape`); the resolved config, the final cross-dataset matrix
    (a W&B Table + summary values), its heatmap, and optionally the final model as an artifact are logged.
    """

    def __init__(self, run_dir: str | Path, project: str = "paraisite",
                 entity: str | None = None, group: str | None = None, name: str | None = None,
                 tags: list[str] = (), mode: str = "offline", log_model: bool = False):
        from lightning.pytorch.loggers import WandbLogger

        super().__init__(run_dir)
        self.log_model = log_model
        self.logger = WandbLogger(project=project, entity=entity, group=group, name=name, tags=list(tags),
                                  save_dir=str(self.run_dir), mode=mode)
        self.run = self.logger.experiment  # starts the run now

    def log_config(self, config: dict) -> None:
        self.run.config.update(config, allow_val_change=True)

    def stage_loggers(self, stage: str) -> list:
        self.logger._prefix = stage  # Lightning loggers join prefix and metric name with "-"
        return [*super().stage_loggers(stage), self.logger]

    def log_results(self, results: dict) -> None:
        import wandb

        from paraisite.report import heatmap, summarize

        rows = [[test, *(m.get(k) for k in METRIC_COLUMNS)] for test, m in results["test"].items()]
        self.run.log({"test/matrix": wandb.Table(columns=["test set", *METRIC_COLUMNS], data=rows)})
        for test, m in results["test"].items():
            for key in METRIC_COLUMNS:
                self.run.summary[f"test/{test}/{key}"] = m.get(key)
        key, score = selection_score(results)
        self.run.summary[key] = score
        png = self.run_dir / "matrix.png"
        metric = Target.of_results(results).monitor
        heatmap(summarize([results], metric), metric, png)
        self.run.log({"test/heatmap": wandb.Image(str(png))})
        if self.log_model and (self.run_dir / "model.pt").is_file():
            artifact = wandb.Artifact(f"model-{self.run.id}", type="model", metadata=results["config"])
            artifact.add_file(str(self.run_dir / "model.pt"))
            self.run.log_artifact(artifact)

    def finish(self, status: str = "ok") -> None:
        self.run.finish(exit_code=0 if status == "ok" else 1)
