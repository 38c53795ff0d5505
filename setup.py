"""kvdicom's two compiled parts, both optional: the header walk's fast-forward (kvdicom/_header/_walk.c) and the
series' per-slice reads (kvdicom/_io/_known_reads.c).

``pip install`` builds them where a C compiler is found; where none is, the build goes on without them and kvdicom
walks headers and reads slices in Python alone (the same results, slower). ``./dgb`` builds them in place.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(name, [source], optional=True, py_limited_api=True,
                  define_macros=[("Py_LIMITED_API", "0x030A0000")], extra_compile_args=["-O2"])
        for name, source in (("kvdicom._header._walk", "kvdicom/_header/_walk.c"),
                             ("kvdicom._io._known_reads", "kvdicom/_io/_known_reads.c"))
    ],
    options={"bdist_wheel": {"py_limited_api": "cp310"}},  # one wheel for every CPython from 3.10
)
