"""PyTorch CPU twin of `cargo bench -p common --bench kernels` and of the assignment
benches (`cargo bench -p assignment4-unet --bench train_step`,
`cargo bench -p assignment3-hypercolumn-voc --bench head_step`): the same cases.

Cases: a 64->64 3x3 conv (padding 1) on 4x64x128x128, forward and forward+backward
(input and weight gradients); a mini U-Net training step (32/64/128 channels, two 2x2
max-pool downs, two 2x2 stride-2 transposed-conv ups with skips, BatchNorm, ReLU, pixel
cross-entropy, AdamW) on 4x3x128x128; the VGG11 conv stack forward on 1x3x224x224 with
random weights; assignment 4's U-Net at its default width 24 (4 downs, transposed-conv
ups, cross-entropy + Dice, Adam) on 4x3x256x256 (`cargo bench -p assignment4-unet`); and
assignment 3's head fine-tuning step (`cargo bench -p assignment3-hypercolumn-voc`): 1x1
convs 1472-128-128-11, the first per VGG16 tap at the tap's resolution then bilinearly
upsampled to 180x240 (its default feature size), pixel cross-entropy, Adam, batch 4; and one 4096x4096 f32 torch.mm
(`gemm-4096`, the machine's single-precision limit). Prints median ms per call (after one
warm-up), GFLOP/s of the convolutions only (backward counted as twice the forward) and the
peak resident memory of a process that runs that case alone (ru_maxrss), with
torch.set_num_threads = cores. `--device cuda` runs every case on the GPU (tensors and
parameters made there through torch.set_default_device, each call followed by
torch.cuda.synchronize) and reports the peak GPU memory PyTorch allocated instead.

    python3 bench/pytorch_bench.py [--runs 5] [--case conv-fwd] [--device cpu|cuda]
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CASES = ["conv-fwd", "conv-fwd-bwd", "unet-train-step", "vgg11-fwd", "unet-default-step", "a3-head-step",
         "gemm-4096"]


def conv_flops(conv, n, h, w):
    """Forward FLOPs of a conv (or transposed conv) applied at input size h x w."""
    return 2.0 * n * conv.weight.numel() * h * w


class DoubleConv(nn.Sequential):
    """(conv 3x3 => BN => ReLU) * 2, as milesial/Pytorch-UNet."""

    def __init__(self, c_in, c_out):
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )

    def flops(self, n, h, w):
        return conv_flops(self[0], n, h, w) + conv_flops(self[3], n, h, w)


class MiniUnet(nn.Module):
    def __init__(self, n_classes):
        super().__init__()
        self.enc1, self.enc2, self.mid = DoubleConv(3, 32), DoubleConv(32, 64), DoubleConv(64, 128)
        self.up1 = nn.ConvTranspose2d(128, 64, 2, stride=2, bias=False)
        self.dec1 = DoubleConv(128, 64)
        self.up2 = nn.ConvTranspose2d(64, 32, 2, stride=2, bias=False)
        self.dec2 = DoubleConv(64, 32)
        self.out = nn.Conv2d(32, n_classes, 1)

    def forward(self, x):
        x1 = self.enc1(x)
        x2 = self.enc2(F.max_pool2d(x1, 2))
        x3 = self.mid(F.max_pool2d(x2, 2))
        d1 = self.dec1(torch.cat([x2, self.up1(x3)], 1))
        d2 = self.dec2(torch.cat([x1, self.up2(d1)], 1))
        return self.out(d2)

    def flops(self, n, h, w):
        return (
            self.enc1.flops(n, h, w)
            + self.enc2.flops(n, h // 2, w // 2)
            + self.mid.flops(n, h // 4, w // 4)
            + conv_flops(self.up1, n, h // 4, w // 4)
            + self.dec1.flops(n, h // 2, w // 2)
            + conv_flops(self.up2, n, h // 2, w // 2)
            + self.dec2.flops(n, h, w)
            + conv_flops(self.out, n, h, w)
        )


class Unet(nn.Module):
    """milesial/Pytorch-UNet with transposed-conv ups at width w (assignment 4's net)."""

    def __init__(self, w, n_classes=2):
        super().__init__()
        self.inc = DoubleConv(3, w)
        self.downs = nn.ModuleList(DoubleConv(w << i, w << (i + 1)) for i in range(4))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(w << (i + 1), w << i, 2, stride=2) for i in reversed(range(4)))
        self.decs = nn.ModuleList(DoubleConv(w << (i + 1), w << i) for i in reversed(range(4)))
        self.outc = nn.Conv2d(w, n_classes, 1)

    def forward(self, x):
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        x = skips.pop()
        for up, dec in zip(self.ups, self.decs):
            x = dec(torch.cat([skips.pop(), up(x)], 1))
        return self.outc(x)

    def flops(self, n, h, w):
        f = self.inc.flops(n, h, w)
        for i, down in enumerate(self.downs):
            f += down.flops(n, h >> (i + 1), w >> (i + 1))
        for i, (up, dec) in zip(reversed(range(4)), zip(self.ups, self.decs)):
            f += conv_flops(up, n, h >> (i + 1), w >> (i + 1)) + dec.flops(n, h >> i, w >> i)
        return f + conv_flops(self.outc, n, h, w)


