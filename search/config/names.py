"""The names a sweep config and its results share: methods, targets, samplers, metrics, parameters.

One list of each, used by the config schema, the search space, the results store, W&B, selection
and the benchmarks, so a name is spelled once.
"""

from __future__ import annotations

__all__ = [
    "METHODS",
    "LORA_INITS",
    "LORA_TARGETS",
    "ADAPTER_PLACEMENTS",
    "ADAPTER_RESIDUALS",
    "SAMPLERS",
    "SYNTHETIC_DOMAINS",
    "KNOWN_METRICS",
    "PRETRAIN_METRICS",
    "PARAM_NAMES",
    "PARAM_COLUMNS",
    "allowed_names",
]

# loha and ia3 (peft) come last so the earlier names keep their positions.
METHODS = ("lora", "adapter", "full_head", "decoder_only", "class_mask", "loha", "ia3")
# LoRA initialisations (models.peft.lora.config.LORA_INITS; spelled here so configs import no torch).
LORA_INITS = ("default", "gaussian", "pissa", "olora")
# Fallbacks when models.peft is not importable; the live lists come from models.peft (see allowed_names).
LORA_TARGETS = ("msda", "msda_attention_weights", "msda_output_proj", "dec_self_qv", "enc_ffn", "dec_ffn")
ADAPTER_PLACEMENTS = ("enc_self", "dec_self", "dec_cross")
# The paper's residual-input ablation: kappa = attention input, lambda = attention output, both.
ADAPTER_RESIDUALS = ("kappa", "lambda", "kappa+lambda")


def allowed_names(kind: str) -> tuple[str, ...]:
    """Allowed names from the PEFT registry (so configs track models.peft), else the fallbacks."""
    try:
        if kind == "targets":
            from models.peft.targets import all_lora_target_names

            return tuple(all_lora_target_names())
        if kind == "placement":
            from models.peft.targets import all_placement_names

            return tuple(all_placement_names())
        from models.peft.adapter.config import RESIDUALS

        return tuple(RESIDUALS)
    except ImportError:
        return {"targets": LORA_TARGETS, "placement": ADAPTER_PLACEMENTS}.get(kind, ADAPTER_RESIDUALS)


SAMPLERS = ("nsga2", "tpe", "gp", "random")
SYNTHETIC_DOMAINS = ("source", "clean", "clutter", "xray", "street")
# Metrics a trial reports that objectives/constraints may name (TrialRecord.to_dict keys).
KNOWN_METRICS = (
    "ap",
    "ap50",
    "ap75",
    "ap_s",
    "ap_m",
    "ap_l",
    "missed_rate",
    "tp_confidence",
    "small_recall",
    "trainable_params",
    "total_params",
    "trainable_pct",
    "latency_ms",
    "latency_p90_ms",
    "final_loss",
)
# Metrics known before training (prepare_trial measures them): constraints on these stop a trial at once.
PRETRAIN_METRICS = ("trainable_params", "total_params", "trainable_pct", "latency_ms", "latency_p90_ms")


# The flat parameter names the search space produces (PARAM_COLUMNS below has their types).
PARAM_NAMES = (
    "method",
    "lora_rank",
    "lora_alpha",
    "lora_targets",
    "adapter_repetitions",
    "adapter_placement",
    "adapter_residual",
    "adapter_reduction",
    "lora_dora",
    "lora_rslora",
    "lora_init",
    "loha_rank",
    "loha_alpha",
    "loha_targets",
    "ia3_targets",
    "lr",
    "iterations",
)


# Every parameter the space can produce, with its Parquet type (inactive ones are null).
PARAM_COLUMNS: dict[str, str] = {
    "method": "string",
    "lora_rank": "int64",
    "lora_alpha": "float64",
    "lora_targets": "string",
    "adapter_repetitions": "int64",
    "adapter_placement": "string",
    "adapter_residual": "string",
    "adapter_reduction": "int64",
    "lora_dora": "bool",
    "lora_rslora": "bool",
    "lora_init": "string",
    "loha_rank": "int64",
    "loha_alpha": "float64",
    "loha_targets": "string",
    "ia3_targets": "string",
    "lr": "float64",
    "iterations": "int64",
}
