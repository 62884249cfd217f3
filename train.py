"""Train one grid point (or a sweep with -m): python train.py pretrain=eform finetune=dft data=dataset1"""

import sys

import hydra

from paraisite.task import main, precheck


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def train(cfg):
    return main(cfg)


if __name__ == "__main__":
    precheck(sys.argv[1:])
    train()
