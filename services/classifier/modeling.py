"""The intent classifier: a Hugging Face encoder, a pooling step and a linear head, and
optionally a slot tagger on the same encoder (one linear layer over the token states, BIO
tags, trained jointly with the intent head as in JointBERT, Chen et al. 2019).

Written as a small `nn.Module` rather than `AutoModelForSequenceClassification` because
(a) sentence-embedding encoders such as all-MiniLM-L6-v2 were trained with mean pooling, and
their BERT pooler is not meaningful; (b) the out-of-scope scores need the pooled features next
to the logits, from the same forward pass, in torch and in the ONNX export alike.

A word is tagged by its first sub-word token (the others are ignored in the loss and at
decoding time). No CRF: on SNIPS the plain softmax tagger with BIO repair at decoding time
is within the published figures' reach (docs/results.md), and a CRF's Viterbi decoding
would have to be reimplemented outside the ONNX graph.

On disk (`save_pretrained`): the encoder in Hugging Face format (`config.json`,
`model.safetensors`), the tokenizer, `head.safetensors`, `tagger.safetensors` (a joint
model only) and `classifier_config.json`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel
from transformers.utils import ModelOutput

from services.classifier.tagging import IGNORE, bio_tags

HEAD_FILE = "head.safetensors"
TAGGER_FILE = "tagger.safetensors"
CONFIG_FILE = "classifier_config.json"


@dataclass
class ClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    features: torch.Tensor | None = None
    tag_logits: torch.Tensor | None = None


@dataclass
class HeadConfig:
    num_labels: int
    pooling: str = "mean"  # "mean" over non-padding tokens, or "cls"
    dropout: float = 0.1
    label_smoothing: float = 0.0
    head: str = "linear"  # "linear", or "cosine": scaled cosine to class weight vectors
    scale: float = 30.0  # cosine head: logit scale s
    margin: float = 0.0  # cosine head: additive margin on the true class, training only
    slots: list[str] = field(default_factory=list)  # slot tagger's slots; none: no tagger
    slot_loss_weight: float = 1.0  # weight of the tagging loss beside the intent loss

    @property
    def tags(self) -> list[str]:
        return bio_tags(self.slots) if self.slots else []


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class CosineHead(nn.Module):
    """logits = scale * cos(feature, class weight)."""

    def __init__(self, hidden: int, num_labels: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_labels, hidden))
        nn.init.normal_(self.weight, std=0.02)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * nn.functional.linear(
            nn.functional.normalize(x, dim=-1), nn.functional.normalize(self.weight, dim=-1)
        )


class IntentClassifier(nn.Module):
    def __init__(self, encoder: nn.Module, head: HeadConfig):
        super().__init__()
        self.encoder = encoder
        self.head_config = head
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(head.dropout)
        if head.head == "cosine":
            self.classifier = CosineHead(hidden, head.num_labels, head.scale)
        else:
            self.classifier = nn.Linear(hidden, head.num_labels)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=head.label_smoothing)
        self.tagger = nn.Linear(hidden, len(head.tags)) if head.slots else None

    @property
    def config(self):  # Trainer and PEFT look for `model.config`
        return self.encoder.config

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None, tag_labels=None):
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state
        features = pool(hidden, attention_mask, self.head_config.pooling)
        logits = self.classifier(self.dropout(features))
        tag_logits = self.tagger(self.dropout(hidden)) if self.tagger is not None else None
        loss = None
        if labels is not None:
            train_logits = logits
            if self.head_config.head == "cosine" and self.head_config.margin:
                # Large-margin cosine loss (CosFace; Lin & Xu 2019 for unknown intents): the
                # true class must win by a margin, which tightens classes in feature space.
                train_logits = (
                    logits
                    - self.head_config.scale
                    * self.head_config.margin
                    * nn.functional.one_hot(labels, logits.shape[-1]).to(logits.dtype)
                )
            loss = self.loss_fn(train_logits, labels)
        if tag_labels is not None and tag_logits is not None:
            tag_loss = nn.functional.cross_entropy(
                tag_logits.flatten(0, 1), tag_labels.flatten(), ignore_index=IGNORE
            )
            weighted = self.head_config.slot_loss_weight * tag_loss
            loss = weighted if loss is None else loss + weighted
        return ClassifierOutput(loss=loss, logits=logits, features=features, tag_logits=tag_logits)

    # -- persistence ---------------------------------------------------------------------
    def save_head(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.classifier.state_dict().items()}
        save_file(state, str(directory / HEAD_FILE))
        if self.tagger is not None:
            tagger = {k: v.detach().cpu().contiguous() for k, v in self.tagger.state_dict().items()}
            save_file(tagger, str(directory / TAGGER_FILE))
        (directory / CONFIG_FILE).write_text(json.dumps(asdict(self.head_config), indent=2))

    def save_pretrained(self, directory: str | Path) -> None:
        """Encoder + head; the encoder must be a plain (merged) Hugging Face model."""
        self.encoder.save_pretrained(str(directory))
        self.save_head(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, **encoder_kwargs) -> IntentClassifier:
        directory = Path(directory)
        head = HeadConfig(**json.loads((directory / CONFIG_FILE).read_text()))
        encoder = AutoModel.from_pretrained(
            str(directory), add_pooling_layer=False, **encoder_kwargs
        )
        model = cls(encoder, head)
        model.classifier.load_state_dict(load_file(str(directory / HEAD_FILE)))
        if model.tagger is not None:
            model.tagger.load_state_dict(load_file(str(directory / TAGGER_FILE)))
        return model.eval()


def build_encoder(name_or_path: str, **kwargs) -> nn.Module:
    """A Hugging Face encoder without its pooler (the head pools itself)."""
    return AutoModel.from_pretrained(name_or_path, add_pooling_layer=False, **kwargs)
