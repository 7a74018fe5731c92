"""The trainer's named steps (``TrainSession``): the refactor of ``train()`` changed nothing on the CPU.

The digest below was recorded with the single-function ``train()`` before it was split (LeNet-5, built-in
synthetic set, 32 px, 2 epochs, seed 0, 2 threads, fp32, no validation split). If you change training on
purpose, record the new digest and say why in the commit."""
import hashlib

import torch

from cxrviz.train import TrainConfig, TrainSession, train

LENET5_SHA256 = "0a19aadb9528e684beb2b5f7dba7eb416e4f70df613f03d32f475f68d4b864b1"


def _digest(state: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].contiguous().numpy().tobytes())
    return h.hexdigest()


def _cfg(**kw):
    return TrainConfig(**{**dict(arch="lenet5", img_size=32, epochs=2, seed=0, precision="fp32", val_fraction=0.0),
                          **kw})


def test_train_is_bit_identical_to_the_single_function_trainer():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        r = train(_cfg())
    finally:
        torch.set_num_threads(threads)
    assert _digest(r.state_dict) == LENET5_SHA256
    assert r.history[-1]["test_acc"] == 0.5166666507720947 and r.batch_losses[0] == 1.1042125225067139


def test_steps_can_be_driven_one_by_one():
    s = TrainSession(_cfg(epochs=1))
    s.setup()
    row = s.evaluate(1, s.run_epoch(1))
    s.release()
    r = s.finish("done")
    assert r.history == [row] and r.status == "done" and r.evaluation["epoch"] == 1
    assert s.model is None  # finish() lets go of the model and the data on the device
