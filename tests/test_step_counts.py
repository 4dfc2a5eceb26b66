"""Every shipped config's training step, counted on the CPU under a TorchDispatchMode (the proxies of
a GPU's synchronisations and kernel launches): no host read on a step that does not log, and no more
dispatched ops than the budget below. The budgets are the counts measured when the step was last
slimmed (benchmarks/step_counts.py; before it: 713 641 786 786 587 1053 1239), with a little room:
a change that adds ops to every step fails here and says so."""

import argparse
import sys

import pytest
import torch

from tests.helpers import CONFIGS, ROOT, SHARED_DATA

sys.path.insert(0, str(ROOT / "benchmarks"))
from step_counts import count  # noqa: E402

BUDGET = {  # ops a step; measured: 435 432 536 536 432 543 690
    "digits.yaml": 450,
    "mnist.yaml": 445,
    "mnist_fast.yaml": 550,
    "mnist_long.yaml": 550,
    "fashion_mnist.yaml": 445,
    "image_folder.yaml": 560,
    "image_folder_cpu.yaml": 705,
}


def test_every_shipped_config_has_a_budget():
    assert sorted(BUDGET) == sorted(p.name for p in CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(BUDGET))
def test_a_training_step_reads_nothing_from_the_device_and_keeps_to_its_op_budget(name, tmp_path):
    config = CONFIGS / name
    data = SHARED_DATA / ("fashion_mnist" if "fashion" in name else "mnist")
    if "mnist" in name and not data.is_dir():
        pytest.skip(f"no copy of {data.name} at {data}")
    args = argparse.Namespace(
        steps=4, image_size=16, mnist_dir=str(SHARED_DATA / "mnist"), fashion_mnist_dir=str(data), extra=[]
    )
    threads = torch.get_num_threads()
    try:
        quiet = count(config, args, tmp_path).quiet_steps()
    finally:
        torch.set_num_threads(threads)
    assert len(quiet) == 3
    assert [s.host_reads for s in quiet] == [0, 0, 0], [dict(s.by_op) for s in quiet if s.host_reads]
    assert max(s.ops for s in quiet) <= BUDGET[name]
