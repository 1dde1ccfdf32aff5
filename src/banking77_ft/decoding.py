"""Turning a prompt into an intent: constrained beam search over the label prefix tree, and
plain greedy generation for comparison.

Constrained decoding walks a trie of the 77 labels' token sequences (as tokenized in prepare,
each ending in EOS), so every prediction is a valid intent. Three things make it cheap:

- the LM head is evaluated only on the few hundred token ids that occur in labels, not on
  the 262,144-token vocabulary;
- a beam stops as soon as its trie node has a single label below it, and tokens forced by the
  trie (a node with one child, e.g. the "_" after " card") are fed together with the chosen
  token in one forward pass: forward passes are spent only where the trie branches;
- the prompt is encoded once per batch and its KV cache is shared by the beams.

Confidence. Probabilities are *locally normalised over valid continuations*: at each trie
node the model's logits are soft-maxed over that node's children only. The 77 label
probabilities therefore sum to exactly 1, and a forced token has probability 1. For a
fine-tuned model nearly all mass is on valid continuations, so this is close to the raw
sequence probability; it is the distribution constrained decoding actually samples from.
Top-k comes from beam search with k beams (documented approximation: a label pruned from
the beam early could in principle outrank the k-th returned one; the returned
probabilities themselves are exact, and top-1 is the beam's best).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .training import autocast_for


@dataclass(frozen=True)
class LabelTrie:
    labels: list[str]
    children: list[dict[int, int]]  # node -> {token id: child node}; node 0 is the root
    only_label: list[int]  # node -> the one label below it, or -1 if several
    vocab: torch.Tensor  # sorted token ids that occur in any label
    allowed: torch.Tensor  # (nodes, len(vocab)) bool: which vocab entries are children
    column: dict[int, int]  # token id -> its column in `vocab` (and in the restricted logits)

    @classmethod
    def build(cls, labels: Sequence[str], sequences: Sequence[Sequence[int]]) -> "LabelTrie":
        if len(labels) != len(sequences):
            raise ValueError("one token sequence per label is needed")
        children: list[dict[int, int]] = [{}]
        below: list[set[int]] = [set()]
        ends: dict[int, int] = {}  # node where a label's sequence ends -> label index
        for index, sequence in enumerate(sequences):
            node = 0
            below[0].add(index)
            for token in sequence:
                if token not in children[node]:
                    children[node][token] = len(children)
                    children.append({})
                    below.append(set())
                node = children[node][token]
                below[node].add(index)
            if node in ends:
                raise ValueError(f"labels {labels[ends[node]]!r} and {labels[index]!r} tokenize identically")
            ends[node] = index
        for node, index in ends.items():
            if children[node]:  # with EOS at the end of every sequence this cannot happen
                raise ValueError(f"label {labels[index]!r} is a prefix of another label's tokens")
        for node, kids in enumerate(children):
            if not kids and len(below[node]) != 1:
                raise ValueError("two labels tokenize identically: " + ", ".join(labels[i] for i in below[node]))
        vocab = sorted({t for kids in children for t in kids})
        column = {t: i for i, t in enumerate(vocab)}
        allowed = torch.zeros(len(children), len(vocab), dtype=torch.bool)
        for node, kids in enumerate(children):
            for token in kids:
                allowed[node, column[token]] = True
        only = [next(iter(b)) if len(b) == 1 else -1 for b in below]
        return cls(list(labels), children, only, torch.tensor(vocab), allowed, column)

    def forced_chain(self, node: int) -> tuple[list[int], int]:
        """Tokens forced after `node` (single-child steps) and the branching node they reach."""
        chain = []
        while len(self.children[node]) == 1 and self.only_label[node] < 0:
            (token, node), = self.children[node].items()
            chain.append(token)
        return chain, node


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    top: list[tuple[str, float]]  # (label, probability), best first


def prompt_ids(frame) -> list[list[int]]:
    """The prompt part (BOS + template) of each prepared row: what decoding continues from."""
    return [list(ids[:n]) for ids, n in zip(frame["input_ids"], frame["prompt_length"])]


def accuracy_on(model, frame, label_info: dict, batch_size: int, pad_token_id: int) -> float:
    """Greedy constrained-decoding accuracy on a prepared split (the validation split, to select
    runs on accuracy without touching the test set)."""
    trie = LabelTrie.build(label_info["labels"], label_info["token_ids"])
    predictions = constrained_decode(model, prompt_ids(frame), trie, batch_size, top_k=1,
                                     pad_token_id=pad_token_id, precision="fp32")
    return float(np.mean([p.label == actual for p, actual in zip(predictions, frame["label"])]))


def left_pad(prompts: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left padding puts every prompt's last token in the last column, where decoding continues."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return ids, mask


def _restricted_logits(model, hidden: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    logits = hidden @ head.T
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.float()


@torch.no_grad()
def _decode_batch(model, prompts: Sequence[Sequence[int]], trie: LabelTrie, top_k: int, pad_token_id: int,
                  precision: str) -> list[Prediction]:
    body = model.get_decoder()
    head = model.lm_head.weight[trie.vocab]  # (|label vocab|, hidden): the only rows we need
    ids, mask = left_pad(prompts, pad_token_id)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with autocast_for(precision):
        out = body(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
    cache = out.past_key_values
    hidden = out.last_hidden_state[:, -1]
    # one row per live beam: (message, trie node, log-probability so far)
    rows: list[tuple[int, int, float]] = [(m, 0, 0.0) for m in range(len(prompts))]
    last_position = positions[:, -1]
    finished: list[list[tuple[float, int]]] = [[] for _ in prompts]
    while rows:
        with autocast_for(precision):
            logits = _restricted_logits(model, hidden, head)
        node_index = torch.tensor([node for _, node, _ in rows])
        logits = logits.masked_fill(~trie.allowed[node_index], float("-inf"))
        logp = torch.log_softmax(logits, dim=-1).numpy()
        candidates: list[list[tuple[float, int, int, int]]] = [[] for _ in prompts]  # (score, row, token, child)
        for r, (m, node, score) in enumerate(rows):
            for token, child in trie.children[node].items():
                candidates[m].append((score + float(logp[r, trie.column[token]]), r, token, child))
        next_rows, sources, tokens = [], [], []
        for m, options in enumerate(candidates):
            pool = [(s, None, None, None, label) for s, label in finished[m]] + \
                   [(s, r, t, c, None) for s, r, t, c in options]
            pool.sort(key=lambda item: -item[0])
            kept_finished = []
            for score, r, token, child, label in pool[:top_k]:
                if label is not None:
                    kept_finished.append((score, label))
                elif trie.only_label[child] >= 0:  # the rest of the path is forced: done
                    kept_finished.append((score, trie.only_label[child]))
                else:
                    chain, node = trie.forced_chain(child)
                    next_rows.append((m, node, score))  # forced tokens have probability 1
                    sources.append(r)
                    tokens.append([token] + chain)
            finished[m] = kept_finished
        if not next_rows:
            break
        source = torch.tensor(sources)
        cache.reorder_cache(source)  # gather the beams' KV rows (also drops finished ones)
        # Each beam feeds its chosen token plus the forced tokens up to the next branching node
        # in one forward pass; shorter chains are right-padded and masked out, for this step
        # and (through the mask kept in `mask`) for every later one.
        width = max(len(t) for t in tokens)
        step_ids = torch.full((len(tokens), width), pad_token_id, dtype=torch.long)
        step_mask = torch.zeros((len(tokens), width), dtype=mask.dtype)
        for row, chain in enumerate(tokens):
            step_ids[row, :len(chain)] = torch.tensor(chain)
            step_mask[row, :len(chain)] = 1
        step_positions = last_position[source].unsqueeze(1) + step_mask.cumsum(-1)
        mask = torch.cat([mask[source], step_mask], dim=1)
        lengths = step_mask.sum(-1)
        last_position = step_positions[torch.arange(len(tokens)), lengths - 1]
        with autocast_for(precision):
            out = body(input_ids=step_ids, attention_mask=mask, position_ids=step_positions,
                       past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        hidden = out.last_hidden_state[torch.arange(len(tokens)), lengths - 1]
        rows = next_rows
    predictions = []
    for beams in finished:
        beams = sorted(beams, key=lambda item: -item[0])[:top_k]
        top = [(trie.labels[label], math.exp(score)) for score, label in beams]
        predictions.append(Prediction(label=top[0][0], confidence=top[0][1], top=top))
    return predictions


def constrained_decode(model, prompts: Sequence[Sequence[int]], trie: LabelTrie, batch_size: int = 32,
                       top_k: int = 3, pad_token_id: int = 0, precision: str = "fp32",
                       progress=None) -> list[Prediction]:
    """Predict a valid intent for every prompt (token ids with BOS), in input order.

    Prompts are processed in length order so a batch carries little padding."""
    model.eval()
    order = np.argsort([len(p) for p in prompts], kind="stable")
    results: list[Prediction | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        for index, prediction in zip(chunk, _decode_batch(model, [prompts[i] for i in chunk], trie, top_k,
                                                          pad_token_id, precision)):
            results[index] = prediction
        if progress is not None:
            progress(len(chunk))
    return results  # type: ignore[return-value]


@torch.no_grad()
def free_decode(model, tokenizer, prompts: Sequence[Sequence[int]], max_new_tokens: int, batch_size: int = 32,
                precision: str = "fp32", progress=None) -> list[str]:
    """Plain greedy generation with `generate` (full vocabulary); returns the raw texts."""
    model.eval()
    order = np.argsort([len(p) for p in prompts], kind="stable")
    texts: list[str | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        ids, mask = left_pad([prompts[i] for i in chunk], tokenizer.pad_token_id)
        with autocast_for(precision):
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
        for index, row in zip(chunk, out[:, ids.shape[1]:]):
            texts[index] = tokenizer.decode(row, skip_special_tokens=True).strip()
        if progress is not None:
            progress(len(chunk))
    return texts  # type: ignore[return-value]
