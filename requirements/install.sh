#!/usr/bin/env sh
# Builds (or brings up to date) the project's venv: `sh requirements/install.sh VENV [PY]`.
# Called by the Makefile's set-up; usable by hand. What it does, in order:
#   1. chooses the interpreter: PY if given; else the venv's own if the venv exists; else `python3`
#      if it is a supported version; else the first of python3.13, python3.12, python3.11 on PATH.
#      It says what it found, and stops before installing anything when nothing is supported;
#   2. creates the venv with it;
#   3. installs torch alone and first: the CPU build from PyTorch's CPU index (TORCH_INDEX) where
#      that index answers, else the package index's default build, and says which it got;
#   4. installs requirements/lock-pyX.Y.txt with --no-deps (plain resolution fails on this stack:
#      safety-gymnasium 1.0.0 pins pygame==2.1.0, which has no wheel for these Pythons), then the
#      project itself, and checks the installation.
set -eu

SUPPORTED="3.11 3.12 3.13"
VENV=${1:?usage: install.sh VENV [PY]}
PY=${2:-}
TORCH_SPEC="torch==2.13.0"
TORCH_INDEX=${TORCH_INDEX-https://download.pytorch.org/whl/cpu}
HERE=$(cd "$(dirname "$0")" && pwd)

say() { printf '%s\n' "[set-up] $*" >&2; }
fail() { printf '%s\n' "[set-up] error: $*" >&2; exit 2; }

# Prints "X.Y" for an interpreter, or nothing if it does not run.
version_of() {
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}
is_supported() {
    # (sh has no local variables: this loop's name must not be one the caller uses)
    for _supported in $SUPPORTED; do [ "$1" = "$_supported" ] && return 0; done
    return 1
}
how_to_get_one() {
    cat >&2 <<EOF
[set-up] Supported Pythons: $SUPPORTED. Install one (e.g. 'apt install python3.11',
[set-up] 'pyenv install 3.12', or your distribution's python3.13 package), then run again with
[set-up] PY naming it, e.g. 'make test PY=python3.12' or 'make test PY=/usr/bin/python3.13'.
EOF
}

# 1. The interpreter.
venv_ver=""
if [ -x "$VENV/bin/python" ]; then
    venv_ver=$(version_of "$VENV/bin/python")
fi
if [ -n "$PY" ]; then
    command -v "$PY" >/dev/null 2>&1 || { how_to_get_one; fail "PY=$PY: no such command"; }
    ver=$(version_of "$PY")
    [ -n "$ver" ] || fail "PY=$PY does not run"
    is_supported "$ver" || { how_to_get_one; fail "PY=$PY is Python $ver, which is not supported"; }
    if [ -n "$venv_ver" ] && [ "$venv_ver" != "$ver" ]; then
        fail "$VENV was made with Python $venv_ver, PY=$PY is $ver: run 'make clean' first, or\
 'make test-python PY=$PY', which uses a venv of its own"
    fi
    python=$(command -v "$PY")
    say "Python $ver from PY=$PY ($python)"
elif [ -n "$venv_ver" ]; then
    is_supported "$venv_ver" || fail "$VENV holds Python $venv_ver, which is not supported: run 'make clean'"
    ver=$venv_ver
    python="$VENV/bin/python"
    say "Python $ver of the existing $VENV"
else
    python=""
    tried=""
    for cand in python3 python3.13 python3.12 python3.11; do
        command -v "$cand" >/dev/null 2>&1 || { tried="$tried $cand (absent)"; continue; }
        v=$(version_of "$cand")
        if [ -n "$v" ] && is_supported "$v"; then
            python=$(command -v "$cand")
            ver=$v
            break
        fi
        tried="$tried $cand (${v:-does not run})"
    done
    if [ -z "$python" ]; then
        how_to_get_one
        fail "no supported Python found; tried:$tried"
    fi
    say "Python $ver: $python (found on PATH; PY=... chooses another)"
fi
lock="$HERE/lock-py$ver.txt"
[ -f "$lock" ] || fail "no lock file $lock for Python $ver"

# 2. The venv.
if [ ! -x "$VENV/bin/python" ]; then
    "$python" -m venv "$VENV"
fi
pip="$VENV/bin/python -m pip"

# 3. torch, first and alone, so that the rest of the lock never pulls in another build.
if [ "$($VENV/bin/python -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null)" = "2.13.0" ]; then
    :
elif [ -n "$TORCH_INDEX" ] && $pip install -q --retries 0 --timeout 15 --index-url "$TORCH_INDEX" \
        "$TORCH_SPEC" 2>/dev/null; then
    :
else
    [ -n "$TORCH_INDEX" ] && say "$TORCH_INDEX did not answer or has no $TORCH_SPEC for Python $ver;\
 taking the package index's default build"
    $pip install -q "$TORCH_SPEC"
fi
# 4. The rest of the stack, the project, and the check.
$pip install -q --no-deps -r "$lock"
say "$($VENV/bin/python -c 'import torch
cuda = torch.version.cuda
print(f"torch {torch.__version__}: " + ("CPU build" if cuda is None else
      f"CUDA {cuda} build (it runs on the CPU too; TORCH_INDEX=<an index with CPU wheels> gives a smaller one)"))')"
$pip install -q --no-deps --no-build-isolation -e "$HERE/.."
"$VENV/bin/python" -c "import omnisafe_metacpo; omnisafe_metacpo.check_installed()"
say "$VENV ready: Python $ver, $(basename "$lock")"