def ce_dice(logits, targets):
    """Pixel cross-entropy + soft Dice (eps 1), as common::loss::ce_dice_loss."""
    probs = logits.softmax(1)
    one_hot = F.one_hot(targets, logits.shape[1]).permute(0, 3, 1, 2).float()
    inter = (probs * one_hot).sum((0, 2, 3))
    dice = (2 * inter + 1) / (probs.sum((0, 2, 3)) + one_hot.sum((0, 2, 3)) + 1)
    return F.cross_entropy(logits, targets) + 1 - dice.mean()


def make_case(name):
    """Returns (callable doing one call, FLOPs of one call)."""
    if name == "gemm-4096":
        # The machine's single-precision limit, as `cargo bench -p common --bench kernels
        # -- --case gemm-4096` measures it for the gemm crate.
        a, b = torch.rand(4096, 4096), torch.rand(4096, 4096)

        def run():
            torch.mm(a, b)

        return run, 2.0 * 4096**3
    if name in ("conv-fwd", "conv-fwd-bwd"):
        x = torch.randn(4, 64, 128, 128, requires_grad=True)
        conv = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        flops = conv_flops(conv, 4, 128, 128)
        if name == "conv-fwd":

            def run():
                with torch.no_grad():
                    conv(x)

            return run, flops

        def run():
            x.grad, conv.weight.grad = None, None
            conv(x).sum().backward()

        return run, 3 * flops
    if name == "unet-train-step":
        n, h, w, k = 4, 128, 128, 4
        model = MiniUnet(k)
        images, targets = torch.randn(n, 3, h, w), torch.randint(0, k, (n, h, w))
        optim = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)

        def run():
            optim.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(images), targets)
            loss.backward()
            optim.step()

        return run, 3 * model.flops(n, h, w)
    if name == "vgg11-fwd":
        cfg = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
        layers, c_in, size, flops = [], 3, 224, 0.0
        for c in cfg:
            if c == "M":
                layers.append(nn.MaxPool2d(2))
                size //= 2
            else:
                conv = nn.Conv2d(c_in, c, 3, padding=1)
                flops += conv_flops(conv, 1, size, size)
                layers += [conv, nn.ReLU(inplace=True)]
                c_in = c
        features = nn.Sequential(*layers)
        x = torch.randn(1, 3, 224, 224)

        def run():
            with torch.no_grad():
                out = features(x)
            assert out.shape == (1, 512, 7, 7)

        return run, flops
    if name == "unet-default-step":
        # `cargo bench -p assignment4-unet --bench train_step`: width 24, 4 x 3 x 256 x 256.
        n, size = 4, 256
        model = Unet(24)
        images, targets = torch.randn(n, 3, size, size), torch.randint(0, 2, (n, size, size))
        optim = torch.optim.Adam(model.parameters(), lr=2e-3)

        def run():
            optim.zero_grad(set_to_none=True)
            ce_dice(model(images), targets).backward()
            optim.step()

        return run, 3 * model.flops(n, size, size)
    if name == "a3-head-step":
        # Assignment 3's defaults: a 180x240 input, hypercolumns at 180x240.
        n, (fh, fw), hidden, k = 4, (180, 240), 128, 11
        shapes = [(64, 180, 240), (128, 90, 120), (256, 45, 60), (512, 22, 30), (512, 11, 15)]
        taps = [torch.rand(n, c, h, w) * 4 for c, h, w in shapes]
        z = sum(c for c, _, _ in shapes)
        conv1, conv2, conv3 = nn.Conv2d(z, hidden, 1), nn.Conv2d(hidden, hidden, 1), nn.Conv2d(hidden, k, 1)
        labels = torch.randint(0, k, (n, fh, fw))
        params = [*conv1.parameters(), *conv2.parameters(), *conv3.parameters()]
        optim = torch.optim.Adam(params, lr=1e-4)

        def forward():
            total, offset = conv1.bias.view(1, -1, 1, 1), 0
            for tap in taps:
                c = tap.shape[1]
                part = F.conv2d(tap, conv1.weight[:, offset:offset + c])
                offset += c
                if part.shape[2:] != (fh, fw):
                    part = F.interpolate(part, size=(fh, fw), mode="bilinear", align_corners=False)
                total = total + part
            return conv3(F.relu(conv2(F.relu(total))))

        def run():
            optim.zero_grad(set_to_none=True)
            F.cross_entropy(forward(), labels).backward()
            optim.step()

        first = sum(hidden * c * h * w for c, h, w in shapes)
        return run, 3 * 2.0 * n * (first + (hidden * hidden + k * hidden) * fh * fw)
    raise SystemExit(f"unknown case {name!r}; cases: {CASES}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--case", choices=CASES)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: PyTorch sees no CUDA device")
    if not args.case:
        where = torch.cuda.get_device_name(0) if cuda else f"{threads} threads"
        memory = "GPU MiB" if cuda else "peak MiB"
        print(f"PyTorch {torch.__version__}, {where}, median of {args.runs} runs after 1 warm-up")
        print(f"{'case':<16} {'torch ms':>10} {'GFLOP/s':>9} {memory:>9}", flush=True)
        # One process per case, so each peak memory figure belongs to that case alone.
        for name in CASES:
            command = [sys.executable, __file__, "--case", name, "--runs", str(args.runs), "--device", args.device]
            subprocess.run(command, check=True)
        return
    torch.set_default_device(args.device)
    run, flops = make_case(args.case)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    run()  # warm-up
    sync()
    times = []
    for _ in range(max(args.runs, 1)):
        start = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    ms = statistics.median(times)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"{args.case:<16} {ms:>10.1f} {flops / ms / 1e6:>9.1f} {peak:>9.0f}", flush=True)

if __name__ == "__main__":
    main()
