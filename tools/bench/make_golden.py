#!/usr/bin/env python3
"""Write a KDGOLD01 golden file of the paper's ResUNet computed by PyTorch in float64:
input, target, parameters, output, loss, gradients and one AMSGrad Adam step, in the
format of shared/reference/README.md. Widths, block counts, batch and a non-cubic shape
are options, so kdseg's selftest can be checked beyond the shipped file.

usage: make_golden.py OUT.kdgold [--widths 8,16,24,32] [--enc 1,1,1,1] [--dec 1,1,1]
                      [--batch 2] [--shape 16,24,32] [--seed 0]
"""
import argparse
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvWrap(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x):
        return self.conv1(x)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, down):
        super().__init__()
        if down:
            self.downsample = nn.Sequential(nn.Conv3d(cin, cout, 2, stride=2, bias=False))
        else:
            self.downsample = None
        self.conv1 = ConvWrap(cout, cout)
        self.conv2 = ConvWrap(cout, cout)
        self.norm1 = nn.GroupNorm(8, cout)
        self.norm2 = nn.GroupNorm(8, cout)

    def forward(self, x):
        if self.downsample is not None:
            x = self.downsample(x)
        o = F.leaky_relu(self.norm1(self.conv1(x)), 0.01)
        o = F.leaky_relu(self.norm2(self.conv2(o)), 0.01)
        return x + o


class ResUNet(nn.Module):
    def __init__(self, w, enc, dec):
        super().__init__()
        L = len(w)
        self.conv_input = nn.Conv3d(4, w[0], 3, padding=1, bias=False)
        self.norm_input = nn.GroupNorm(8, w[0])
        self.conv_first = nn.Sequential(*[ResBlock(w[0], w[0], False) for _ in range(enc[0])])
        self.encoder_convs = nn.ModuleList(
            nn.Sequential(*[ResBlock(w[i], w[i + 1], j == 0) if j == 0 else ResBlock(w[i + 1], w[i + 1], False)
                            for j in range(enc[i + 1])]) for i in range(L - 1))
        self.upsampling = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2, mode="trilinear"),
                          nn.Conv3d(w[i + 1], w[i], 1, bias=False)) for i in range(L - 1))
        self.decoder_convs1x1 = nn.ModuleList(nn.Conv3d(2 * w[i], w[i], 1, bias=False) for i in range(L - 1))
        self.decoder_convs = nn.ModuleList(
            nn.Sequential(*[ResBlock(w[i], w[i], False) for _ in range(dec[i])]) for i in range(L - 1))
        self.conv_output = nn.Conv3d(w[0], 3, 3, padding=1, bias=True)

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
    dice_loss = 1 - dice.mean()
    bce = -(g * torch.log(p + 1e-6) + 0.01 * (1 - g) * torch.log(1 + 1e-6 - p)).mean()
    return (dice_loss + bce) / 2


def ints(s):
    return [int(v) for v in s.split(",")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--widths", default="8,16,24,32")
    ap.add_argument("--enc", default="1,1,1,1")
    ap.add_argument("--dec", default="1,1,1")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--shape", default="16,24,32")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_default_dtype(torch.float64)
    w, enc, dec, shape = ints(a.widths), ints(a.enc), ints(a.dec), ints(a.shape)
    model = ResUNet(w, enc, dec)
    # non-trivial norm parameters and biases so their gradients matter
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(a.batch, 4, *shape)
    g = (torch.rand(a.batch, 3, *shape) > 0.7).double()
    params0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    hp = dict(lr=1e-3, weight_decay=1e-6, beta1=0.9, beta2=0.999, eps=1e-8, amsgrad=1.0)
    opt = torch.optim.Adam(model.parameters(), lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]),
                           eps=hp["eps"], weight_decay=hp["weight_decay"], amsgrad=True)
    out = model(x)
    loss = paper_loss(out, g)
    opt.zero_grad()
    loss.backward()
    grads = {k: p.grad.detach().clone() for k, p in model.named_parameters()}
    opt.step()
    after = {k: p.detach().clone() for k, p in model.named_parameters()}
    tensors = [("input", x), ("target", g)]
    tensors += [("param/" + k, v) for k, v in params0.items()]
    tensors += [("output", out.detach()), ("loss", loss.detach().reshape(1))]
    tensors += [("grad/" + k, v) for k, v in grads.items()]
    tensors += [("param_after_step/" + k, v) for k, v in after.items()]
    tensors += [("hparam/" + k, torch.tensor([float(v)])) for k, v in hp.items()]
    with open(a.out, "wb") as f:
        f.write(b"KDGOLD01")
        f.write(struct.pack("<I", len(tensors)))
        for name, t in tensors:
            b = name.encode()
            f.write(struct.pack("<I", len(b)))
            f.write(b)
            f.write(struct.pack("<I", t.dim()))
            f.write(struct.pack("<%dI" % t.dim(), *t.shape))
            f.write(t.float().contiguous().numpy().astype("<f4").tobytes())
    print("wrote %s: %d tensors, loss %.6f" % (a.out, len(tensors), loss.item()))


if __name__ == "__main__":
    main()
