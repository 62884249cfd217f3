"""Train one grid point (or a sweep with -m): python train.py pretrain=eform finetune=dft data=dataset1"""

import hydra

from paraisite.chain import main


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def train(cfg):
    return main(cfg)


if __name__ == "__main__":
    train()
