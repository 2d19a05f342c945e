"""Builds bayesagg._C with the project's CMake for `pip install --no-build-isolation .`.

The metadata is in pyproject.toml. The extension is the CMake target `bayesagg_python`, built in
the build folder `$BAYESAGG_BUILD_DIR` (default: the checkout's `build/`, the README's, so that
after ./scripts/setup.sh only the module is left to build; ccache is used when installed), with
the interpreter that runs pip (its torch must be the LibTorch CMake finds: Debian's python3-torch
with libtorch-dev).
"""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        build_dir = Path(os.environ.get("BAYESAGG_BUILD_DIR", ROOT / "build")).resolve()
        jobs = os.environ.get("BAYESAGG_BUILD_JOBS", "2")
        env = dict(os.environ)
        env.setdefault("CCACHE_BASEDIR", str(ROOT))
        configure = ["cmake", "-S", str(ROOT), "-B", str(build_dir), "-DBAYESAGG_BUILD_PYTHON=ON"]
        if not (build_dir / "CMakeCache.txt").exists():
            # A fresh folder: this interpreter (a venv's resolves to its base interpreter). An
            # existing one keeps its configuration; the suffix check below catches a mismatch.
            configure += ["-DCMAKE_BUILD_TYPE=Release",
                          f"-DBAYESAGG_PYTHON_EXECUTABLE={os.path.realpath(sys.executable)}"]
        subprocess.run(configure, check=True, env=env)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "bayesagg_python",
                        "-j", jobs], check=True, env=env)
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        built = build_dir / "python" / "bayesagg" / ("_C" + suffix)
        if not built.exists():
            raise RuntimeError(f"bayesagg: the build left no {built.name} in {built.parent}: its "
                               "CMake configuration is for another interpreter; set "
                               "BAYESAGG_BUILD_DIR to a new folder")
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, target)


setup(ext_modules=[CMakeExtension("bayesagg._C")], cmdclass={"build_ext": CMakeBuild},
      # setuptools' own scratch space inside the CMake build folder, not next to it.
      options={"build": {"build_base": str(Path("build") / "setuptools")}})
