#!/usr/bin/env python3
"""PyTorch side of `kdseg bench ... --compare-pytorch`: the same model, shapes, loss and
optimizer step as kdseg computes, timed the same way (median of several runs after a
warm-up), on the CPU with a fixed number of threads. Prints one line of flat JSON last.

The model is the paper's ResUNet exactly as shared/reference/README.md describes it
(state-dict names as the paper's code), the loss (soft Dice with p^2 + BCE with background
weight 0.01) / 2, the optimizer Adam with AMSGrad and L2 weight decay (kdseg's defaults:
lr 1e-4, weight decay 1e-6).

usage:
  pytorch_bench.py [--threads 2] train --widths 16,32,64,128 --enc 1,2,2,4 --dec 1,1,1
                   --patch 64 --batch 1 --reps 3
  pytorch_bench.py infer ... --volume 160 192 160 --tta 4 --reps 1 [--tile 64 64 64]
  pytorch_bench.py convs --edge 64 --reps 3 --shapes "ci,co,k,s,p,level;..."

maxrss_mib is this process's peak resident memory (resource.getrusage), read at the end:
run one measurement per process so it belongs to that measurement (the library itself
accounts for about 300 MiB of it; `base_rss_mib` is the figure right after start-up).
"""
import argparse
import json
import math
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class ConvWrap(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv1(x)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, down, groups):
        super().__init__()
        self.downsample = nn.Sequential(nn.Conv3d(cin, cout, 2, stride=2, bias=False)) if down else None
        self.conv1 = ConvWrap(cout, cout)
        self.conv2 = ConvWrap(cout, cout)
        self.norm1 = nn.GroupNorm(groups, cout)
        self.norm2 = nn.GroupNorm(groups, cout)

    def forward(self, x):
        if self.downsample is not None:
            x = self.downsample(x)
        o = F.leaky_relu(self.norm1(self.conv1(x)), 0.01)
        o = F.leaky_relu(self.norm2(self.conv2(o)), 0.01)
        return x + o


class ResUNet(nn.Module):
    def __init__(self, w, enc, dec, groups=8, cin=4, cout=3):
        super().__init__()
        L = len(w)
        self.conv_input = nn.Conv3d(cin, w[0], 3, padding=1, bias=False)
        self.norm_input = nn.GroupNorm(groups, w[0])
        self.conv_first = nn.Sequential(*[ResBlock(w[0], w[0], False, groups) for _ in range(enc[0])])
        self.encoder_convs = nn.ModuleList(
            nn.Sequential(*[ResBlock(w[i], w[i + 1], True, groups) if j == 0
                            else ResBlock(w[i + 1], w[i + 1], False, groups) for j in range(enc[i + 1])])
            for i in range(L - 1))
        self.upsampling = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="trilinear"),
                          nn.Conv3d(w[i + 1], w[i], 1, bias=False)) for i in range(L - 1))
        self.decoder_convs1x1 = nn.ModuleList(nn.Conv3d(2 * w[i], w[i], 1, bias=False) for i in range(L - 1))
        self.decoder_convs = nn.ModuleList(
            nn.Sequential(*[ResBlock(w[i], w[i], False, groups) for _ in range(dec[i])]) for i in range(L - 1))
        self.conv_output = nn.Conv3d(w[0], cout, 3, padding=1, bias=True)

    def forward(self, x):
        c = self.norm_input(self.conv_input(x))
        c = self.conv_first(c)
        skips = []
        for enc in self.encoder_convs:
            skips.append(c)
            c = enc(c)
        for i in reversed(range(len(skips))):
            c = F.leaky_relu(self.upsampling[i](c), 0.01)
            c = torch.cat([skips[i], c], dim=1)
            c = self.decoder_convs[i](self.decoder_convs1x1[i](c))
        return torch.sigmoid(self.conv_output(c))


def paper_loss(p, g):
    dims = (0, 2, 3, 4)
    dice = 2 * ((p * g).sum(dims) + 1e-6) / ((p * p).sum(dims) + g.sum(dims) + 2e-6)
    bce = -(g * torch.log(p + 1e-6) + 0.01 * (1 - g) * torch.log(1 + 1e-6 - p)).mean()
    return ((1 - dice.mean()) + bce) / 2


def ints(s):
    return [int(v) for v in s.split(",")]


DEV = torch.device("cpu")


def sync():
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, reps):
    """Median wall ms and process CPU ms of reps calls after one warm-up call (on CUDA
    the device is synchronised before each clock read, so the GPU's work is counted)."""
    fn()
    sync()
    wall, cpu = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        sync()
        wall.append(1e3 * (time.perf_counter() - t0))
        cpu.append(1e3 * (time.process_time() - c0))
    return statistics.median(wall), statistics.median(cpu)


def make_model(a):
    m = ResUNet(ints(a.widths), ints(a.enc), ints(a.dec), a.groups).to(DEV)
    return m, sum(p.numel() for p in m.parameters())


def bench_train(a, out):
    model, npar = make_model(a)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-6, amsgrad=True)
    x = (torch.rand(a.batch, 4, a.patch, a.patch, a.patch) * 4 - 2).to(DEV)
    g = (torch.rand(a.batch, 3, a.patch, a.patch, a.patch) < 0.5).float().to(DEV)

    def step():
        opt.zero_grad()
        loss = paper_loss(model(x), g)
        loss.backward()
        opt.step()
        return loss

    ms, cms = timed(step, a.reps)
    out.update(step_ms=ms, step_cpu_ms=cms, params=npar, patch=a.patch, batch=a.batch)


