"""segkit against PyTorch on this machine's CPU, in one command (issue 19).

Runs our benches (`cargo bench -p common --bench kernels`, the assignment 4 U-Net step,
the assignment 3 head step, each with `--fast-only`) and the PyTorch twin
(`bench/pytorch_bench.py`) alternately for N rounds, then prints, per case, segkit's
and PyTorch's median ms per call (min / median / max over the rounds), the ratio
segkit / PyTorch of each round (min / median / max), and segkit's GFLOP/s as a
fraction of the machine's single-precision limit, measured in the same run: one
4096x4096 f32 product through the `gemm` crate (`--case gemm-4096`) and through
`torch.mm`.

    python3 bench/compare.py [--rounds 3] [--runs 5]

Needs cargo and torch (`pip install torch`). The benches are built before the first
round, so no build is timed. Both sides use every core (rayon's default threads,
torch.set_num_threads = cores).
"""

import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CASES = ["conv-fwd", "conv-fwd-bwd", "unet-train-step", "vgg11-fwd", "unet-default-step",
         "a3-head-step"]
PEAK = "gemm-4096"


def rust_commands(runs):
    """The cargo bench commands of one round (each prints rows `case ms GFLOP/s ...`)."""
    kernels = ["cargo", "bench", "-q", "-p", "common", "--bench", "kernels", "--"]
    return [
        kernels + ["--runs", str(runs), "--fast-only"],
        kernels + ["--case", PEAK, "--runs", "3"],
        ["cargo", "bench", "-q", "-p", "assignment4-unet", "--bench", "train_step", "--",
         "--runs", str(runs), "--fast-only"],
        ["cargo", "bench", "-q", "-p", "assignment3-hypercolumn-voc", "--bench", "head_step",
         "--", "--runs", str(runs), "--fast-only"],
    ]


def torch_command(runs):
    return [sys.executable, os.path.join(HERE, "pytorch_bench.py"), "--runs", str(runs)]


def rows(text):
    """{case: (ms, GFLOP/s)} from the table rows of a bench's output."""
    found = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] in CASES + [PEAK]:
            try:
                found[words[0]] = (float(words[1]), float(words[2]))
            except ValueError:
                pass
    return found


def run(command):
    print("$", " ".join(command), flush=True)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    print(done.stdout, end="", flush=True)
    return rows(done.stdout)


def spread(values):
    """`min / median / max` of the finite values (or `-`)."""
    values = [v for v in values if v == v]
    if not values:
        return "-"
    return f"{min(values):.1f} / {statistics.median(values):.1f} / {max(values):.1f}"


def ratio_spread(values):
    values = [v for v in values if v == v]
    if not values:
        return "-"
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    build = ["cargo", "bench", "-q", "--no-run", "-p", "common", "--bench", "kernels",
             "-p", "assignment4-unet", "--bench", "train_step",
             "-p", "assignment3-hypercolumn-voc", "--bench", "head_step"]
    subprocess.run(build, cwd=ROOT, check=True)
    ours, theirs = [], []
    for round_index in range(args.rounds):
        print(f"=== round {round_index + 1} of {args.rounds}", flush=True)
        # Alternate which side goes first, so neither always runs on a warmer machine.
        sides = ["rust", "torch"] if round_index % 2 == 0 else ["torch", "rust"]
        for side in sides:
            if side == "rust":
                found = {}
                for command in rust_commands(args.runs):
                    found.update(run(command))
                ours.append(found)
            else:
                theirs.append(run(torch_command(args.runs)))
    report(ours, theirs)


def report(ours, theirs):
    nan = float("nan")
    peak_ours = statistics.median(r.get(PEAK, (nan, nan))[1] for r in ours)
    peak_theirs = statistics.median(r.get(PEAK, (nan, nan))[1] for r in theirs)
    print()
    print(f"gemm 4096x4096 f32: gemm crate {peak_ours:.1f} GFLOP/s, torch.mm {peak_theirs:.1f}"
          f" GFLOP/s (medians of {len(ours)} rounds)")
    print("| case | segkit ms (min / med / max) | PyTorch ms | segkit / PyTorch | "
          "segkit GFLOP/s (med) | of gemm peak |")
    print("|---|---|---|---|---|---|")
    for case in CASES:
        our_ms = [r.get(case, (nan, nan))[0] for r in ours]
        their_ms = [r.get(case, (nan, nan))[0] for r in theirs]
        ratios = [a / b for a, b in zip(our_ms, their_ms)]
        gflops = statistics.median(r.get(case, (nan, nan))[1] for r in ours)
        print(f"| {case} | {spread(our_ms)} | {spread(their_ms)} | {ratio_spread(ratios)} | "
              f"{gflops:.1f} | {100 * gflops / peak_ours:.0f}% |")


if __name__ == "__main__":
    main()
