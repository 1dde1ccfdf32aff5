"""Reading and checking Banking77, and splitting it reproducibly.

Sources (`data.source`):
- a folder holding `train.csv` and `test.csv` (columns `text,category`) and optionally
  `categories.json` (the intent list);
- an http(s) base URL serving those same files, downloaded and checked against the
  SHA-256 of the published release;
- `hf:<repo>` (e.g. `hf:PolyAI/banking77`), read through `datasets` from the repo's parquet
  conversion (recent `datasets` refuses that repo's loading script).

Every problem is reported with the file and the 1-based data row (the CSV header is line 1,
so row N is on line N + 1).
"""

from __future__ import annotations

import hashlib
import io
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

SPLIT_FILES = ("train.csv", "test.csv")
LABELS_FILE = "categories.json"
# SHA-256 of the published files (PolyAI-LDN/task-specific-datasets @ 57ec275d), used to check
# a download from an http(s) source: a truncated or altered file is refused, not trained on.
KNOWN_SHA256 = {
    "train.csv": "b06e26ac675513959a63135f11b94ea7786ed02da65db93a5650d8838cbc664b",
    "test.csv": "d12d6e3bc4c3103966ae786dc435913c0c563dfa328f5a3646d0e62cfeeb474d",
    "categories.json": "53261da888122daf2d120d925458631d9619e15d82e56052e7a42e535ce32b63",
}


class DataError(ValueError):
    """The input data is missing or malformed; the message names the file and row."""


@dataclass(frozen=True)
class RawData:
    train: pd.DataFrame  # columns text, category
    test: pd.DataFrame
    labels: list[str]  # the closed intent set, in the source's order


def parse_csv(raw: bytes, name: str, labels: list[str] | None) -> pd.DataFrame:
    """Parse and check one split. `name` is used in every error message."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{name}: not valid UTF-8 at line {line} (row {line - 1}), byte offset {exc.start}") from None
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{name}: cannot be parsed as CSV ({exc})") from None
    missing = [c for c in ("text", "category") if c not in frame.columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {missing}; expected columns text,category, "
                        f"found {list(frame.columns)}")
    frame = frame[["text", "category"]]
    if frame.empty:
        raise DataError(f"{name}: has a header but no rows")
    blank = frame.index[frame["text"].str.strip() == ""]
    if len(blank):
        raise DataError(f"{name}: row {blank[0] + 1} has an empty message "
                        f"({len(blank)} empty or whitespace-only message(s) in all)")
    if labels is not None:
        known = set(labels)
        bad = frame.index[~frame["category"].isin(known)]
        if len(bad):
            row = bad[0]
            raise DataError(f"{name}: row {row + 1} has label {frame['category'][row]!r}, which is not one of "
                            f"the {len(labels)} intents ({len(bad)} such row(s) in all)")
    return frame.reset_index(drop=True)


def _read_labels(raw: bytes, name: str) -> list[str]:
    try:
        labels = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{name}: not a JSON list of intent names ({exc})") from None
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) and x.strip() for x in labels):
        raise DataError(f"{name}: expected a non-empty JSON list of intent names")
    if len(set(labels)) != len(labels):
        raise DataError(f"{name}: intent names are not unique")
    return labels


def _assemble(files: dict[str, bytes], origin: str) -> RawData:
    labels = _read_labels(files[LABELS_FILE], f"{origin}/{LABELS_FILE}") if LABELS_FILE in files else None
    train = parse_csv(files["train.csv"], f"{origin}/train.csv", labels)
    if labels is None:
        labels = sorted(train["category"].unique())
    test = parse_csv(files["test.csv"], f"{origin}/test.csv", labels)
    return RawData(train=train, test=test, labels=labels)


def read_folder(folder: str | Path) -> RawData:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"data.source: folder {str(folder)!r} does not exist")
    files = {}
    for name in (*SPLIT_FILES, LABELS_FILE):
        path = folder / name
        if path.is_file():
            files[name] = path.read_bytes()
        elif name != LABELS_FILE:
            raise DataError(f"{path}: file not found (data.source must hold {' and '.join(SPLIT_FILES)})")
    return _assemble(files, str(folder))


def download(url: str, expected_sha256: str | None, timeout: float = 60.0) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            payload = response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"{url}: download failed ({exc})") from None
    if expected_sha256 is not None:
        digest = hashlib.sha256(payload).hexdigest()
        if digest != expected_sha256:
            raise DataError(f"{url}: SHA-256 {digest} does not match the published file "
                            f"({expected_sha256}); {len(payload)} bytes received")
    return payload


def read_url(base_url: str) -> RawData:
    base = base_url.rstrip("/")
    files = {name: download(f"{base}/{name}", KNOWN_SHA256[name]) for name in (*SPLIT_FILES, LABELS_FILE)}
    return _assemble(files, base)


def read_hub(repo: str) -> RawData:
    """Read `repo` (e.g. PolyAI/banking77) from the hub's parquet conversion via `datasets`."""
    import datasets  # heavy import, only for this source

    try:
        splits = datasets.load_dataset(repo, revision="refs/convert/parquet")
    except Exception as exc:  # network, auth, missing repo: all surface as one clear error
        raise DataError(f"data.source: cannot load hf:{repo} from the hub ({type(exc).__name__}: {exc})") from None
    names = splits["train"].features["label"].names
    files = {}
    for split in ("train", "test"):
        frame = splits[split].to_pandas()
        frame = pd.DataFrame({"text": frame["text"], "category": [names[i] for i in frame["label"]]})
        files[f"{split}.csv"] = frame.to_csv(index=False).encode("utf-8")
    files[LABELS_FILE] = json.dumps(names).encode("utf-8")
    return _assemble(files, f"hf:{repo}")


