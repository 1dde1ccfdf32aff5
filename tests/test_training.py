"""The fast training path optimises exactly the stock objective (fp32, tiny model)."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

from banking77_ft.params import TrainParams
from banking77_ft.prompting import IGNORE_INDEX, encode_example
from banking77_ft.training import (Examples, build_optimizer, collate, epoch_batches, forward_backward,
                                   label_token_loss, plan_steps, reference_loss)

TEMPLATE = "Banking customer message: {text}\nIntent:"


@pytest.fixture()
def batch(tokenizer):
    frame = pd.read_csv("data/raw/banking77/train.csv").iloc[::700].head(8)
    encoded = [encode_example(tokenizer, TEMPLATE, t, c, 128) for t, c in zip(frame.text, frame.category)]
    examples = Examples([np.array(e.input_ids) for e in encoded], [np.array(e.labels) for e in encoded])
    assert len(set(examples.lengths)) > 1, "the batch must contain padding to test it"
    return collate(examples, list(range(len(examples))), tokenizer.pad_token_id)


def test_label_only_loss_equals_reference_loss(tiny_model, batch):
    torch.manual_seed(0)
    with torch.no_grad():  # make the random model's logits non-trivial
        for p in tiny_model.parameters():
            p.mul_(3.0)
    ours = label_token_loss(tiny_model, batch)
    reference = reference_loss(tiny_model, batch)
    assert abs(float(ours) - float(reference)) < 1e-4
    assert float(reference) > 1.0


def test_one_optimizer_step_matches_reference_step(tiny_model, batch):
    params = TrainParams(precision="fp32", learning_rate=1e-3, weight_decay=0.01)
    twin = copy.deepcopy(tiny_model)
    twin.tie_weights()
    assert twin.lm_head.weight is twin.get_input_embeddings().weight

    ours_opt = build_optimizer(tiny_model, params)
    loss = forward_backward(tiny_model, batch, "fp32")
    ref_opt = build_optimizer(twin, params)
    ref_loss = reference_loss(twin, batch)
    ref_loss.backward()
    assert abs(float(loss) - float(ref_loss)) < 1e-4

    for (name, p), (_, q) in zip(tiny_model.named_parameters(), twin.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=f"gradient of {name}")
    ours_opt.step()
    ref_opt.step()
    for (name, p), (_, q) in zip(tiny_model.named_parameters(), twin.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=f"parameter {name} after one step")
    # the batch holds padding, so the padding_idx branch of the manual embedding gradient ran
    pad = tiny_model.get_input_embeddings().padding_idx
    assert pad is not None and bool((batch["input_ids"] == pad).any())


def _grads(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_softcapped_logits_match_reference(tiny_model, batch):
    with torch.no_grad():  # large logits, so that the cap bites
        for p in tiny_model.parameters():
            p.mul_(3.0)
    tiny_model.config.final_logit_softcapping = 2.0  # Gemma 2 style
    twin = copy.deepcopy(tiny_model)
    twin.tie_weights()
    loss = forward_backward(tiny_model, batch, "fp32")
    reference = reference_loss(twin, batch)
    reference.backward()
    assert abs(float(loss) - float(reference)) < 1e-4
    uncapped = copy.deepcopy(tiny_model)
    uncapped.config.final_logit_softcapping = None
    assert abs(float(label_token_loss(uncapped, batch)) - float(loss)) > 1e-3  # the cap changed something
    for name, p in twin.named_parameters():
        torch.testing.assert_close(dict(tiny_model.named_parameters())[name].grad, p.grad, rtol=1e-4, atol=1e-6,
                                   msg=f"gradient of {name}")


def test_gradients_accumulate_across_calls(tiny_model, batch):
    """Without zero_grad, a second call adds to the persistent gradient buffer (as autograd would)."""
    forward_backward(tiny_model, batch, "fp32")
    once = _grads(tiny_model)
    forward_backward(tiny_model, batch, "fp32")
    for name, p in tiny_model.named_parameters():
        torch.testing.assert_close(p.grad, 2 * once[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_head_sees_the_weights_after_an_optimizer_step(tiny_model, batch, precision):
    """The bf16 copy of the head weight is refreshed after the optimizer changes the master;
    a stale copy would make the second step's loss differ from a fresh model's."""
    optimizer = build_optimizer(tiny_model, TrainParams(learning_rate=1e-2))
    forward_backward(tiny_model, batch, precision)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    fresh = copy.deepcopy(tiny_model)  # no cached head: computes from the updated weights
    with torch.no_grad():
        assert float(label_token_loss(tiny_model, batch, precision=precision)) == \
            float(label_token_loss(fresh, batch, precision=precision))
    second = forward_backward(tiny_model, batch, precision)
    assert float(second) == float(label_token_loss(fresh, batch, precision=precision))


def test_backward_after_a_second_forward_is_refused(tiny_model, batch):
    first = label_token_loss(tiny_model, batch)
    label_token_loss(tiny_model, batch)  # reuses the head's scratch buffers
    with pytest.raises(RuntimeError, match="another forward pass ran before this backward"):
        first.backward()


def test_bf16_loss_is_close_to_fp32(tiny_model, batch):
    fp32 = float(forward_backward(tiny_model, batch, "fp32"))
    tiny_model.zero_grad(set_to_none=True)
    bf16 = float(forward_backward(tiny_model, batch, "bf16"))
    assert abs(fp32 - bf16) / fp32 < 0.02


def test_collate_pads_right_with_ignored_labels():
    examples = Examples([np.array([2, 5, 6]), np.array([2, 7])], [np.array([-100, 6, 1]), np.array([-100, 1])])
    batch = collate(examples, [0, 1], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[2, 5, 6], [2, 7, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 1], [-100, 1, IGNORE_INDEX]]


def test_epoch_batches_are_deterministic_and_cover_every_example_once():
    lengths = np.random.default_rng(0).integers(10, 60, size=203)
    first = epoch_batches(lengths, 16, seed=42, epoch=0, group_by_length=True)
    again = epoch_batches(lengths, 16, seed=42, epoch=0, group_by_length=True)
    other = epoch_batches(lengths, 16, seed=42, epoch=1, group_by_length=True)
    assert [b.tolist() for b in first] == [b.tolist() for b in again]
    assert [b.tolist() for b in first] != [b.tolist() for b in other]
    assert sorted(np.concatenate(first).tolist()) == list(range(203))
    # grouping cuts padding relative to a plain shuffle
    plain = epoch_batches(lengths, 16, seed=42, epoch=0, group_by_length=False)
    padded = lambda bs: sum(len(b) * lengths[b].max() for b in bs)  # noqa: E731
    assert padded(first) < padded(plain)


def test_plan_steps_honours_max_steps():
    assert plan_steps(100, TrainParams(batch_size=16, epochs=3)) == (7, 21)
    assert plan_steps(100, TrainParams(batch_size=16, epochs=3, max_steps=5)) == (7, 5)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tiny_model, tokenizer, tmp_path):
    from banking77_ft.training import TrainingError, train

    frame = pd.read_csv("data/raw/banking77/train.csv").head(40)
    encoded = [encode_example(tokenizer, TEMPLATE, t, c, 128) for t, c in zip(frame.text, frame.category)]
    examples = Examples([np.array(e.input_ids) for e in encoded], [np.array(e.labels) for e in encoded])
    calls = {"n": 0}

    def poison(module, inputs, output):  # the 4th training forward pass returns NaN
        calls["n"] += 1
        if calls["n"] == 4:
            output.last_hidden_state.fill_(float("nan"))
        return output

    tiny_model.get_decoder().register_forward_hook(poison)
    params = TrainParams(precision="fp32", batch_size=8, epochs=1, checkpoint_every_steps=2)
    with pytest.raises(TrainingError, match=r"non-finite loss \(nan\) at step 4; last good checkpoint: .*step-0000002\.pt"):
        train(tiny_model, examples, examples, params, tokenizer.pad_token_id, tmp_path / "ckpt", "fp")
    assert [p.name for p in (tmp_path / "ckpt").glob("step-*.pt")] == ["step-0000002.pt"]


def test_head_sees_in_place_edits_and_loaded_weights(tiny_model, batch):
    before = float(label_token_loss(tiny_model, batch, precision="bf16").detach())
    state = copy.deepcopy(tiny_model.state_dict())
    with torch.no_grad():
        tiny_model.get_output_embeddings().weight.mul_(2.0)
    doubled = float(label_token_loss(tiny_model, batch, precision="bf16").detach())
    assert doubled != before
    tiny_model.load_state_dict(state)
    assert float(label_token_loss(tiny_model, batch, precision="bf16").detach()) == before


def test_weight_averaging_saves_the_mean_of_the_snapshot_steps(tiny_model, tokenizer, tmp_path):
    from banking77_ft.training import train

    frame = pd.read_csv("data/raw/banking77/train.csv").head(40)
    encoded = [encode_example(tokenizer, TEMPLATE, t, c, 128) for t, c in zip(frame.text, frame.category)]
    examples = Examples([np.array(e.input_ids) for e in encoded], [np.array(e.labels) for e in encoded])
    # 5 steps an epoch, 10 in all; averaging after step 5, every 2 steps, and at the last step
    params = TrainParams(precision="fp32", batch_size=8, epochs=2, learning_rate=1e-3, checkpoint_every_steps=2,
                         keep_checkpoints=10, swa_start_fraction=0.5, swa_every_steps=2)
    result = train(tiny_model, examples, Examples([], []), params, tokenizer.pad_token_id, tmp_path / "ckpt", "fp")
    assert result.average.snapshot_steps == [6, 8, 10]

    def weights(step):
        return torch.load(tmp_path / "ckpt" / f"step-{step:07d}.pt", weights_only=False)["model"]

    last = {k: v.clone() for k, v in tiny_model.state_dict().items()}  # the model holds the last iterate
    snapshots = [weights(6), weights(8), last]
    result.average.copy_to(tiny_model)
    averaged = tiny_model.state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(averaged[name], last[name])
    for key in ("model.embed_tokens.weight", name, "model.norm.weight"):
        expected = sum(s[key] for s in snapshots) / 3
        torch.testing.assert_close(averaged[key], expected, rtol=1e-5, atol=1e-6, msg=key)
    # the checkpoint written at step 8 carries the two snapshots taken so far
    payload = torch.load(tmp_path / "ckpt" / "step-0000008.pt", weights_only=False)
    assert payload["average"]["snapshot_steps"] == [6, 8]
