"""Build the native kernels (native/*.c) into the extension module ``atlas._kernels``."""

import numpy
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "atlas._kernels",
            sources=["native/kernels.c"],
            include_dirs=[numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_20_API_VERSION")],
            extra_compile_args=["-O3", "-std=c11"],
        )
    ]
)
