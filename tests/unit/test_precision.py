"""``--amp`` on CPU (user_dir/patches/amp.py): the loss scaler it installs does no scaling and skips
an update whose gradients are not finite."""
import torch
from fairseq.optim.adam import FairseqAdam
from omegaconf import OmegaConf

from user_dir.patches.amp import NoScaler


def test_no_scaler_skips_an_update_with_non_finite_gradients():
    param = torch.nn.Parameter(torch.ones(3))
    cfg = OmegaConf.create({"lr": [0.1], "adam_betas": "(0.9, 0.999)", "adam_eps": 1e-8, "weight_decay": 0.0,
                            "tpu": False, "fp16_adam_stats": False})
    optimizer = FairseqAdam(cfg, [param])
    scaler = NoScaler()
    assert scaler.scale(torch.tensor(2.0)) == 2.0 and scaler.get_scale() == 1.0
    param.grad = torch.tensor([1.0, float("inf"), 1.0])
    scaler.step(optimizer)
    assert torch.equal(param.data, torch.ones(3)), "a non-finite gradient reached the weights"
    param.grad = torch.tensor([1.0, 1.0, 1.0])
    scaler.step(optimizer)
    assert (param.data < 1).all()
