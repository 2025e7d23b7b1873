"""A diverged training run ends, with a non-zero status and one clear line; it never becomes
``checkpoint_best.pt``.

* ``Trainer.train_step``: fairseq 0.12 raises ``FloatingPointError`` (after a NaN detector's
  dump) when float32 gradients are not finite, and the CPU ``--amp`` path
  (:class:`user_dir.patches.amp.NoScaler`) raises it after :data:`MAX_SKIPPED` non-finite
  updates in a row; either becomes :class:`TrainingDiverged`, naming the update and what to do.
* ``checkpoint_utils.save_checkpoint``: a validation metric that is not finite (which fairseq
  would take as the first ``checkpoint_best.pt``) stops the run before anything is saved.
* ``TranslationTask.reduce_metrics``: where every validation hypothesis is empty (a model that has
  learned nothing yet, a too-high --lr), fairseq logs no BLEU and ``--best-checkpoint-metric bleu``
  ends the run in ``KeyError: 'bleu'``; BLEU is logged as sacrebleu scores such output, 0.
"""
import math

import numpy as np
from fairseq import checkpoint_utils
from fairseq.logging import metrics
from fairseq.tasks.translation import EVAL_BLEU_ORDER, TranslationTask
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


def corpus_bleu(meters) -> float:
    """sacrebleu's BLEU of the validation so far, from the n-gram counts fairseq logs (0 for no words)."""
    from sacrebleu.metrics import BLEU

    return round(BLEU.compute_bleu(correct=meters["_bleu_counts"].sum, total=meters["_bleu_totals"].sum,
                                   sys_len=int(meters["_bleu_sys_len"].sum), ref_len=int(meters["_bleu_ref_len"].sum),
                                   smooth_method="exp").score, 2)


def _bleu_of_empty_hypotheses(reduce_metrics):
    def reduce_metrics_with_bleu(self, logging_outputs, criterion):
        reduce_metrics(self, logging_outputs, criterion)
        validating = self.cfg.eval_bleu and any("_bleu_totals_0" in log for log in logging_outputs)
        if not validating or sum(log.get("_bleu_totals_0", 0) for log in logging_outputs) > 0:
            return  # fairseq logged this batch's counts (or it is training)
        metrics.log_scalar("_bleu_counts", np.zeros(EVAL_BLEU_ORDER))  # the same meters, no hypothesis word
        metrics.log_scalar("_bleu_totals", np.zeros(EVAL_BLEU_ORDER))
        metrics.log_scalar("_bleu_sys_len", 0)
        metrics.log_scalar("_bleu_ref_len", sum(log.get("_bleu_ref_len", 0) for log in logging_outputs))
        metrics.log_derived("bleu", corpus_bleu)  # fairseq's own, where a batch had words, computes the same

    return reduce_metrics_with_bleu


replace(Trainer, "train_step", _stop_on_non_finite_gradients)
replace(checkpoint_utils, "save_checkpoint", _refuse_non_finite_validation)
replace(TranslationTask, "reduce_metrics", _bleu_of_empty_hypotheses)
