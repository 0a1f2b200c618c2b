"""SEEM's PEFT table (:class:`models.peft.targets.PeftSpec`): plain ``nn.MultiheadAttention``
everywhere, so every LoRA set is of kind ``mha`` on the q and v slices of the packed in_proj.

- LoRA sets: ``enc_self_qv`` (6 pixel-decoder encoder self-attentions), ``dec_self_qv`` (9 decoder
  self-attentions), ``dec_cross_qv`` (9 decoder masked cross-attentions) -- together the paper's
  SEEM recipe (the default) -- plus ``enc_ffn`` / ``dec_ffn`` (FFN linears) for ablations.
- Adapter placements (the same names as Mask DINO): ``enc_self``, ``dec_self``, ``dec_cross``.
- Head recipe (trained on top of every PEFT method): ``class_embed`` and ``mask_embed``
  (SEEM has no box head).
- Baselines: ``full_head`` (all but ``backbone``), ``decoder_only`` (``sem_seg_head.predictor``
  except the optional ``lang_encoder``), ``class_mask`` (class + mask embedding).

Importing this module registers the spec (family ``seem``, model class ``SEEM``).
"""

from __future__ import annotations

from models.peft.targets import LoraTargetRule, PeftSpec, register_peft_spec

__all__ = ["SEEM_SPEC"]

_ENC = r"sem_seg_head\.pixel_decoder\.transformer\.encoder\.layers\.\d+"
_PRED = r"sem_seg_head\.predictor"
_DSELF = rf"{_PRED}\.transformer_self_attention_layers\.\d+"
_DCROSS = rf"{_PRED}\.transformer_cross_attention_layers\.\d+"
_DFFN = rf"{_PRED}\.transformer_ffn_layers\.\d+"
_QV = ("q", "v")

SEEM_SPEC = PeftSpec(
    family="seem",
    lora_targets={
        "enc_self_qv": (LoraTargetRule(rf"{_ENC}\.self_attn", kind="mha", slices=_QV),),
        "dec_self_qv": (LoraTargetRule(rf"{_DSELF}\.self_attn", kind="mha", slices=_QV),),
        "dec_cross_qv": (LoraTargetRule(rf"{_DCROSS}\.multihead_attn", kind="mha", slices=_QV),),
        "enc_ffn": (LoraTargetRule(rf"{_ENC}\.linear[12]"),),
        "dec_ffn": (LoraTargetRule(rf"{_DFFN}\.linear[12]"),),
    },
    default_lora_targets=("enc_self_qv", "dec_self_qv", "dec_cross_qv"),
    sites={
        "enc_self": rf"{_ENC}\.self_attn_site",
        "dec_self": rf"{_DSELF}\.self_attn_site",
        "dec_cross": rf"{_DCROSS}\.multihead_attn_site",
    },
    head_trainable=(rf"{_PRED}\.class_embed", rf"{_PRED}\.mask_embed"),
    baselines={
        "full_head": (r"(?!backbone(?:\.|$)).+",),
        # the decoder without the (optional) language encoder, which upstream nests in it
        "decoder_only": (rf"{_PRED}\.(?!lang_encoder(?:\.|$)).+",),
        "class_mask": (rf"{_PRED}\.class_embed", rf"{_PRED}\.mask_embed"),
    },
    structural_marker="sem_seg_head.predictor.transformer_cross_attention_layers",
)

register_peft_spec(SEEM_SPEC, ("SEEM",))
