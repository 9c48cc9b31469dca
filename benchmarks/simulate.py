"""Simulations per second: the batched simulators against a plain one-at-a-time NumPy loop.

Both run in this script, on this machine, at the training length (49 frames: 5,000 steps
for springs and charged, a 100-frame Kuramoto window), 5 objects. Prints a table with the
ratio. The documented speed of the reference generator on this project's machine (10,
7.5 and about 20 simulations per second) is printed beside it for comparison only; it
is not measured here.

    python benchmarks/simulate.py                  # CPU
    python benchmarks/simulate.py --device cuda    # GPU, if there is one
    python benchmarks/simulate.py --paper-dataset  # also the full springs5 dataset: time, RSS
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from nri_pyro import generate_dataset, simulate
from nri_pyro.data.simulate import default_chunk_size
from nri_pyro.data.systems import get_system
from nri_pyro.devices import resolve_device

# The one-at-a-time NumPy baseline is the tests' reference (tests/reference/).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference.numpy_reference import ONE_AT_A_TIME

# From nri-facts.md (measured once on this project's kind of machine, one core).
REFERENCE_SIMS_PER_S = {"springs": 10.0, "charged": 7.5, "kuramoto": 20.0}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batched_rate(
    system: str, num_sims: int, device: torch.device, dtype: torch.dtype, repeats: int
) -> float:
    simulate(system, min(num_sims, 1000), num_frames=2, device=device, dtype=dtype)  # warm-up
    best = 0.0
    for r in range(repeats):
        _sync(device)
        start = time.perf_counter()
        simulate(system, num_sims, seed=r, device=device, dtype=dtype)
        _sync(device)
        best = max(best, num_sims / (time.perf_counter() - start))
    return best


def numpy_rate(system: str, num_sims: int) -> float:
    sys_ = get_system(system)
    params = sys_.params()
    init = sys_.initial(num_sims, 5, params, torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for i in range(num_sims):
        ONE_AT_A_TIME[system](init, i, sys_.train_frames, params)
    return num_sims / (time.perf_counter() - start)


def paper_dataset(device: torch.device) -> None:
    """The paper's springs5 dataset (50,000 / 10,000 / 10,000), written to a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_dataset("springs", Path(tmp) / "springs5", device=device, progress=False)
        seconds = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(
        f"\nfull springs5 dataset (50,000 + 10,000 train/valid at 49 frames, 10,000 test at "
        f"99) on {device}: {seconds:.1f} s, peak resident memory of this process {peak_gb:.2f} GB"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--systems", nargs="+", default=["springs", "charged", "kuramoto"])
    parser.add_argument(
        "--batch",
        type=int,
        help="simulations in one batched call (default: one default-size chunk per CPU "
        "thread, 50,000 on a GPU)",
    )
    parser.add_argument("--baseline-sims", type=int, default=10, help="NumPy simulations")
    parser.add_argument("--repeats", type=int, default=2, help="batched runs (best is kept)")
    parser.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    parser.add_argument("--paper-dataset", action="store_true")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    print(f"NumPy baseline: {args.baseline_sims} simulations, one at a time")
    header = f"{'system':<10}{'dtype':<9}{'batched sims/s':>15}{'numpy sims/s':>14}{'ratio':>8}"
    print(f"\n{header}{'vs documented reference':>26}")
    for system in args.systems:
        baseline = numpy_rate(system, args.baseline_sims)  # float64, as the reference
        ref = REFERENCE_SIMS_PER_S[system]
        batch = args.batch or default_chunk_size(get_system(system), device) * (
            1 if device.type == "cuda" else torch.get_num_threads()
        )
        for dtype in args.dtypes:
            ours = batched_rate(system, batch, device, getattr(torch, dtype), args.repeats)
            print(
                f"{system:<10}{dtype:<9}{ours:>15.0f}{baseline:>14.1f}{ours / baseline:>7.0f}x"
                f"{ours / ref:>14.0f}x (of {ref:g}/s)   [{batch} per call]"
            )
    if args.paper_dataset:
        paper_dataset(device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
