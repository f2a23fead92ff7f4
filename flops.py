"""
Analytic FLOPs of BERT and of Transkimmer (and of the other methods, from their masks), per layer and in
total: the cost model behind the "speedup" of Guan et al. (ACL 2022), Sec. 5 and Table 3, as pinned down in
docs/method.md.

What is counted: matrix multiplications only, one multiply-add = 2 FLOPs, which is also what
torch.utils.flop_counter.FlopCounterMode counts (tests/test_flops.py checks this file against it).
Not counted, on either side of a speedup: biases, LayerNorm, softmax, GELU/tanh, the embedding
lookups, and the gather/scatter/argsort of real pruning. (These are O(n d) or O(n^2 h) per layer
against the O(n d^2) matmuls: a few percent for BERT-base.)

Per encoder layer on n tokens (d = hidden size, d_ff = FFN size, h heads of d/h), computing the
output of q of them (q = n, except in the last layer under the "cls" convention below, where q = 1):
    QKV       2 q d^2 + 4 n d^2   Linear(d, d) for the q queries, two more for the n keys and values
    scores    2 q n d             Q K^T: h heads x q x n x d/h multiply-adds
    context   2 q n d             P V, the same shape
    out-proj  2 q d^2             Linear(d, d)
    FFN       4 q d d_ff          Linear(d, d_ff), Linear(d_ff, d)
With q = n these are the familiar 6 n d^2, 2 n^2 d, 2 n^2 d, 2 n d^2, 4 n d d_ff.
Skim predictor (Eq. 2) on the n tokens entering its layer: 2 n d^2 + 2 n d 2 (its two Linears).
Head, once per example: pooler 2 d^2, classifier 2 d num_labels (the same for dense and skim).

Padding conventions (paper Table 3), both reported by FlopsCounter.summary():
    "none"      every example at its real length n (the honest number).
    "sequence"  every example padded to a fixed seq_len S (SST-2: 64). Dense: each layer runs on S
                tokens. Skim: padding counts as skimmed at layer 0, so the layers cost what they
                cost under "none"; but the layer-0 predictor is charged for all S positions, since
                it is what decides that padding is skimmed and it sees the padded input. (Later
                predictors see only the tokens kept so far, as under "none".)
Speedup = dense FLOPs / skim FLOPs, each summed over every example fed to the counter.

Last-layer conventions (not in the paper), the same on both sides of a speedup:
    "all"       the last layer computes every token's output (the paper's count; what forward() runs).
    "cls"       the last layer computes [CLS]'s output alone (q = 1), the only one a [CLS] classifier
                reads; its keys and values still come from all n tokens. What the inference paths
                BertForSequenceClassification.infer and Transkimmer.infer run. (q = 0 where the layer
                computes no token of the example: a methods/skipmiddle.py [CLS] whose gate is closed there.)

The speedup measured in seconds, to set beside the count, is at the end of this file (measure_speedup: the
"measured" figure train.py prints), with what a timing needs: the machine it ran on, the GPU waited for.
"""

import math
import platform
import statistics
import time

import torch

# -----------------------------------------------------------------------------
# one function per term; n may be an int or a tensor of per-example token counts

def qkv_flops(n, d, q):
    return 2 * q * d * d + 4 * n * d * d   # (q, d) @ (d, d) for the queries; (n, d) @ (d, d) twice


def scores_flops(n, d, q):
    return 2 * q * n * d                   # (h, q, d/h) @ (h, d/h, n)


def context_flops(n, d, q):
    return 2 * q * n * d                   # (h, q, n) @ (h, n, d/h)


def out_proj_flops(q, d):
    return 2 * q * d * d                   # (q, d) @ (d, d)


def ffn_flops(q, d, d_ff):
    return 2 * q * d * d_ff + 2 * q * d_ff * d   # (q, d) @ (d, d_ff), then (q, d_ff) @ (d_ff, d)