def read_source(source: str) -> RawData:
    if source.startswith(("http://", "https://")):
        return read_url(source)
    if source.startswith("hf:"):
        return read_hub(source[3:])
    return read_folder(source)


def stratified_sample(frame: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """`n` rows of `frame`, stratified by category and seeded; all rows if n is None or too big.

    With fewer rows than intents a proportional draw is impossible; then rows are taken
    round-robin over intents (in a seeded order), so as many intents as possible appear.
    """
    if n is None or n >= len(frame):
        return frame.reset_index(drop=True)
    counts = frame["category"].value_counts()
    if n >= counts.size and (counts >= 2).all() and len(frame) - n >= counts.size:
        picked, _ = train_test_split(frame, train_size=n, stratify=frame["category"], random_state=seed)
        return picked.sort_index().reset_index(drop=True)
    shuffled = frame.sample(frac=1.0, random_state=seed)
    rank = shuffled.groupby("category").cumcount()
    order = shuffled.assign(_rank=rank.values).sort_values("_rank", kind="stable")
    return order.head(n).drop(columns="_rank").sort_index().reset_index(drop=True)


def split_validation(train: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified train/validation split; falls back to a plain seeded split when some intent
    has a single example (tiny subsamples) and stratification is impossible. A fraction of 0
    keeps every row for training and returns an empty validation frame."""
    if fraction == 0:
        return train.reset_index(drop=True), train.iloc[:0].reset_index(drop=True)
    counts = train["category"].value_counts()
    n_val = max(1, round(len(train) * fraction))
    stratify = train["category"] if (counts >= 2).all() and counts.size <= n_val <= len(train) - counts.size \
        else None
    fit, val = train_test_split(train, test_size=n_val, stratify=stratify, random_state=seed)
    if len(fit) == 0:
        raise DataError(f"data.val_fraction={fraction} leaves no training rows out of {len(train)}")
    return fit.sort_index().reset_index(drop=True), val.sort_index().reset_index(drop=True)


def count_overlap(train: pd.DataFrame, test: pd.DataFrame) -> int:
    """Number of test messages whose exact text also appears in train (reported, not removed:
    the published test set is the yardstick and stays whole)."""
    return int(test["text"].isin(set(train["text"])).sum())

