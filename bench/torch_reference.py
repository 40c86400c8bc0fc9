#!/usr/bin/env python3
"""The ganpo bench step in PyTorch eager, written as TRL's DPOTrainer and the reference GANPO
trainer run it: same shapes, same phases, same JSON keys as `ganpo bench`.

    python bench/torch_reference.py --hf-config SHAPE.json --seq 512 --pairs 8 --mode ganpo

`--hf-config` is the `hf_config` object of a `ganpo bench` report (`cargo xtask bench` writes it).
Needs torch and transformers (and peft for `--lora-r`).
"""

import argparse
import contextlib
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class Discriminator(nn.Module):
    """The reference trainer's transformer discriminator (see docs/ganpo.md)."""

    def __init__(self, d_model, hidden=512, layers=2, heads=8, ff=2048, dropout=0.1, max_pos=2048):
        super().__init__()
        self.proj = spectral_norm(nn.Linear(d_model, hidden))
        self.pos = nn.Parameter(torch.randn(max_pos, hidden) * 0.02)
        layer = nn.TransformerEncoderLayer(hidden, heads, ff, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head1 = spectral_norm(nn.Linear(hidden, hidden))
        self.head2 = spectral_norm(nn.Linear(hidden, 1))
        self.max_pos = max_pos

    def forward(self, h, mask):
        h, mask = h[:, : self.max_pos], mask[:, : self.max_pos]
        x = self.proj(h) + self.pos[: h.shape[1]]
        x = self.encoder(x, src_key_padding_mask=~mask)
        m = mask.unsqueeze(-1).to(x.dtype)
        x = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.head2(F.gelu(self.head1(x))).squeeze(-1)


def bce(logits, one):
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, 1.0 if one else 0.0))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hf-config", required=True)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--mode", default="ganpo", choices=["dpo", "ganpo", "simpo", "simpo-ganpo"])
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pooling", default="sequence", choices=["sequence", "completion"],
                   help="positions the discriminators attend to and pool: real tokens or the completion")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--lora-r", type=int, default=0,
                   help="LoRA rank (PEFT); the reference is then the policy with its adapters disabled")
    p.add_argument("--lora-alpha", type=float, default=8.0)
    p.add_argument("--lora-targets", default="q_proj,v_proj",
                   help="all-linear or comma-separated module names")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="transformers' gradient checkpointing (TRL's default), non-reentrant")
    a = p.parse_args()

    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(a.seed)
    dev = torch.device(a.device)
    cfg = json.load(open(a.hf_config))
    config = AutoConfig.for_model(**cfg)
    config._attn_implementation = "sdpa"
    policy = AutoModelForCausalLM.from_config(config).to(dev)
    if a.lora_r > 0:
        # TRL with a PEFT model and no ref_model: the reference pass runs the same model inside
        # `disable_adapter()`; no second copy.
        import peft
        targets = a.lora_targets if a.lora_targets == "all-linear" else a.lora_targets.split(",")
        policy = peft.get_peft_model(policy, peft.LoraConfig(
            r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=0.0, target_modules=targets,
            task_type="CAUSAL_LM"))
        reference = policy
        reference_mode = policy.disable_adapter
    else:
        reference = AutoModelForCausalLM.from_config(config).to(dev).eval()
        reference.load_state_dict(policy.state_dict())
        for q in reference.parameters():
            q.requires_grad_(False)
        reference_mode = contextlib.nullcontext
    if a.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if a.lora_r > 0:
            policy.enable_input_require_grads()
    trainable = [q for q in policy.parameters() if q.requires_grad]
    ganpo = a.mode.endswith("ganpo")
    simpo = a.mode.startswith("simpo")
    d_model = config.hidden_size if hasattr(config, "hidden_size") else config.n_embd
    discs = nn.ModuleList([Discriminator(d_model), Discriminator(d_model)]).to(dev) if ganpo else None
    opt = torch.optim.AdamW(trainable, lr=1e-6)
    d_opt = torch.optim.AdamW(discs.parameters(), lr=5e-7) if ganpo else None
    means = None
    vocab, n, half = config.vocab_size, a.pairs, a.seq // 2
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.dtype == "bf16")

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def batch():
        prompt = torch.randint(0, vocab, (n, half), device=dev)
        comp = torch.randint(0, vocab, (2 * n, a.seq - half), device=dev)
        ids = torch.cat([prompt.repeat(2, 1), comp], 1)
        completion = torch.zeros_like(ids, dtype=torch.bool)
        completion[:, half:] = True
        return ids, torch.ones_like(ids), completion

    def logps_of(logits, ids, completion):
        # TRL: logits at t score the token at t + 1, completion tokens only.
        labels, mask = ids[:, 1:], completion[:, 1:]
        lp = torch.gather(logits[:, :-1].float().log_softmax(-1), 2, labels.unsqueeze(-1)).squeeze(-1)
        return (lp * mask).sum(-1), mask.sum(-1)

    def step(times):
        nonlocal means
        ids, attention, completion = batch()
        sync(); t0 = time.perf_counter()
        with torch.no_grad(), autocast, reference_mode():
            r = reference(input_ids=ids, attention_mask=attention, output_hidden_states=True)
            ref_logps, _ = logps_of(r.logits, ids, completion)
            ref_h = r.hidden_states[-1].float()
        sync(); t1 = time.perf_counter()
        with autocast:
            out = policy(input_ids=ids, attention_mask=attention, output_hidden_states=True)
            logps, counts = logps_of(out.logits, ids, completion)
            h = out.hidden_states[-1].float()
        sync(); t2 = time.perf_counter()
        mask = completion if a.pooling == "completion" else attention.bool()
        if ganpo:
            pc, pr, rc, rr = h[:n].detach(), h[n:].detach(), ref_h[:n], ref_h[n:]
            mc, mr = mask[:n], mask[n:]
            dc, dr = discs
            s = [dc(rc, mc), dc(rr, mr), dc(pc, mc), dr(rc, mc), dr(rr, mr), dr(pr, mr)]
            batch_means = torch.stack([x.mean() for x in s]).detach()
            means = batch_means if means is None else 0.9 * means + 0.1 * batch_means
            c_rp, c_rn, c_pp, r_rp, r_rn, r_pn = s
            m = means
            loss_d = (bce(c_rp - m[2], 1) + bce(c_pp - m[0], 0) + bce(c_pp - m[1], 1) + bce(c_rn - m[2], 0)) / 4 \
                + (bce(r_rn - m[5], 1) + bce(r_pn - m[4], 0) + bce(r_pn - m[3], 1) + bce(r_rp - m[5], 0)) / 4
            d_opt.zero_grad(set_to_none=True)
            loss_d.backward()
            d_opt.step()
        sync(); t3 = time.perf_counter()
        pc_, pr_ = logps[:n], logps[n:]
        if simpo:
            z = 2.0 * (pc_ / counts[:n] - pr_ / counts[n:]) - 0.5
        else:
            z = 0.1 * ((pc_ - ref_logps[:n]) - (pr_ - ref_logps[n:]))
        loss = -F.logsigmoid(z).mean()
        if ganpo:
            discs.eval()
            with torch.no_grad():
                m_rc, m_rr = means[0], means[4]
            gen = (bce(discs[0](h[:n], mask[:n]) - m_rc, 1) + bce(discs[1](h[n:], mask[n:]) - m_rr, 1)) / 2
            discs.train()
            loss = loss + gen
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        sync(); t4 = time.perf_counter()
        opt.step()
        sync(); t5 = time.perf_counter()
        if times is not None:
            times.append([t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0])

    def vm_hwm():
        try:
            with open("/proc/self/status") as f:
                line = next(l for l in f if l.startswith("VmHWM:"))
            return int(line.split()[1]) * 1024
        except (OSError, StopIteration):
            return None

    # As `ganpo bench`: the steps' peak, with the peak of building the model reset first.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    for _ in range(a.warmup):
        step(None)
    times = []
    for _ in range(a.steps):
        step(times)
    ms = [t[-1] * 1e3 for t in times]
    phases = ["reference_forward", "policy_forward", "discriminator_step", "policy_backward", "optimizer"]
    med = statistics.median(ms)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    report = {
        "framework": "torch",
        "backend": f"torch {torch.__version__} {dev}",
        "config": {"seq": a.seq, "pairs": a.pairs, "mode": a.mode, "dtype": a.dtype,
                   "pooling": a.pooling, "steps": a.steps, "warmup": a.warmup, "seed": a.seed,
                   "lora_r": a.lora_r, "lora_alpha": a.lora_alpha, "lora_targets": a.lora_targets,
                   "gradient_checkpointing": a.gradient_checkpointing},
        "parameters": sum(q.numel() for q in policy.parameters()),
        "trainable_parameters": sum(q.numel() for q in trainable),
        "ms_per_step": {"median": med, "min": min(ms), "max": max(ms)},
        "tokens_per_second": 2 * n * a.seq / (med / 1e3),
        "breakdown_ms": [[ph, statistics.median(t[i] * 1e3 for t in times)] for i, ph in enumerate(phases)],
        "peak_rss_bytes": peak_rss,
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if dev.type == "cuda"
        else (vm_hwm() if reset else None),
        "peak_device_bytes": torch.cuda.max_memory_allocated() if dev.type == "cuda" else None,
    }
    json.dump(report, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