def layer_flops(n, config, queries=None):
    """One encoder layer (Eq. 1's Transformer layer) on n tokens, computing the output of `queries` of
    them (default all n; 1 for [CLS] alone)."""
    d, d_ff = config.hidden_size, config.intermediate_size
    q = n if queries is None else queries
    return (qkv_flops(n, d, q) + scores_flops(n, d, q) + context_flops(n, d, q) + out_proj_flops(q, d)
            + ffn_flops(q, d, d_ff))


LAST_LAYER = ("all", "cls")  # the last-layer conventions, see the module docstring


def queries_of(i, config, last_layer):
    """The `queries` argument of layer_flops for layer i: None (every token) or 1 (the last layer, "cls")."""
    if last_layer not in LAST_LAYER:
        raise ValueError(f"last_layer must be one of {LAST_LAYER}, got {last_layer!r}")
    return 1 if last_layer == "cls" and i == config.num_hidden_layers - 1 else None


def predictor_flops(n, config):
    """The skim predictor (Eq. 2) on n tokens: Linear(d, d) then Linear(d, 2)."""
    d = config.hidden_size
    return 2 * n * d * d + 2 * n * d * 2


def head_flops(config):
    """Per example: pooler Linear(d, d) on [CLS], classifier Linear(d, num_labels)."""
    d = config.hidden_size
    return 2 * d * d + 2 * d * config.num_labels


def dense_flops(n, config, last_layer="all"):
    """The whole dense model on one example of n tokens."""
    L = config.num_hidden_layers
    return sum(layer_flops(n, config, queries_of(i, config, last_layer)) for i in range(L)) + head_flops(config)

# -----------------------------------------------------------------------------
# from keep masks to FLOPs

def tokens_per_layer(masks, attention_mask):
    """For each layer i: (entering, kept), each (B,) integers, the real tokens that reach predictor i and
    the ones layer i processes, counted from the (B, N) 0/1 keep masks (a Transkimmer output's `.masks`)."""
    entering = attention_mask.long().sum(1)                                        # (B,) real lengths
    for keep in masks:
        kept = (keep.detach() * attention_mask).sum(1).round().long()              # (B,)
        yield entering, kept
        entering = kept


# -----------------------------------------------------------------------------
# accumulating over an eval set

