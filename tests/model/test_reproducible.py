"""The same computation gives the same bits wherever its input happens to lie in memory: importing ``model`` turns
on MKL's conditional numerical reproducibility (model/__init__.py). Without it, one-row matrix products (the
mapping networks at batch 1) of an unaligned copy of the input differed in the last bits about half the time, so a
job run twice in one worker could differ (CI caught it once)."""

import subprocess
import sys

CHECK = """
import torch
import model  # before any torch computation, as every entry point of the project does
torch.set_num_threads(1)
torch.manual_seed(0)
differ = 0
for rows in (1, 2):
    for k, m in ((64, 128), (128, 64), (257, 131), (512, 512)):
        x, w, b = torch.randn(rows, k), torch.randn(m, k), torch.randn(m)
        ref = torch.nn.functional.linear(x, w, b)
        buffer = torch.empty(rows * k + 16)
        for offset in range(1, 16):  # the same values at every float offset from an aligned address
            copy = buffer[offset : offset + rows * k].view(rows, k)
            copy.copy_(x)
            differ += not torch.equal(torch.nn.functional.linear(copy, w, b), ref)
print(differ)
"""


def test_products_do_not_depend_on_the_inputs_memory_alignment():
    env = {
        "PATH": "/usr/bin:/bin",
        "OMP_NUM_THREADS": "1",
    }  # nothing inherited: MKL_CBWR comes from `import model`
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0", out.stderr


def test_a_user_can_still_choose_another_reproducibility_branch():
    env = {"PATH": "/usr/bin:/bin", "MKL_CBWR": "COMPATIBLE"}
    code = "import os, model; print(os.environ['MKL_CBWR'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "COMPATIBLE"


def test_this_process_runs_with_it_too():
    import os

    assert os.environ.get("MKL_CBWR")  # conftest imports model before any test computes
