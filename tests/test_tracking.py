"""W&B logging (offline), read back from the run file."""

import json

import pytest

from tests.test_train import train_cli
from tests.wandb_records import history_keys, read_records


@pytest.mark.slow
def test_wandb_offline_run_has_stage_metrics_config_and_matrix(tmp_path):
    done = train_cli("logger=wandb", f"hydra.run.dir={tmp_path}", "seed=3")
    assert done.returncode == 0, done.stderr[-2000:]
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    records = read_records(run_file)
    keys = history_keys(records)
    for stage in ("agl", "dft"):
        assert {f"{stage}-val/mape", f"{stage}-train/loss"} <= keys
    assert "test/matrix/_type" in keys and "test/heatmap/_type" in keys
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == "megnet-eform-agl_dft-dataset1-holdout-s3"
    assert run.run_group == "megnet-eform-agl_dft-dataset1-holdout"
    config = {item.key: item.value_json for r in records if r.WhichOneof("record_type") == "config"
              for item in r.config.update}
    assert json.loads(config["seed"]) == 3 and json.loads(config["finetune"])["name"] == "agl_dft"
    (table,) = tmp_path.glob("wandb/offline-run-*/files/media/table/test/matrix_*.table.json")
    matrix = json.loads(table.read_text())
    assert [row[0] for row in matrix["data"]] == ["dataset1", "dataset2", "mix", "agl"]
    results = json.loads((tmp_path / "results.json").read_text())
    assert matrix["data"][0][2] == results["test"]["dataset1"]["mape"]
    assert (tmp_path / "logs" / "dft" / "metrics.csv").is_file()  # CSV logs are kept alongside