class FlopsCounter:
    """Feed it batch by batch with `add(masks, attention_mask)`, where masks is the `.masks` of a
    Transkimmer output (L tensors (B, N), 1 where layer i processed the token) and attention_mask
    (B, N) is 1 for real tokens; then read `summary()`.
    seq_len: the fixed length S of the "sequence" convention (None: report "none" only).
    predictors: charge the skim predictors (False when the decisions were forced, not predicted).
    last_layer: "all" or "cls", the last-layer convention (module docstring), for both sides."""

    def __init__(self, config, seq_len=None, predictors=True, last_layer="all"):
        queries_of(0, config, last_layer)  # a bad convention fails here, not at the first add()
        self.config, self.seq_len, self.predictors, self.last_layer = config, seq_len, predictors, last_layer
        L = config.num_hidden_layers
        self.examples = 0
        self.tokens = 0                    # real tokens
        self.kept = [0] * L                # tokens processed by layer i
        self.dense = {"none": [0] * L, "sequence": [0] * L}   # per-layer dense FLOPs
        self.layer = [0] * L               # per-layer skim FLOPs (same under both conventions)
        self.predictor = {"none": [0] * L, "sequence": [0] * L}

    def add(self, masks, attention_mask):
        config, S = self.config, self.seq_len
        assert len(masks) == config.num_hidden_layers, "one mask per layer"
        real = attention_mask.long().sum(1)                                        # (B,) real lengths n
        if S is not None and int(real.max()) > S:
            raise ValueError(f"an example has {int(real.max())} tokens, more than seq_len={S}")
        for i, (entering, kept) in enumerate(tokens_per_layer(masks, attention_mask)):
            q = queries_of(i, config, self.last_layer)
            self.kept[i] += int(kept.sum())
            # "cls": [CLS]'s output, where the layer computes [CLS] (no query where it computes no token)
            self.layer[i] += int(layer_flops(kept, config, None if q is None else kept.clamp(max=q)).sum())
            self.dense["none"][i] += int(layer_flops(real, config, q).sum())
            if S is not None:
                self.dense["sequence"][i] += len(real) * layer_flops(S, config, q)
            if self.predictors:
                self.predictor["none"][i] += int(self.predictor_cost(entering, i).sum())
                # "sequence": the layer-0 predictor sees all S positions, later ones the kept tokens
                seq_entering = torch.full_like(real, S) if i == 0 and S is not None else entering
                self.predictor["sequence"][i] += int(self.predictor_cost(seq_entering, i).sum())
        self.examples += len(real)
        self.tokens += int(real.sum())

    def predictor_cost(self, entering, i):
        """The FLOPs of what decides before layer i, on `entering` (B,) tokens: Transkimmer's skim predictor
        (a method with other deciders counts them in a subclass: skipmiddle.GateFlopsCounter)."""
        return predictor_flops(entering, self.config)

    def totals(self, convention="none"):
        """(skim FLOPs, dense FLOPs), integers, summed over every example added, the head on both sides."""
        head = self.examples * head_flops(self.config)
        return sum(self.layer) + sum(self.predictor[convention]) + head, sum(self.dense[convention]) + head

    def summary(self):
        """A JSON-serialisable dict: examples, tokens (real), seq_len, predictors_counted, last_layer,
        head (pooler + classifier FLOPs, on both sides), kept_fraction (per layer: tokens processed / real
        tokens), and per convention ("none", and "sequence" if seq_len is set): dense_per_layer,
        skim_per_layer (the layers on kept tokens), predictor_per_layer, dense and skim totals, speedup =
        dense / skim."""
        head = self.examples * head_flops(self.config)
        out = {"examples": self.examples, "tokens": self.tokens, "seq_len": self.seq_len,
               "predictors_counted": self.predictors, "last_layer": self.last_layer, "head": head,
               "kept_fraction": [k / max(self.tokens, 1) for k in self.kept]}
        for convention in (["none", "sequence"] if self.seq_len is not None else ["none"]):
            skim, dense = self.totals(convention)
            out[convention] = {
                "dense_per_layer": list(self.dense[convention]),
                "skim_per_layer": list(self.layer),          # encoder layers on kept tokens
                "predictor_per_layer": list(self.predictor[convention]),
                "dense": dense, "skim": skim, "speedup": dense / skim if skim else math.nan,
            }
        return out


def padded_like_pruning(masks, attention_mask):
    """The shapes `Transkimmer(..., prune=True)` really computes on a batch: dense at the batch's padded
    length N, and layer i (and predictor i + 1) on every example re-padded to the batch's largest kept
    count. Returns (masks, attention_mask) to feed FlopsCounter for the executed FLOPs. (The packed
    inference paths, `infer`, compute no padding: what they execute is the plain count.)"""
    B, N = attention_mask.shape
    positions = torch.arange(N, device=attention_mask.device)[None, :]               # (1, N)
    padded = [(positions < int(keep.sum(1).max())).float().expand(B, N) for keep in masks]
    return padded, torch.ones_like(attention_mask)


# -----------------------------------------------------------------------------
# the speedup measured: seconds, to set beside the count (not in the paper, which reports FLOPs)
#
# measure_speedup is the one function that measures a method's speedup: the figure train.py prints after its
# evaluation ("measured"), bench.py reports for a saved model and results/compare.py tabulates. It times the
# method's inference path, `method.infer` (the skipped work removed, the last layer computing [CLS]'s output
# alone: the "cls" convention above), against its dense model run the same way, `method.bert.infer`, on the
# same batches (tokenized and padded beforehand), under torch.inference_mode. One untimed warm-up pass of each,
# then `repeats` timed passes; within a pass the two take turns batch by batch, so that a change in machine
# load hits both alike. The median pass of each is reported, with what was measured (path, device, batch
# size, passes, threads), since a CPU's figure depends on all of them.

