"""The README's results table, generated from the committed metrics files so that the two
cannot disagree (a test compares them)."""

from __future__ import annotations

import json
from pathlib import Path

START, END = "<!-- results:start -->", "<!-- results:end -->"

# Published on the same 3,080-message test set with the full training data.
ANCHORS = (("BERT fine-tuned (Casanueva et al. 2020)", 0.9366), ("USE+ConveRT (Casanueva et al. 2020)", 0.9336))


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.2f} %"


def results_table(metrics_dir: Path, extra_rows: list[tuple[str, dict]] | None = None) -> str:
    evaluation = json.loads((metrics_dir / "eval.json").read_text(encoding="utf-8"))
    baseline = json.loads((metrics_dir / "baseline.json").read_text(encoding="utf-8"))
    train = json.loads((metrics_dir / "train.json").read_text(encoding="utf-8"))
    watched = evaluation["card_arrival_vs_card_delivery_estimate"]
    alone = evaluation.get("model_accuracy") or {}  # an ensemble's models, each scored on its own
    alone = dict(sorted(alone.items(), key=lambda item: item[0] != "train"))  # the train stage's first
    system = (f"ensemble of {len(alone)} Gemma 3 270M full fine-tunes" if len(alone) > 1
              else "Gemma 3 270M full FT")
    rows = [
        "| run | test accuracy | macro-F1 | weighted-F1 | invalid | n |",
        "|---|---|---|---|---|---|",
        f"| **default params (this commit)**, {system} | **{_pct(evaluation['accuracy'])}** | "
        f"**{_pct(evaluation['macro_f1'])}** | {_pct(evaluation['weighted_f1'])} | "
        f"{_pct(evaluation['invalid_rate'])} | {evaluation['n']} |",
    ]
    for name, accuracy in alone.items():
        rows.append(f"| └ its `{name}` model alone | {_pct(accuracy)} | – | – | – | {evaluation['n']} |")
    for title, metrics in extra_rows or []:
        rows.append(f"| {title} | {_pct(metrics.get('accuracy'))} | {_pct(metrics.get('macro_f1'))} | "
                    f"{_pct(metrics.get('weighted_f1'))} | {_pct(metrics.get('invalid_rate'))} | "
                    f"{metrics.get('n', '–')} |")
    rows.append(f"| TF-IDF + logistic regression (`baseline` stage) | {_pct(baseline['accuracy'])} | "
                f"{_pct(baseline['macro_f1'])} | {_pct(baseline['weighted_f1'])} | – | {baseline['n']} |")
    for title, accuracy in ANCHORS:
        rows.append(f"| {title}, published | {_pct(accuracy)} | – | – | – | 3080 |")
    validation = (f"final validation loss {train['val_loss']}" if train["val_loss"] is not None
                  else "no validation split (`data.val_fraction: 0`)")
    members = ""
    for name in alone:
        member_file = metrics_dir / "members" / name / "train.json"
        if name != "train" and member_file.is_file():
            member = json.loads(member_file.read_text(encoding="utf-8"))
            members += (f" Member `{name}`: {member['steps']} steps, {member['seconds_per_step']} s/step, "
                        f"{member['wall_seconds'] / 60:.1f} min wall (`metrics/members/{name}/train.json`).")
    rows += [
        "",
        f"Training: {train['steps']} steps, {validation}, "
        f"{train['seconds_per_step']} s/step, {train['wall_seconds'] / 60:.1f} min wall "
        f"(`metrics/train.json`).{members} Evaluation: {evaluation['decoding']} decoding at "
        f"{evaluation['examples_per_second']} messages/s ({evaluation['decode_seconds']} s for "
        f"{evaluation['n']} messages), ECE {evaluation['ece']} (`metrics/eval.json`).",
        "",
        f"`card_arrival` ↔ `card_delivery_estimate`: "
        f"{watched['card_arrival->card_delivery_estimate']} of {watched['card_arrival_support']} `card_arrival` "
        f"messages predicted as `card_delivery_estimate`, "
        f"{watched['card_delivery_estimate->card_arrival']} of {watched['card_delivery_estimate_support']} the "
        f"other way.",
    ]
    return "\n".join(rows)


def replace_block(readme: str, block: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{block}\n{END}{tail}"
