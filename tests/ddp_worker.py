"""Run under torchrun by tests/test_train.py: train a few steps, save this rank's weights."""

import sys

import torch.distributed as dist
from safetensors.torch import save_file

from advex.defences import TrainConfig, train

out = sys.argv[1]
cfg = TrainConfig(
    dataset="mnist",
    arch="small",
    defence="fast",
    eps=0.1,
    epochs=1,
    train_n=1024,
    max_steps=6,
    batch_size=64,
    eval_n=64,
    eval_steps=2,
)
run = train(cfg, out, device="cpu", progress=False, verbose=False)
save_file({k: v.contiguous() for k, v in run.model.net.state_dict().items()}, f"{out}/rank{run.rank}.safetensors")
print(f"rank {run.rank} of {run.world} done")
dist.destroy_process_group()