def cpu_name():
    """The processor's model name (/proc/cpuinfo), or what platform knows of it."""
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo's names of the x86 instructions that multiply bfloat16


def cpu_flags():
    """The processor's feature flags (/proc/cpuinfo), an empty set where there is no such file (macOS, Windows)."""
    try:
        return set(next(line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")))
    except (OSError, StopIteration):
        return set()


def native_bf16(device="cpu", flags=None):
    """Does the machine multiply bfloat16 matrices in hardware (train.py --precision auto takes bf16 there)?
    A CUDA GPU that supports bfloat16 (Ampere and later); a CPU with AMX or AVX512-BF16 (`flags`: its
    feature flags, default cpu_flags()). Another CPU has no bfloat16 arithmetic of its own (oneDNN converts
    to float32 on the fly), so nothing is to be gained there."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(set(BF16_CPU_FLAGS) & (cpu_flags() if flags is None else set(flags)))


def machine_line(device="cpu"):
    """What a run trains or is timed on, in one line: the processor (or GPU), the threads, torch. Two machines'
    arithmetic differs in rounding, so a seed trained on each is not the same run."""
    where = torch.cuda.get_device_name() if torch.device(device).type == "cuda" else cpu_name()
    return describe_machine(where, torch.get_num_threads(), torch.__version__)


def describe_machine(where, threads, torch_version):
    """machine_line's words, also for a machine recorded earlier (bench.py's JSON)."""
    return f"{where}, {threads} threads, torch {torch_version}"


def synchronize(device):
    """Wait for the GPU's queued work (on cuda; nothing to wait for on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def interleaved_pass(passes, device="cpu"):
    """{name: (run, batches)} -> {name: seconds}: one pass of each, taking turns batch by batch."""
    seconds = dict.fromkeys(passes, 0.0)
    for i in range(len(next(iter(passes.values()))[1])):
        for name, (run, batches) in passes.items():
            synchronize(device)
            start = time.perf_counter()
            run(batches[i])
            synchronize(device)
            seconds[name] += time.perf_counter() - start
    return seconds


@torch.inference_mode()
def measure_speedup(method, batches, repeats=3, device="cpu", dense=None):
    """Dense over pruned seconds of `method` (behind the method interface, methods/__init__.py) on `batches` (dicts of input_ids, attention_mask,
    token_type_ids on `device`): see the module docstring. dense: the model to measure against (default
    method.bert; results/compare.py times smaller models against the whole one). -> a dict for metrics.json."""
    if repeats < 1:
        raise ValueError(f"repeats is a number of timed passes, at least 1, got {repeats}")
    method.eval()
    dense = method.bert if dense is None else dense
    passes = {"dense": (lambda b: dense.infer(b["input_ids"], b["attention_mask"], b["token_type_ids"]), batches),
              "pruned": (lambda b: method.infer(b["input_ids"], b["attention_mask"], b["token_type_ids"]), batches)}
    interleaved_pass(passes, device)                                               # warm-up
    times = [interleaved_pass(passes, device) for _ in range(repeats)]
    dense, pruned = (statistics.median(t[name] for t in times) for name in ("dense", "pruned"))
    return {"dense_seconds": round(dense, 6), "pruned_seconds": round(pruned, 6),
            "measured_speedup": round(dense / pruned, 3), "machine": machine_line(device),
            "timing": f"infer path against the dense infer, {device}, batch {len(batches[0]['input_ids'])}, "
                      f"median of {repeats} passes over {sum(len(b['input_ids']) for b in batches)} examples, "
                      f"{torch.get_num_threads()} threads"}
