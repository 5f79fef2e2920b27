#!/usr/bin/env python3
"""Timing reference for Gill.ML's JointTrainingStep benchmark: one GILL joint training step in plain PyTorch.

This is NOT a test and NOT a port of the library: it is the same computation written directly in PyTorch (no
transformers package), so that `dotnet run -c Release --project benchmarks/Gill.ML.Benchmarks -- JointTrainingStep`
can compare the time per step of Gill.ML (TorchSharp) against PyTorch on the same machine, in the same run.

The step mirrors Gill.ML's GillTrainingStep with example concatenation off (spec §2-§3):
  * frozen OPT (pre-LN, learned positions with offset 2, ReLU FFN, final LayerNorm, tied embeddings), random weights;
  * captioning pass over [k visual tokens][BOS caption [IMG0..r-1] pad...] with cross-entropy (l_c);
  * the text-only pass over [BOS caption [IMG0..r-1] pad...] (l_p, counted twice with weight 0.5 each). Without
    concatenation the retrieval and generation passes see identical inputs, and Gill.ML runs that pass once; this
    script does the same, and --three-passes runs it twice as the original training code does (3 LM passes);
  * InfoNCE between normalize(W_t2i h[IMG0]) and exp(logit_scale) normalize(W_i2t feature) (directions averaged);
  * GILLMapper (Linear -> nn.Transformer pre-LN encoder/decoder over L learned queries -> Linear) on h[IMG] + E_img,
    per-token L2 distance to the targets;
  * logits h [W_frozen ; E_img]^T; backward; global-norm clipping 1.0; AdamW (0.9, 0.95, eps 1e-8, wd 0.01) over the
    trainable tensors only; E_img rows re-normalised to the mean frozen embedding norm.

Configurations (must match JointTrainingStepBenchmark.cs):
  tiny: the opt-tiny fixture's architecture (d=32, 2 layers, 4 heads, ffn 64, vocab 96); k=2, r=4, Dv=20, p=8,
        mapper m=16 (2 heads, 1+1 layers), L=6, out=12, batch 4, T=12 (gill-step-tiny's sizes);
  mid:  OPT d=512, 6 layers, 8 heads, ffn 2048, vocab 8192; k=4, r=8, Dv=1024, p=256, GILLMapper m=256 (4 heads,
        4+4 layers, ffn 1024), L=77, out=768, batch 16, T=32.

Prints one JSON object: per-step seconds, matmul GFLOP/s (1024^3 fp32) measured in the same process, peak RSS.
Requires only `torch` (Debian: apt-get install python3-torch libopenblas0-pthread; see design/BENCHMARKS.md).
"""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    "tiny": dict(vocab=96, d=32, layers=2, heads=4, ffn=64, max_pos=32, k=2, r=4, dv=20, p=8,
                 m=16, mheads=2, menc=1, mdec=1, mffn=64, L=6, out=12, batch=4, T=12),
    "mid": dict(vocab=8192, d=512, layers=6, heads=8, ffn=2048, max_pos=64, k=4, r=8, dv=1024, p=256,
                m=256, mheads=4, menc=4, mdec=4, mffn=1024, L=77, out=768, batch=16, T=32),
}
PAD, BOS = 1, 2


class OptLayer(nn.Module):
    def __init__(self, d, heads, ffn):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, x, mask):
        b, t, d = x.shape
        hd = d // self.heads
        h = self.self_attn_layer_norm(x)
        q = (self.q_proj(h) * hd ** -0.5).view(b, t, self.heads, hd).transpose(1, 2)
        k = self.k_proj(h).view(b, t, self.heads, hd).transpose(1, 2)
        v = self.v_proj(h).view(b, t, self.heads, hd).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-1, -2) + mask, dim=-1) @ v
        x = x + self.out_proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.relu(self.fc1(self.final_layer_norm(x))))


class Opt(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab"], c["d"])
        self.embed_positions = nn.Embedding(c["max_pos"] + 2, c["d"])
        self.layers = nn.ModuleList(OptLayer(c["d"], c["heads"], c["ffn"]) for _ in range(c["layers"]))
        self.final_layer_norm = nn.LayerNorm(c["d"])
        for p in self.parameters():
            nn.init.normal_(p, std=0.02) if p.dim() > 1 else nn.init.zeros_(p)
        for mod in self.modules():
            if isinstance(mod, nn.LayerNorm):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)

    def forward(self, embeds):
        t = embeds.shape[1]
        x = embeds + self.embed_positions(torch.arange(t) + 2)
        mask = torch.full((t, t), float("-inf")).triu(1)
        for layer in self.layers:
            x = layer(x, mask)
        return self.final_layer_norm(x)


