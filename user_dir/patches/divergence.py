"""A diverged training run ends, with a non-zero status and one clear line; it never becomes
``checkpoint_best.pt``.

* ``Trainer.train_step``: fairseq 0.12 raises ``FloatingPointError`` (after a NaN detector's
  dump) when float32 gradients are not finite, and the CPU ``--amp`` path
  (:class:`user_dir.patches.amp.NoScaler`) raises it after :data:`MAX_SKIPPED` non-finite
  updates in a row; either becomes :class:`TrainingDiverged`, naming the update and what to do.
* ``checkpoint_utils.save_checkpoint``: a validation metric that is not finite (which fairseq
  would take as the first ``checkpoint_best.pt``) stops the run before anything is saved.
"""
import math

from fairseq import checkpoint_utils
from fairseq.trainer import Trainer

from ..errors import Refusal
from . import replace

ADVICE = ("lower --lr or set --clip-norm, and start again or resume from checkpoint_last.pt (the last weights "
          "saved before, if any)")


class TrainingDiverged(Refusal, RuntimeError):
    """The loss, its gradients or a validation metric are not finite (NaN or infinite)."""


def _stop_on_non_finite_gradients(train_step):
    def train_step_or_stop(self, samples, raise_oom=False):
        try:
            return train_step(self, samples, raise_oom)
        except FloatingPointError as e:
            raise TrainingDiverged(f"training diverged at update {self.get_num_updates() + 1}: the gradients are "
                                   f"not finite ({e}); {ADVICE}") from None

    return train_step_or_stop


def _refuse_non_finite_validation(save_checkpoint):
    def save_checkpoint_if_finite(cfg, trainer, epoch_itr, val_loss):
        if val_loss is not None and not math.isfinite(val_loss):
            raise TrainingDiverged(f"training diverged by update {trainer.get_num_updates()}: validation "
                                   f"{cfg.best_checkpoint_metric} is {val_loss}; nothing was saved; {ADVICE}")
        return save_checkpoint(cfg, trainer, epoch_itr, val_loss)

    return save_checkpoint_if_finite


replace(Trainer, "train_step", _stop_on_non_finite_gradients)
replace(checkpoint_utils, "save_checkpoint", _refuse_non_finite_validation)
