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
