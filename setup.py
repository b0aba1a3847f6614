"""The one compiled module: the audit's layout kernels (analysis/_layout_kernels.c).

Everything else is in pyproject.toml. -ffp-contract=off keeps float32 sums of squares
unfused, so distances are the same numbers on every compiler and CPU. The source's hash
is built in, so that an edited source with a stale build fails loudly instead of
computing with the old code (``analysis.layout_kernels``).
"""

import hashlib
from pathlib import Path

from setuptools import Extension, setup

SOURCE = "analysis/_layout_kernels.c"
DIGEST = hashlib.sha256((Path(__file__).parent / SOURCE).read_bytes()).hexdigest()

setup(
    ext_modules=[
        Extension(
            "analysis._layout_kernels",
            sources=[SOURCE],
            define_macros=[("LAYOUT_KERNELS_SOURCE_SHA256", f'"{DIGEST}"')],
            extra_compile_args=["-O3", "-ffp-contract=off", "-Wno-psabi"],
        )
    ]
)
