"""One trial: adapt a pretrained model with one PEFT config on one domain, then measure it.

Sequence (the contract the sweep relies on):

1. :func:`prepare_trial` builds the model (``models.build_model``), loads the base checkpoint
   (``models.checkpoint.load_checkpoint``, class head re-initialised when the class count
   differs; a file that does not fit otherwise is a UserError naming it and its first offending
   keys; the record's ``base_load`` carries the load summary), applies the PEFT method
   (``models.peft``), then measures parameters and the latency of the *deployed* form (a deep
   copy with LoRA merged and adapters in place) BEFORE any training, so a sweep can drop
   infeasible configurations cheaply.
2. :meth:`PreparedTrial.train_and_evaluate` trains ``iterations`` steps, calls
   ``report(iteration, metrics)`` every ``eval_every`` iterations with at least
   ``{"iteration", "ap", "loss"}`` (an evaluation on the eval split), evaluates at the end and
   returns a :class:`TrialRecord`. ``report`` returning True stops training early (the record is
   then evaluated at the iteration reached).
3. A diverged run (non-finite loss or gradient) returns ``status="failed"`` with the reason in
   ``error`` and NaN metrics — never AP 0. Parameters and latency stay filled in.
4. Resume: :meth:`PreparedTrial.save_state` (typically from inside ``report``) writes the training
   state at the last completed iteration — trainable parameters only (the frozen base is rebuilt
   from the spec), optimizer, LR scheduler, RNG states (torch, numpy, python), iteration, the
   data order (seed, batches drawn, a digest of the training images), recent losses — to
   ``<dir>/trial_state.pt`` atomically. A fresh :func:`prepare_trial` of the same spec then
   ``load_state(dir) -> iteration`` and ``train_and_evaluate(report, start_iteration=iteration)``
   continues exactly where the first run was (same data stream, same augmentations, same
   weights as an uninterrupted run); the record's ``start_iteration`` says where it continued.
   Evaluations for ``report`` do not touch the training RNG
   streams (saved and restored around them), so reporting never changes what is trained.

Modules: ``spec`` (TrialSpec, TrialRecord), ``data`` (device and datasets), ``prepare``
(prepare_trial, run_trial), ``prepared`` (PreparedTrial: training, evaluation, resume state),
``rng`` (random-stream capture for exact resume).
"""

from models.trial.prepare import prepare_trial, run_trial
from models.trial.prepared import STATE_FILE, PreparedTrial
from models.trial.spec import ReportFn, TrialRecord, TrialSpec

__all__ = [
    "TrialSpec",
    "TrialRecord",
    "PreparedTrial",
    "prepare_trial",
    "run_trial",
    "ReportFn",
    "STATE_FILE",
]
