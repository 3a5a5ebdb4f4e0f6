#!/usr/bin/env python3
"""Write a KDGOLD01 golden file of the paper's ResUNet computed by PyTorch in float64:
input, target, parameters, output, loss, gradients and one AMSGrad Adam step, in the
format of shared/reference/README.md. Widths, block counts, batch and a non-cubic shape
are options, so kdseg's selftest can be checked beyond the shipped file.

usage: make_golden.py OUT.kdgold [--widths 8,16,24,32] [--enc 1,1,1,1] [--dec 1,1,1]
                      [--batch 2] [--shape 16,24,32] [--seed 0]
"""
import argparse
import os
import struct
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pytorch_bench import ResUNet, ints, paper_loss  # noqa: E402  (one definition of the model)


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