def positions(size, tile, overlap=0.5):
    """Window starts along one axis, evenly spaced (nnU-Net; kdseg's placement)."""
    if tile >= size:
        return [0]
    n = math.ceil((size - tile) / (tile * (1 - overlap))) + 1
    return [round(i * (size - tile) / (n - 1)) for i in range(n)]


def gaussian(tile):
    """kdseg_gaussian_weights: sigma = tile / 8 per axis, max 1, floored at 1e-3."""
    axes = [torch.exp(-0.5 * ((torch.arange(t, dtype=torch.float64) - (t - 1) / 2) / (t / 8)) ** 2)
            for t in tile]
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return (w / w.max()).clamp(min=1e-3).float()


def bench_infer(a, out):
    """Whole volume, or sliding windows of --tile with Gaussian blending as kdseg does it:
    one window and flip per forward pass (MONAI's default sw_batch_size=1), the blend
    accumulated on the device."""
    model, npar = make_model(a)
    model.eval()
    x = (torch.rand(1, 4, *a.volume) * 4 - 2).to(DEV)
    flips = [[], [4], [3], [3, 4], [2], [2, 4], [2, 3], [2, 3, 4]][:max(1, a.tta)]

    def flipped(v):
        acc = None
        for f in flips:
            y = model(torch.flip(v, f) if f else v)
            y = torch.flip(y, f) if f else y
            acc = y if acc is None else acc + y
        return acc / len(flips)

    def run():
        with torch.no_grad():
            if not a.tile:
                return flipped(x)
            t = [min(a.tile[i], a.volume[i]) for i in range(3)]
            w = gaussian(t).to(DEV)
            acc = torch.zeros(1, 3, *a.volume, device=DEV)
            wsum = torch.zeros(*a.volume, device=DEV)
            for z in positions(a.volume[0], t[0]):
                for y in positions(a.volume[1], t[1]):
                    for xx in positions(a.volume[2], t[2]):
                        sl = (slice(z, z + t[0]), slice(y, y + t[1]), slice(xx, xx + t[2]))
                        acc[(slice(None), slice(None)) + sl] += w * flipped(x[(slice(None), slice(None)) + sl])
                        wsum[sl] += w
            return acc / wsum

    ms, cms = timed(run, a.reps)
    out.update(infer_ms=ms, infer_cpu_ms=cms, tta=len(flips), volume=a.volume,
               tile=a.tile or a.volume)


def bench_convs(a, out):
    """Forward and forward+backward (input and weight gradients) of each conv shape."""
    rows = []
    for spec in a.shapes.split(";"):
        ci, co, k, s, p, level = ints(spec)
        e = a.edge >> level
        conv = nn.Conv3d(ci, co, k, stride=s, padding=p, bias=False).to(DEV)
        x = torch.rand(1, ci, e, e, e, device=DEV, requires_grad=True)
        with torch.no_grad():
            y0 = conv(x)
        dy = torch.rand_like(y0)

        def fwd():
            with torch.no_grad():
                conv(x)

        def fwdbwd():
            x.grad = None
            conv.weight.grad = None
            conv(x).backward(dy)

        fms, _ = timed(fwd, a.reps)
        fbms, _ = timed(fwdbwd, a.reps)
        rows.append(dict(ci=ci, co=co, k=k, s=s, p=p, edge=e, fwd_ms=fms, fwdbwd_ms=fbms))
    out["rows"] = rows
    out["fwdbwd_ms_list"] = ",".join("%.3f" % r["fwdbwd_ms"] for r in rows)
    out["fwd_ms_list"] = ",".join("%.3f" % r["fwd_ms"] for r in rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu",
                    help="cpu, or cuda (cuDNN autotuned, strict fp32: TF32 off unless --tf32)")
    ap.add_argument("--tf32", action="store_true")
    sub = ap.add_subparsers(dest="mode", required=True)
    for name in ("train", "infer", "convs"):
        sp = sub.add_parser(name)
        sp.add_argument("--widths", default="16,32,64,128")
        sp.add_argument("--enc", default="1,2,2,4")
        sp.add_argument("--dec", default="1,1,1")
        sp.add_argument("--groups", type=int, default=8)
        sp.add_argument("--reps", type=int, default=3)
        sp.add_argument("--patch", type=int, default=64)
        sp.add_argument("--batch", type=int, default=1)
        sp.add_argument("--volume", type=int, nargs=3, default=[160, 192, 160])
        sp.add_argument("--tta", type=int, default=1)
        sp.add_argument("--tile", type=int, nargs=3, default=None)
        sp.add_argument("--edge", type=int, default=64)
        sp.add_argument("--shapes", default="16,16,3,1,1,0")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    global DEV
    DEV = torch.device(a.device)
    out = dict(torch=torch.__version__, threads=torch.get_num_threads(), base_rss_mib=rss_mib(),
               torch_device=a.device)
    if DEV.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = a.tf32
        torch.backends.cuda.matmul.allow_tf32 = a.tf32
        out.update(gpu=torch.cuda.get_device_name(0), cudnn=torch.backends.cudnn.version(),
                   tf32=a.tf32)
    {"train": bench_train, "infer": bench_infer, "convs": bench_convs}[a.mode](a, out)
    out["maxrss_mib"] = rss_mib()
    if DEV.type == "cuda":
        out["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    # the flat keys first: kdseg reads them with a simple scan
    rows = out.pop("rows", None)
    line = json.dumps(out)
    if rows is not None:
        line = line[:-1] + ', "rows": ' + json.dumps(rows) + "}"
    print(line)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