class Heads(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d"]
        self.visual_embeddings = nn.Linear(c["dv"], c["k"] * d)
        self.img_token_embeddings = nn.Parameter(torch.randn(c["r"], d) * 0.02)
        self.ret_text = nn.Linear(d, c["p"])
        self.visual_fc = nn.Linear(c["dv"], c["p"])
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.fc = nn.Linear(d, c["m"])
        self.tfm = nn.Transformer(d_model=c["m"], nhead=c["mheads"], num_encoder_layers=c["menc"],
                                  num_decoder_layers=c["mdec"], dim_feedforward=c["mffn"], dropout=0.0,
                                  batch_first=True, norm_first=True)
        self.model = nn.Linear(c["m"], c["out"])
        self.query_embs = nn.Parameter(torch.randn(1, c["L"], c["m"]))


def build(c, seed):
    torch.manual_seed(seed)
    lm, heads = Opt(c), Heads(c)
    for p in lm.parameters():
        p.requires_grad_(False)
    lm.eval()
    b, t, r, v = c["batch"], c["T"], c["r"], c["vocab"]
    img_ids = torch.arange(v, v + r)
    ids = torch.full((b, t), PAD, dtype=torch.long)
    cap_len = torch.zeros(b, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    for i in range(b):
        n = (t - r - 1) - (i % 4)  # caption tokens; rows differ in padding
        ids[i, 0] = BOS
        ids[i, 1:1 + n] = torch.randint(3, v, (n,), generator=g)
        ids[i, 1 + n:1 + n + r] = img_ids
        cap_len[i] = 1 + n + r
    batch = dict(ids=ids, cap_len=cap_len, feats=torch.randn(b, c["dv"], generator=g),
                 targets=torch.randn(b, c["L"], c["out"], generator=g), img_ids=img_ids)
    return lm, heads, batch


def step(c, lm, heads, batch, opt, params, mean_norm, three_passes):
    ids, cap_len, feats, targets = batch["ids"], batch["cap_len"], batch["feats"], batch["targets"]
    b, t = ids.shape
    v, r, k = c["vocab"], c["r"], c["k"]
    is_img = ids >= v
    w = lm.embed_tokens.weight
    e_img = heads.img_token_embeddings
    tok = torch.where(is_img.unsqueeze(-1), e_img[(ids - v).clamp(min=0)], lm.embed_tokens(ids.clamp(max=v - 1)))

    def logits(h):
        return torch.cat([h @ w.t(), h @ e_img.t()], -1)

    def ce(lg, labels):
        return F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)

    # Captioning pass: labels -100 on the visual prefix and from the first pad or [IMG] on.
    first_masked = ((ids == PAD) | is_img).float().argmax(1)
    pos = torch.arange(t).unsqueeze(0)
    cap_labels = torch.cat([torch.full((b, k), -100), ids.masked_fill(pos >= first_masked.unsqueeze(1), -100)], 1)
    visual = heads.visual_embeddings(feats).view(b, k, -1)
    ce_cap = ce(logits(lm(torch.cat([visual, tok], 1))), cap_labels)

    # Text-only pass: caption tokens and [IMG0] are targets; [IMG1..] and pads are not.
    text_labels = ids.masked_fill((ids == PAD) | (is_img & (ids != v)), -100)

    def text_pass():
        h = lm(tok)
        gather = (cap_len.unsqueeze(1) - r + torch.arange(r)).unsqueeze(-1).expand(b, r, h.shape[-1])
        return ce(logits(h), text_labels), h.gather(1, gather)

    ce_ret, h_img = text_pass()
    ce_gen, h_gen = text_pass() if three_passes else (ce_ret, h_img)

    txt = F.normalize(heads.ret_text(h_img[:, 0]), dim=-1)
    img = F.normalize(heads.visual_fc(feats), dim=-1)
    per_image = heads.logit_scale.exp() * img @ txt.t()
    labels = torch.arange(b)
    nce = (F.cross_entropy(per_image.t(), labels) + F.cross_entropy(per_image, labels)) / 2

    x = heads.fc(h_gen + e_img.unsqueeze(0))
    out = heads.model(heads.tfm(x, heads.query_embs.expand(b, -1, -1)))
    gen = (out - targets).pow(2).sum(-1).sqrt().mean()

    total = ce_cap + 0.5 * ce_ret + 0.5 * ce_gen + nce + gen
    opt.zero_grad()
    total.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    with torch.no_grad():
        e_img.mul_(mean_norm / e_img.norm(dim=1, keepdim=True))
    return total.item()


def peak_rss_bytes():
    # VmHWM belongs to this process image; getrusage's ru_maxrss survives execve and would include the parent's peak.
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def matmul_gflops(runs=5):
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    ts = []
    for _ in range(runs):
        s = time.perf_counter()
        a @ b
        ts.append(time.perf_counter() - s)
    ts.sort()
    return 2 * 1024 ** 3 / ts[len(ts) // 2] / 1e9


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=CONFIGS, default="tiny")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--three-passes", action="store_true", help="run the text-only pass twice, as the original code")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    c = CONFIGS[args.config]
    lm, heads, batch = build(c, args.seed)
    params = list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    mean_norm = lm.embed_tokens.weight.norm(dim=1).mean().item()
    gflops_before = matmul_gflops()
    for _ in range(args.warmup):
        step(c, lm, heads, batch, opt, params, mean_norm, args.three_passes)
    times, losses = [], []
    for _ in range(args.steps):
        s = time.perf_counter()
        losses.append(step(c, lm, heads, batch, opt, params, mean_norm, args.three_passes))
        times.append(time.perf_counter() - s)
    print(json.dumps(dict(side="pytorch", torch=torch.__version__, config=args.config, threads=torch.get_num_threads(),
                          three_passes=args.three_passes, step_seconds=times, losses=losses,
                          matmul_gflops=max(gflops_before, matmul_gflops()),
                          peak_rss_bytes=peak_rss_bytes())))


if __name__ == "__main__":
    main()
