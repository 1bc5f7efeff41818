"""Sentence embeddings: encode texts, pool token vectors, return one vector per text.

Texts are tokenized in one parallel call, sorted by length so that each batch holds texts of
similar length (little padding, and the encoder drops what remains), and returned in input order.
Mean pooling averages every token of the text, [CLS] and [SEP] included, as sentence-transformers
does; texts split into windows (overflow="window") average their windows' pooled vectors weighted
by window length (max pooling takes the maximum over windows).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import precision as precision_
from .data.alignment import combine_windows
from .data.batches import in_length_order
from .heads import Pooling, pool
from .model import Encoder, fingerprint
from .postprocess import PostProcess, load_postprocess
from .tokenizer import Overflow, Tokenizer

def vectors_key(model: Encoder, tokenizer: Tokenizer, precision: str, *extra) -> str:
    """A digest of what cached vectors depend on: the model (its config and every weight), the
    tokenizer, the precision they are computed in, and `extra` (JSON-serializable: the texts, the
    layers ...)."""
    dtype = str(precision_.resolve(precision, next(model.parameters()).device))
    return fingerprint(model, json.dumps([dataclasses.asdict(model.config), dtype, tokenizer.to_json(), *extra]))


@torch.no_grad()  # not inference_mode: under it, autocast re-casts every weight on every call
def embed(model: Encoder, tokenizer: Tokenizer, texts: Sequence[str], *, pooling: Pooling = "mean",
          layers: int | Sequence[int] = -1, normalize: bool = False, batch_size: int = 32,
          precision: str = "auto", max_length: int | None = None, overflow: Overflow = "error",
          stride: int = 64, postprocess: PostProcess | str | None = None, progress: bool = True) -> np.ndarray:
    """Embed texts with an encoder.

    Args:
        texts: the texts; an empty text embeds its [CLS] and [SEP] tokens.
        pooling: "mean" over tokens, the "cls" vector, or "max" over tokens.
        layers: hidden state to pool (-1 the last, 0 the embedding output), or several, averaged.
        normalize: scale each vector to unit length (cosine similarity becomes a dot product).
        precision: "auto" (bf16 where the CPU computes it natively), "fp32" or "bf16".
        max_length: window in tokens; default the model's maximum (512 for BERT).
        overflow: longer texts are an "error", cut ("truncate", counted), or split into
            overlapping "window"s whose vectors are combined.
        postprocess: standardization, all-but-the-top or whitening fitted on a corpus
            (`postprocess.fit_postprocess`, or the path of a saved one), applied before `normalize`.

    Returns:
        (len(texts), H) float32 array in the order of `texts`.
    """
    if isinstance(texts, str):
        raise TypeError("embed takes a list of texts; wrap a single text in a list")
    layer_list = [model.layer_index(i) for i in ([layers] if isinstance(layers, int) else layers)]
    max_length = max_length or model.config.max_length
    encoded = tokenizer.encode(list(texts), max_length=max_length, overflow=overflow, stride=stride)
    lengths = encoded.lengths
    vectors = np.empty((len(encoded), model.config.hidden_size), dtype=np.float32)
    with precision_.evaluating(model, precision) as device, tqdm(total=len(encoded), desc="embed", unit="seq",
                                                                 disable=not progress) as bar:
        for rows in in_length_order(lengths, batch_size):  # longest first: a memory error shows at once
            batch = {k: v.to(device) for k, v in encoded.tensors(rows, tokenizer.pad_id).items()}
            out = model(**batch, output_layers=layer_list)
            hidden = torch.stack([out.layers[i] for i in layer_list]).mean(0)
            vectors[rows] = pool(hidden.float(), batch["attention_mask"], pooling).cpu().numpy()
            bar.update(len(rows))
    vectors = combine_windows(vectors, encoded.origin, len(texts), lengths, how="max" if pooling == "max" else "mean")
    if postprocess is not None:
        vectors = (load_postprocess(postprocess) if isinstance(postprocess, (str, Path)) else postprocess)(vectors)
    if normalize:
        vectors = F.normalize(torch.from_numpy(vectors), dim=-1).numpy()
    return vectors
