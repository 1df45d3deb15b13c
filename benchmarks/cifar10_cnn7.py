"""CIFAR-10's ``cnn7`` (the 7-layer CNN of certified training) as a model file for the benchmarks.

Its weights are not shipped; train them once (2 epochs: 17 minutes on a 2-core CPU, 74.65% test accuracy)
and pass them with ``--weights``:

    advex train --dataset cifar10 --arch cnn7 --epochs 2 --seed 0 --data-dir DIR --out runs/cnn7
    python benchmarks/bench_onepixel_peers.py --model benchmarks/cifar10_cnn7.py --weights runs/cnn7/model.safetensors
"""

from advex.models.archs import make_classifier

model = make_classifier("cifar10", "cnn7")
