"""Start-up settings of the command-line process."""

import os
import subprocess
import sys

import pytest

CODE = "from mulligan.runtime import tune_allocator as t; print(t(), t())"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator settings are Linux-only")
def test_the_allocator_is_tuned_once_unless_the_user_set_it():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]
    env["MALLOC_TRIM_THRESHOLD_"] = "131072"
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_the_collector_is_tuned_once_and_still_collects_cycles():
    code = (
        "import gc, weakref\n"
        "from mulligan.runtime import tune_gc, GC_YOUNG_THRESHOLD\n"
        "print(tune_gc(), tune_gc(), gc.get_threshold()[0] == GC_YOUNG_THRESHOLD, gc.get_freeze_count() > 0)\n"
        "class Node: pass\n"
        "a, b = Node(), Node(); a.other, b.other = b, a; gone = weakref.ref(a); del a, b\n"
        "keep = [[] for _ in range(3 * GC_YOUNG_THRESHOLD)]\n"  # allocations alone trigger a young collection
        "print(gone() is None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False", "True", "True", "True"]
