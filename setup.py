"""The one compiled part of kvdicom: the header walk's fast-forward (kvdicom/_header/_walk.c), optional.

``pip install`` builds it where a C compiler is found; where none is, the build goes on without it and kvdicom
walks headers in Python alone (the same layouts, slower). ``./dgb`` builds it in place for the checkout.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("kvdicom._header._walk", ["kvdicom/_header/_walk.c"], optional=True, py_limited_api=True,
                  define_macros=[("Py_LIMITED_API", "0x030A0000")], extra_compile_args=["-O2"]),
    ],
    options={"bdist_wheel": {"py_limited_api": "cp310"}},  # one wheel for every CPython from 3.10
)
