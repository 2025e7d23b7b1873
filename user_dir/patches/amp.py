"""``--amp`` on CPU: bfloat16 autocast, float32 weights, no loss scaling.

fairseq 0.12's ``--amp`` is CUDA's float16 autocast with a loss scaler (on a CPU it trains in
float32 and warns), and its ``--bf16`` converts the weights themselves and implies ``--tpu``.
With this patch ``--amp`` on a CPU runs every forward pass under
``torch.autocast("cpu", dtype=torch.bfloat16)``:

* training: the criterion's forward (``FairseqTask.train_step``); backward follows the dtypes
  autocast chose;
* validation: loss and ``--eval-bleu`` decoding (``Trainer.valid_step``);
* fairseq-generate and fairseq-interactive decoding (``FairseqTask.inference_step`` on models
  prepared with ``--amp``).

Weights, optimizer state and checkpoints stay float32. bfloat16 has float32's exponent range,
so there is no loss scaler; an update whose gradients are not finite is skipped, as ``--amp``
on CUDA skips it, but a scale that cannot shrink cannot recover either: after
:data:`MAX_SKIPPED` skipped updates in a row the run has diverged (``FloatingPointError``, which
:mod:`user_dir.patches.divergence` reports). On a GPU ``--amp`` is fairseq's own.
"""
import warnings

import torch
from fairseq.models import BaseFairseqModel
from fairseq.optim import FairseqOptimizer
from fairseq.optim.amp_optimizer import AMPOptimizer
from fairseq.tasks import FairseqTask
from fairseq.trainer import Trainer

from . import replace

MAX_SKIPPED = 10  # non-finite updates in a row (each batch tried 1 + --amp-batch-retries times)
_PREPARED = "_bf16_autocast"  # set on models that fairseq-generate/interactive prepared with --amp


def on_cpu(module: torch.nn.Module) -> bool:
    p = next(module.parameters(), None)
    return p is not None and p.device.type == "cpu"


def cpu_autocast(enabled: bool = True):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


class NoScaler:
    """What fairseq's AMPOptimizer calls of torch's GradScaler, without scaling. ``step`` skips
    the update when a gradient is not finite (GradScaler does the same), and raises
    FloatingPointError after :data:`MAX_SKIPPED` such updates in a row."""

    def __init__(self) -> None:
        self.skipped = 0

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def unscale_(self, optimizer) -> None:
        pass

    def step(self, optimizer: FairseqOptimizer) -> None:
        grads = [p.grad for p in optimizer.params if p.grad is not None]
        if grads and not torch.isfinite(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))):
            self.skipped += 1
            if self.skipped >= MAX_SKIPPED:
                raise FloatingPointError(f"{self.skipped} updates in a row had gradients that are not finite "
                                         "under bfloat16 autocast")
            return
        self.skipped = 0
        optimizer.step()

    def update(self) -> None:
        pass

    def get_scale(self) -> float:
        return 1.0

    def get_backoff_factor(self) -> float:
        return 1.0


def _no_scaler_on_cpu(init):
    def __init__(self, cfg, params, fp32_optimizer, **kwargs):
        with warnings.catch_warnings():  # torch warns that its CUDA scaler is off without CUDA
            warnings.simplefilter("ignore")
            init(self, cfg, params, fp32_optimizer, **kwargs)
        if cfg.common.cpu or not torch.cuda.is_available():
            self._grad_scaler = NoScaler()

    return __init__


def _train_under_autocast(train_step):
    def bf16_train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        if isinstance(optimizer, AMPOptimizer) and on_cpu(model):
            def criterion_bf16(*args, **kwargs):
                with cpu_autocast():
                    return criterion(*args, **kwargs)
            return train_step(self, sample, model, criterion_bf16, optimizer, update_num, ignore_grad)
        return train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad)

    return bf16_train_step


def _validate_under_autocast(valid_step):
    def bf16_valid_step(self, sample, raise_oom=False):
        with cpu_autocast(self.cfg.common.amp and on_cpu(self.model)):
            return valid_step(self, sample, raise_oom)

    return bf16_valid_step


def _mark_for_autocast(prepare_for_inference_):
    def prepare(self, cfg):
        setattr(self, _PREPARED, bool(cfg.common.amp))
        return prepare_for_inference_(self, cfg)

    return prepare


def _infer_under_autocast(inference_step):
    def bf16_inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        enabled = all(getattr(m, _PREPARED, False) and on_cpu(m) for m in models)
        with cpu_autocast(enabled):
            return inference_step(self, generator, models, sample, prefix_tokens, constraints)

    return bf16_inference_step


replace(AMPOptimizer, "__init__", _no_scaler_on_cpu)
replace(FairseqTask, "train_step", _train_under_autocast)
replace(Trainer, "valid_step", _validate_under_autocast)
replace(BaseFairseqModel, "prepare_for_inference_", _mark_for_autocast)
replace(FairseqTask, "inference_step", _infer_under_autocast)
